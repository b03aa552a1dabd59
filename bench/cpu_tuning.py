"""Where the CPU runtime's defaults come from: sub-batch size x parallel runs x fusions.

    .venv/bin/python bench/cpu_tuning.py [--model-dir artifacts/model] [--variant int8]

Scores the same texts through :class:`streams.runtime.model.SentimentModel` (tokenization
included, calls of ``--call`` texts like the worker's micro-batches) under each
configuration, in rounds so that every configuration sees the same machine
noise, and prints per configuration:

* texts/s (best round) and the ratio to ``serial``, the common way to run ORT
  (sub-batches of 16, one run at a time, ORT's intra-op threads, all fusions);
* label agreement with fp32 on the same texts;
* ``flips``: labels that change when the same texts are scored again with other
  neighbours (shuffled order). Dynamic int8 quantization scales activations per
  sub-batch, so only one-window sub-batches are free of this.

Writes ``bench/results/cpu_tuning.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _configs(cores: int) -> dict[str, dict]:
    fused = ()
    off = None  # the runtime's default: CPU_DISABLED_OPTIMIZERS
    configs = {"serial": dict(max_batch=16, parallel=1, threads=0, disabled=fused),
               "serial, SkipLayerNorm unfused": dict(max_batch=16, parallel=1, threads=0, disabled=off)}
    for size in (1, 2, 4, 8, 16):
        configs[f"{cores} runs x {size}"] = dict(max_batch=size, parallel=cores, threads=1, disabled=off)
    configs[f"{cores} runs x 4, SkipLayerNorm fused"] = dict(max_batch=4, parallel=cores, threads=1, disabled=fused)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--call", type=int, default=32, help="texts per predict call")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_tuning.json")
    args = parser.parse_args()

    from streams.runtime import read_manifest
    from streams.runtime import SentimentModel, load_model, usable_cores
    from streams.tools.samples import sample_items

    texts = [(i.get("headline") or i.get("text")) for i in sample_items(args.texts, seed=99)]
    manifest = read_manifest(args.model_dir)
    cores = usable_cores()

    def build(c: dict) -> SentimentModel:
        return load_model(args.model_dir, variant=args.variant, providers=["CPUExecutionProvider"],
                          intra_op_threads=c["threads"], max_batch=c["max_batch"], parallel=c["parallel"],
                          disabled_optimizers=c["disabled"])

    def score_all(model: SentimentModel, pool: list[str]) -> np.ndarray:
        return np.concatenate([model.predict_proba(pool[i : i + args.call]) for i in range(0, len(pool), args.call)])

    reference = score_all(load_model(args.model_dir, variant="fp32"), texts).argmax(1)
    order = list(range(len(texts)))
    random.Random(7).shuffle(order)
    shuffled = [texts[i] for i in order]

    models = {name: build(c) for name, c in _configs(cores).items()}
    quality = {}
    for name, model in models.items():
        first = score_all(model, texts)
        again = np.empty_like(first)
        again[order] = score_all(model, shuffled)
        quality[name] = {"agreement_with_fp32": round(float((first.argmax(1) == reference).mean()), 4),
                         "flips_with_other_neighbours": int((first.argmax(1) != again.argmax(1)).sum())}

    rates: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(args.rounds):
        for name, model in models.items():
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                for i in range(0, len(texts), args.call):
                    model.predict_proba(texts[i : i + args.call])
                    done += len(texts[i : i + args.call])
            rates[name].append(done / (time.perf_counter() - start))
            print(f"round {round_ + 1}: {name:40s} {rates[name][-1]:8.1f} texts/s", flush=True)

    base = max(rates["serial"])
    rows = []
    for name, c in _configs(cores).items():
        best = max(rates[name])
        rows.append({"config": name, "max_batch": c["max_batch"], "parallel": c["parallel"],
                     "intra_op_threads": c["threads"], "skip_layer_norm_fusion": c["disabled"] == (),
                     "texts_per_s": round(best, 1), "vs_serial": round(best / base, 2), **quality[name]})
    print(f"\n{args.variant}, {len(texts)} short texts, calls of {args.call}, {cores} cores, best of {args.rounds}")
    print(f"{'config':40s} {'texts/s':>9s} {'vs serial':>9s} {'agree fp32':>10s} {'flips':>6s}")
    for r in rows:
        print(f"{r['config']:40s} {r['texts_per_s']:9.1f} {r['vs_serial']:9.2f} "
              f"{r['agreement_with_fp32']:10.3f} {r['flips_with_other_neighbours']:6d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"variant": args.variant, "model_version": manifest.version, "cores": cores,
                                    "texts": len(texts), "call": args.call, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
