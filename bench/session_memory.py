"""Does an ORT session's memory stay flat when every call has a shape of its own?

    .venv/bin/python bench/session_memory.py [--model-dir models/default] [--variant int8] [--calls 6000]

The worker pads each sub-batch only to its own longest window, so the session
sees many input shapes (rows x tokens). ONNX Runtime's memory-pattern planner
caches an allocation plan per shape. This opens the variant's session twice,
with the planner on (ORT's default) and off (what :func:`streams.runtime.session.open_session`
does on CPU), each in a fresh process, feeds each the same ``--calls`` random
shapes (1-32 rows; 5-40 tokens, one call in six up to 128), and prints the
process RSS every 1,000 calls and the seconds spent. Writes
``bench/results/session_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import machine  # noqa: E402  (bench/pipeline.py)
from soak import rss_mb  # noqa: E402  (bench/soak.py)


def feed_shapes(model_dir: Path, variant: str, calls: int, mem_pattern: bool) -> dict:
    """In this process: one CPU session, ``calls`` random shapes; RSS every 1,000 calls."""
    import numpy as np

    import onnxruntime as ort

    from streams.runtime.manifest import read_manifest
    from streams.runtime.session import CPU_DISABLED_OPTIMIZERS, variant_source

    manifest = read_manifest(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_mem_pattern = mem_pattern
    session = ort.InferenceSession(str(variant_source(model_dir, manifest.variant(variant))), options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))
    names = [i.name for i in session.get_inputs()]
    rng = random.Random(1)
    samples, start = [{"calls": 0, "rss_mb": round(rss_mb(os.getpid()), 1)}], time.perf_counter()
    for call in range(1, calls + 1):
        rows = rng.randint(1, 32)
        tokens = rng.randint(5, 128) if rng.random() < 1 / 6 else rng.randint(5, 40)
        ones = np.ones((rows, tokens), dtype=np.int64)
        session.run(None, {n: np.zeros_like(ones) if n == "token_type_ids" else ones for n in names})
        if call % 1000 == 0:
            samples.append({"calls": call, "rss_mb": round(rss_mb(os.getpid()), 1)})
    return {"mem_pattern": mem_pattern, "seconds": round(time.perf_counter() - start, 1), "rss": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "session_memory.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(feed_shapes(args.model_dir, args.variant, args.calls, args.one == "on")))
        return
    runs = []
    for mode in ("on", "off"):
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--model-dir", str(args.model_dir),
                              "--variant", args.variant, "--calls", str(args.calls)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        first, after, last = runs[-1]["rss"][0], runs[-1]["rss"][1], runs[-1]["rss"][-1]
        print(f"mem pattern {mode:3}: RSS {first['rss_mb']} MB at start, {after['rss_mb']} after "
              f"{after['calls']} calls, {last['rss_mb']} after {last['calls']} "
              f"(+{100 * (last['rss_mb'] / after['rss_mb'] - 1):.1f} %), {runs[-1]['seconds']} s")
    result = {"command": f"bench/session_memory.py --variant {args.variant} --calls {args.calls}",
              "machine": machine(),
              "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
