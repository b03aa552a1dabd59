"""The sentiment model as the worker runs it: ONNX Runtime + a fast tokenizer.

Loaded from a model directory by its manifest (hashes verified first). The
session reports the execution provider actually in use, because ONNX Runtime
silently falls back to CPU when CUDA libraries are missing, and the variant is
chosen to fit it: fp16 on TensorRT/CUDA, int8 on CPU, unless told otherwise.

Scoring a batch:

* **Long texts are chunked.** A text longer than the model's ``max_length``
  tokens is split into windows of ``max_length`` tokens (special tokens
  included) that overlap by ``chunk_overlap`` tokens, up to ``max_chunks``
  windows (the rest of a very long article is ignored: the headline and first
  paragraphs carry the news). The text's probabilities are the mean of its
  windows' probabilities weighted by each window's token count
  (:func:`combine_chunks`).
* **Length-aware batching.** All windows of a batch are sorted by token length
  and run in sub-batches of at most ``max_batch`` windows, each padded only to
  its own longest window, so a few long texts do not make every short text pay
  for their padding.
* **Sub-batches in parallel on CPU.** Headlines and posts are short (~14
  tokens), and ONNX Runtime's intra-op threads cost more than they give on
  tensors that small: on 2 cores, two single-threaded runs of 4-window
  sub-batches at once score 1.85x as many texts/s as one two-threaded run of
  16 with all fusions (``bench/cpu_tuning.py``). So on CPU the session gets one intra-op
  thread and ``parallel`` sub-batches (default: the usable cores) run at once
  on one shared session (``InferenceSession.run`` is thread-safe). On GPU one
  large sub-batch runs at a time.
* **ORT fusions that are slower here are switched off** on CPU
  (:data:`CPU_DISABLED_OPTIMIZERS`).

Dynamic int8 quantization scales activations per tensor, i.e. per
sub-batch, so an int8 score depends slightly on which texts share its
sub-batch (see docs/model.md for the size of the effect); fp32/fp16 do not.
"""

from __future__ import annotations

import logging
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from streams.runtime.manifest import Manifest, ManifestError, verify_directory
from streams.runtime.session import choose_variant, open_session, pick_providers, runtime_defaults, variant_source

__all__ = ["SentimentModel", "Prediction", "load_model", "softmax", "combine_chunks"]

log = logging.getLogger(__name__)

