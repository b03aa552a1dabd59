"""Replay at max speed vs the live pipeline's maximum, in one run on one stack.

    .venv/bin/python bench/replay.py [--model-dir models/default] [--items 3000]

Starts tansu, InfluxDB 1.6.7 and one worker (default model, int8), warms it up,
then:

* **live max**: ``--items`` sample items published at once with the plain
  publisher; items/s = items / (first publish -> last point stored);
* **replay max**: another ``--items`` items written to a JSONL file and sent
  by ``finsentry replay --speed max`` (event-time timestamps, headers,
  checkpoints, back-pressure on the worker group's lag); items/s = items /
  (replay start -> last point stored).

Prints both and the ratio; writes ``bench/results/replay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline import _wait_points  # noqa: E402
from streams.tools import services  # noqa: E402
from streams.tools.publish import Outgoing, publish, route  # noqa: E402
from streams.tools.samples import sample_items  # noqa: E402
from streams.contracts.settings import KafkaSettings, TopicSettings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--max-lag", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replay.json")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="finsentry-bench-replay-"))
    with services.local_pipeline(args.model_dir, workdir) as stack:
        kafka = KafkaSettings(broker=stack.broker_url)
        topics = TopicSettings()
        influx_url, env = stack.influx_url, stack.env

        def items(seed: int, n: int) -> list[dict]:
            return list(sample_items(n, seed=seed))

        def outgoing(batch: list[dict]) -> list[Outgoing]:
            return [route(json.dumps(it).encode(), topics) for it in batch]

        points = 0
        warm = items(1, 300)
        asyncio.run(publish(outgoing(warm), kafka))
        points += sum(len(i["tickers"]) for i in warm)
        _wait_points(influx_url, "finsentry", points, 300)

        live = items(2, args.items)
        points += sum(len(i["tickers"]) for i in live)
        start = time.monotonic()
        asyncio.run(publish(outgoing(live), kafka))
        live_s = _wait_points(influx_url, "finsentry", points, 900, every=0.05) - start

        history = items(3, args.items)
        source = workdir / "history.jsonl"
        source.write_text("".join(json.dumps(i) + "\n" for i in history))
        points += sum(len(i["tickers"]) for i in history)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "streams.cli", "replay", str(source), "--speed", "max",
                               "--quiet", "--max-lag", str(args.max_lag), "--state", str(workdir / "state.json")],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        replay_s = _wait_points(influx_url, "finsentry", points, 900, every=0.05) - start
        stats = json.loads(done.stdout[done.stdout.index("{"):])
        result = {
            "items": args.items, "live_items_per_s": round(args.items / live_s, 1),
            "replay_items_per_s": round(args.items / replay_s, 1),
            "ratio": round(live_s / replay_s, 3), "replay_publish_items_per_s": stats["items_per_s"],
            "replay_waited_for_lag_s": stats["waited_for_lag_s"], "max_lag": args.max_lag,
            "model_dir": str(args.model_dir),
        }
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
