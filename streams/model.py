"""The sentiment model as the worker runs it: ONNX Runtime + a fast tokenizer.

Loaded from a model directory by its manifest (hashes verified first). The
session reports the execution provider actually in use, because ONNX Runtime
silently falls back to CPU when CUDA libraries are missing.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from export.manifest import Manifest, ManifestError, verify_directory

__all__ = ["SentimentModel", "Prediction", "load_model", "softmax", "available_providers"]

log = logging.getLogger(__name__)

#: Preference order when the caller does not name providers.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ONNX Runtime is not installed: pip install 'finsentry[cpu]' (or '[gpu]' on CUDA hosts; not both)"
        ) from exc
    return onnxruntime


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities.

    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one text, in manifest label order."""

    label: str
    probabilities: dict[str, float]

    @property
    def score(self) -> float:
        """P(positive) - P(negative)."""
        return self.probabilities.get("positive", 0.0) - self.probabilities.get("negative", 0.0)


class SentimentModel:
    """A verified model directory ready to score batches of texts.

    ``predict`` is synchronous and thread-safe; the worker calls it from an
    executor so inference never blocks the event loop.
    """

    def __init__(self, directory: Path, manifest: Manifest, variant: str, session, tokenizer) -> None:
        self.directory = directory
        self.manifest = manifest
        self.variant = variant
        self._session = session
        self._tokenizer = tokenizer
        self._lock = threading.Lock()  # tokenizers' padding/truncation state is shared
        self._inputs = {i.name for i in session.get_inputs()}

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def provider(self) -> str:
        """The execution provider ONNX Runtime really uses (first in the session's list)."""
        return self._session.get_providers()[0]

    def _encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in feed.items() if k in self._inputs}

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        feed = self._encode(texts)
        (out,) = self._session.run([self.manifest.output_name], feed)
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, shape (n, n_labels), rows in input order."""
        return softmax(self.logits(texts))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.predict_proba(texts)
        labels = self.labels
        return [
            Prediction(labels[int(row.argmax())], {label: float(p) for label, p in zip(labels, row)})
            for row in probs
        ]


def _pick_providers(requested: Sequence[str] | None) -> list[str]:
    available = available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            log.warning("requested providers not available: %s (available: %s)", missing, available)
        chosen = [p for p in requested if p in available]
    else:
        chosen = [p for p in _PREFERRED if p in available]
    return chosen or ["CPUExecutionProvider"]


def load_model(
    directory: Path | str,
    *,
    variant: str | None = None,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 0,
) -> SentimentModel:
    """Verify and load a model directory.

    Raises :class:`~export.manifest.ManifestError` for a missing, incomplete or
    tampered directory.
    """
    ort = _ort()
    from tokenizers import Tokenizer

    directory = Path(directory)
    manifest = verify_directory(directory)
    key = variant or manifest.default_variant
    chosen = manifest.variant(key)

    tokenizer = Tokenizer.from_file(str(directory / manifest.tokenizer))
    tokenizer.enable_truncation(max_length=manifest.max_length)
    tokenizer.no_padding()  # padding is done per batch in _encode

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(directory / chosen.file), sess_options=options, providers=_pick_providers(providers)
        )
    except Exception as exc:  # ORT raises its own exception types
        raise ManifestError(f"ONNX Runtime cannot load {directory / chosen.file}: {exc}") from exc
    model = SentimentModel(directory, manifest, key, session, tokenizer)
    log.info(
        "model %s %s (%s) loaded from %s; provider in use: %s (pid %d)",
        model.name, model.version, key, directory, model.provider, os.getpid(),
    )
    return model