def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities.

    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def combine_chunks(probabilities: np.ndarray, token_counts: Sequence[int]) -> np.ndarray:
    """Combine the windows of one text: token-count-weighted mean of probabilities.

    >>> combine_chunks(np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]]), [128, 32]).round(2).tolist()
    [0.68, 0.12, 0.2]
    """
    weights = np.asarray(token_counts, dtype=np.float64)
    return (probabilities * weights[:, None]).sum(axis=0) / weights.sum()


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

    ``predict_proba`` is synchronous and thread-safe; the worker calls it from
    an executor so inference never blocks the event loop.
    """

    def __init__(self, directory: Path, manifest: Manifest, variant: str, session, tokenizer, *,
                 max_batch: int = 64, parallel: int = 1, chunk_overlap: int = 32, max_chunks: int = 8) -> None:
        if not 0 <= chunk_overlap < manifest.max_length // 2:
            raise ValueError(f"chunk_overlap must be in [0, {manifest.max_length // 2})")
        if max_batch < 1 or parallel < 1:
            raise ValueError("max_batch and parallel must be >= 1")
        self.directory = directory
        self.manifest = manifest
        self.variant = variant
        self.max_batch = max_batch
        self.parallel = parallel
        self.max_chunks = max_chunks
        self._pool: ThreadPoolExecutor | None = None
        if parallel > 1:
            self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="ort-run")
            weakref.finalize(self, self._pool.shutdown, wait=False)  # a swapped-out model frees its threads
        self._session = session
        self._tokenizer = tokenizer
        tokenizer.enable_truncation(max_length=manifest.max_length, stride=chunk_overlap)
        tokenizer.no_padding()  # padding is per sub-batch in _run
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

    def windows(self, texts: Sequence[str]) -> list[list]:
        """Tokenised windows per text (``tokenizers.Encoding``), at most ``max_chunks`` each."""
        out = []
        for enc in self._tokenizer.encode_batch(list(texts)):
            out.append(([enc] + list(enc.overflowing))[: self.max_chunks])
        return out

    def _feed(self, encodings: Sequence) -> dict[str, np.ndarray]:
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

    def _run_rows(self, encodings: Sequence) -> np.ndarray:
        (out,) = self._session.run([self.manifest.output_name], self._feed(encodings))
        return out

    def _run(self, encodings: Sequence) -> np.ndarray:
        """Logits for windows, in the given order, using length-sorted sub-batches."""
        logits = np.zeros((len(encodings), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        batches = [order[start : start + self.max_batch] for start in range(0, len(order), self.max_batch)]
        subsets = [[encodings[i] for i in rows] for rows in batches]
        if self._pool is not None and len(batches) > 1:
            outs = self._pool.map(self._run_rows, subsets)
        else:
            outs = map(self._run_rows, subsets)
        for rows, out in zip(batches, outs):
            logits[rows] = out
        return logits

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits of each text's first window (what the parity gate compares)."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._run([w[0] for w in self.windows(texts)])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, shape (n, n_labels), rows in input order; long texts chunked."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        per_text = self.windows(texts)
        flat = [enc for windows in per_text for enc in windows]
        probs = softmax(self._run(flat))
        out = np.empty((len(texts), len(self.labels)), dtype=np.float64)
        at = 0
        for i, windows in enumerate(per_text):
            chunk = probs[at : at + len(windows)]
            out[i] = chunk[0] if len(windows) == 1 else combine_chunks(chunk, [len(w.ids) for w in windows])
            at += len(windows)
        return out

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.predict_proba(texts)
        labels = self.labels
        return [
            Prediction(labels[int(row.argmax())], {label: float(p) for label, p in zip(labels, row)})
            for row in probs
        ]

    def warm_up(self) -> None:
        """Run representative shapes once so the first real batch is not slow."""
        self.predict_proba(["warm up"])
        self.predict_proba(["market update " * 8] * 32)
        self.predict_proba(["long " * (self.manifest.max_length * 2)])


def load_model(
    directory: Path | str,
    *,
    variant: str | None = None,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    max_batch: int | None = None,
    parallel: int | None = None,
    chunk_overlap: int = 32,
    max_chunks: int = 8,
    warm_up: bool = False,
    disabled_optimizers: Sequence[str] | None = None,
) -> SentimentModel:
    """Verify and load a model directory.

    ``max_batch``, ``parallel`` and ``intra_op_threads`` default to
    :func:`runtime_defaults` for the provider in use (``intra_op_threads=0``:
    ORT's own default). ``disabled_optimizers`` goes to :func:`open_session`
    (default: :data:`CPU_DISABLED_OPTIMIZERS` on CPU).

    Raises :class:`~streams.runtime.manifest.ManifestError` for a missing, incomplete or
    tampered directory.
    """
    from tokenizers import Tokenizer

    directory = Path(directory)
    manifest = verify_directory(directory)
    chosen_providers = pick_providers(providers)
    key = choose_variant(manifest, chosen_providers[0], variant)
    path = variant_source(directory, manifest.variant(key))
    defaults = runtime_defaults(chosen_providers[0])
    threads = defaults["intra_op_threads"] if intra_op_threads is None else intra_op_threads
    try:
        session = open_session(path, chosen_providers, threads, disabled_optimizers)
    except Exception as exc:  # ORT raises its own exception types
        raise ManifestError(f"ONNX Runtime cannot load {directory / manifest.variant(key).file}: {exc}") from exc
    in_use = session.get_providers()[0]
    if in_use != chosen_providers[0]:
        log.warning("asked for %s but ONNX Runtime uses %s (missing CUDA/TensorRT libraries?)",
                    chosen_providers[0], in_use)
        # the session was tuned for another provider: open it again for the one in use
        return load_model(directory, variant=variant or choose_variant(manifest, in_use),
                          providers=session.get_providers(), intra_op_threads=intra_op_threads,
                          max_batch=max_batch, parallel=parallel, chunk_overlap=chunk_overlap,
                          max_chunks=max_chunks, warm_up=warm_up, disabled_optimizers=disabled_optimizers)
    tokenizer = Tokenizer.from_file(str(directory / manifest.tokenizer))
    model = SentimentModel(directory, manifest, key, session, tokenizer,
                           max_batch=max_batch or defaults["max_batch"], parallel=parallel or defaults["parallel"],
                           chunk_overlap=chunk_overlap, max_chunks=max_chunks)
    if warm_up:
        model.warm_up()
    log.info(
        "model %s %s (%s) loaded from %s; provider in use: %s; sub-batches of %d, %d at once (pid %d)",
        model.name, model.version, key, directory, model.provider, model.max_batch, model.parallel, os.getpid(),
    )
    return model
