"""Model throughput: naive pipeline vs PyTorch eager vs ONNX Runtime variants.

    .venv/bin/python bench/runtime.py [--checkpoint artifacts/checkpoint] [--model-dir artifacts/model]

One run measures, on the same texts and with tokenization included:

* ``naive``: a ``transformers`` text-classification pipeline called once per text;
* ``torch``: PyTorch eager, batched (``torch.no_grad``);
* ``ort-fp32``, ``ort-int8``: ONNX Runtime on CPU through the worker's own
  runtime (:class:`streams.runtime.model.SentimentModel`) with its CPU defaults
  (4-window length-sorted sub-batches, one single-threaded run per core);
* ``ort-int8-serial``: the same int8 model run the common way (sub-batches of
  16, one run at a time with ORT's intra-op threads), for the A/B;
* ``ort-fp16-cuda``, ``ort-fp16-trt``: only where CUDA / TensorRT providers
  are available (a GPU host with ``onnxruntime-gpu``); the provider actually
  used is reported.

Batch sizes 1, 8, 32, 64; "short" texts (the sample stream's headlines and
posts) and "long" texts (~128 tokens). For each case: texts/s and p50/p99
latency of one batch call. Writes ``bench/results/runtime.json`` and prints a
table with the ratios the targets are stated in. Compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _texts(n_short: int, n_long: int, tokenizer) -> dict[str, list[str]]:
    from streams.tools.samples import sample_items

    short = [(i.get("headline") or i.get("text")) for i in sample_items(n_short, seed=99)]
    long = []
    for i, item in enumerate(sample_items(n_long * 12, seed=98)):
        long.append((item.get("headline") or item.get("text")) + ". " + (item.get("body") or ""))
    joined = [" ".join(long[i : i + 12]) for i in range(0, len(long), 12)][:n_long]
    cut = []
    for text in joined:  # exactly 126 word pieces + [CLS]/[SEP] = 128 tokens
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:126]
        cut.append(tokenizer.decode(ids))
    return {"short": short, "long": cut}


def _measure(fn, texts: list[str], batch: int, min_seconds: float = 3.0, max_texts: int | None = None) -> dict:
    """Run ``fn`` over ``texts`` in batches; repeat until ``min_seconds`` have passed."""
    fn(texts[:batch])  # warm-up
    latencies = []
    done = 0
    start = time.perf_counter()
    limit = max_texts or len(texts)
    while True:
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            t0 = time.perf_counter()
            fn(chunk)
            latencies.append((time.perf_counter() - t0) * 1000)
            done += len(chunk)
            if done >= limit:
                break
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or done >= limit:
            break
    latencies.sort()
    return {
        "n": done,
        "texts_per_s": round(done / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts" / "checkpoint")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="MODEL_DIR",
                        help="another model directory (e.g. a distilled student) whose int8 variant runs in the "
                             "same run, as rows 'ort-int8:<dir name>' next to this model's baselines")
    parser.add_argument("--batch-size", type=int, action="append", help="default: 1 8 32 64")
    parser.add_argument("--short", type=int, default=512, help="short texts per case")
    parser.add_argument("--long", type=int, default=256, help="128-token texts per case")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per case")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtime.json")
    args = parser.parse_args()
    sizes = args.batch_size or [1, 8, 32, 64]

    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from streams.runtime import load_model

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, local_files_only=True)
    torch_model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, local_files_only=True).eval()
    naive = pipeline("text-classification", model=torch_model, tokenizer=tokenizer, device=-1, top_k=None)
    texts = _texts(args.short, args.long, tokenizer)

    def torch_batched(chunk: list[str]) -> np.ndarray:
        with torch.no_grad():
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            return torch.softmax(torch_model(**enc).logits, -1).numpy()

    runners: dict[str, object] = {"torch": torch_batched}
    providers = ort.get_available_providers()
    for variant in ("fp32", "int8"):
        runners[f"ort-{variant}"] = load_model(args.model_dir, variant=variant,
                                               providers=["CPUExecutionProvider"]).predict_proba
    runners["ort-int8-serial"] = load_model(args.model_dir, variant="int8", providers=["CPUExecutionProvider"],
                                            max_batch=16, parallel=1, intra_op_threads=0).predict_proba
    for other in args.also:
        runners[f"ort-int8:{other.name}"] = load_model(other, variant="int8",
                                                       providers=["CPUExecutionProvider"]).predict_proba
    gpu_notes = {}
    for name, provider in (("ort-fp16-cuda", "CUDAExecutionProvider"), ("ort-fp16-trt", "TensorrtExecutionProvider")):
        if provider in providers:
            model = load_model(args.model_dir, variant="fp16", providers=[provider], max_batch=256)
            gpu_notes[name] = model.provider
            if model.provider == provider:
                runners[name] = model.predict_proba
        else:
            gpu_notes[name] = f"skipped: {provider} not available (providers: {providers})"

    results = []
    for kind, pool in texts.items():
        print(f"[{kind}] naive pipeline, one text per call …", flush=True)
        results.append({"runtime": "naive", "texts": kind, "batch": 1,
                        **_measure(lambda c: naive(c[0]), pool, 1, args.seconds, max_texts=len(pool))})
        for name, fn in runners.items():
            for size in sizes:
                r = _measure(fn, pool, size, args.seconds)
                results.append({"runtime": name, "texts": kind, "batch": size, **r})
                print(f"[{kind}] {name:14s} batch {size:3d}: {r['texts_per_s']:9.1f} texts/s "
                      f"p50 {r['p50_ms']:8.2f} ms p99 {r['p99_ms']:8.2f} ms", flush=True)

    def rate(runtime: str, kind: str, batch: int) -> float | None:
        for r in results:
            if (r["runtime"], r["texts"], r["batch"]) == (runtime, kind, batch):
                return r["texts_per_s"]
        return None

    ratios = {
        "int8_vs_torch_eager_b32_short": round(rate("ort-int8", "short", 32) / rate("torch", "short", 32), 2),
        "int8_b32_vs_naive_short": round(rate("ort-int8", "short", 32) / rate("naive", "short", 1), 2),
        "int8_b64_vs_naive_short": round(rate("ort-int8", "short", 64) / rate("naive", "short", 1), 2),
        "fp32_vs_torch_eager_b32_short": round(rate("ort-fp32", "short", 32) / rate("torch", "short", 32), 2),
        "int8_parallel_vs_serial_b32_short": round(
            rate("ort-int8", "short", 32) / rate("ort-int8-serial", "short", 32), 2),
        "int8_vs_torch_eager_b32_long": round(rate("ort-int8", "long", 32) / rate("torch", "long", 32), 2),
    }
    for other in args.also:
        ratios[f"{other.name}_int8_b32_vs_naive_short"] = round(
            rate(f"ort-int8:{other.name}", "short", 32) / rate("naive", "short", 1), 2)
        ratios[f"{other.name}_int8_b32_vs_int8_b32_short"] = round(
            rate(f"ort-int8:{other.name}", "short", 32) / rate("ort-int8", "short", 32), 2)
    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "onnxruntime": ort.__version__, "providers": providers},
        "model": {"name": manifest["name"], "version": manifest["version"]},
        "also": {other.name: json.loads((other / "manifest.json").read_text())["version"] for other in args.also},
        "gpu": gpu_notes,
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{'runtime':15s} {'texts':6s} {'batch':>5s} {'texts/s':>10s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for r in results:
        print(f"{r['runtime']:15s} {r['texts']:6s} {r['batch']:5d} {r['texts_per_s']:10.1f} "
              f"{r['p50_ms']:9.2f} {r['p99_ms']:9.2f}")
    print("\nratios:", json.dumps(ratios, indent=2))
    print("gpu:", json.dumps(gpu_notes, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
