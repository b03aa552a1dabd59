"""Chaos benchmark: N rounds of SIGKILLs at random moments of a live stream; lost / duplicated per round.

Each round gets its own topics, consumer group and InfluxDB database on one local tansu broker and
InfluxDB 1.6.7, streams ``--items`` sample items (each naming at least one ticker) at ``--rate``/s,
and SIGKILLs the worker ``--kills`` times at seeded random moments (mid-scoring, or while a new
worker is still starting), starting a new one each time (``streams.tools.chaos.kill_round``). It
prints one line per round and writes ``bench/results/chaos.json``.

    .venv/bin/python bench/chaos.py --rounds 20                 # the shipped default model (int8)
    .venv/bin/python bench/chaos.py --rounds 3 --model-dir DIR  # any exported model directory
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.tools import services  # noqa: E402
from streams.tools.chaos import kill_round, tagged_items  # noqa: E402
from streams.tools.services import new_pipeline, stop_workers  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0, help="items per second")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per round")
    parser.add_argument("--seed", type=int, default=1000, help="seed of round 1 (round k uses seed + k - 1)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args()

    broker, influx = services.start_tansu(), services.start_influxd()
    rounds = []
    started = time.monotonic()
    try:
        print(f"{'round':>5} {'seed':>5} {'points':>7} {'stored':>7} {'lost':>5} {'dup':>5} {'redelivered':>11} "
              f"{'secs':>6}  kill times (s)", flush=True)
        for n in range(1, args.rounds + 1):
            seed = args.seed + n - 1
            with tempfile.TemporaryDirectory(prefix="finsentry-chaos-") as work:
                pipe = new_pipeline(broker, influx, args.model_dir, Path(work))
                try:
                    result = kill_round(pipe, tagged_items(args.items, seed=seed), rate=args.rate,
                                        kills=args.kills, seed=seed)
                finally:
                    stop_workers(pipe)
            rounds.append(result)
            print(f"{n:>5} {seed:>5} {result.expected_points:>7} {result.stored_points:>7} {result.lost:>5} "
                  f"{result.duplicated:>5} {result.redelivered_scores:>11} {result.seconds:>6.1f}  "
                  f"{', '.join(f'{t:.1f}' for t in result.kill_times)}", flush=True)
    finally:
        broker.stop()
        influx.stop()
    summary = {
        "rounds": len(rounds), "rounds_with_loss": sum(r.lost > 0 for r in rounds),
        "rounds_with_duplicates": sum(r.duplicated > 0 for r in rounds),
        "lost_total": sum(r.lost for r in rounds), "duplicated_total": sum(r.duplicated for r in rounds),
        "kills_total": sum(len(r.kill_times) for r in rounds),
        "rounds_with_redelivery": sum(r.redelivered_scores > 0 for r in rounds),
    }
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(sys.argv), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(), "model_dir": str(args.model_dir), "items": args.items,
        "rate": args.rate, "kills_per_round": args.kills, "seconds": round(time.monotonic() - started, 1),
        "summary": summary, "rounds": [r.__dict__ for r in rounds],
    }, indent=2, default=list) + "\n")


if __name__ == "__main__":
    main()
