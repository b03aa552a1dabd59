"""Where a live worker's CPU goes: py-spy samples the worker process while a backlog streams through.

    .venv/bin/python bench/profile_worker.py [--model-dir models/default] [--items 6000] [--seconds 25]

Starts tansu + InfluxDB 1.6.7 + one worker (``streams.tools.services.local_pipeline``), publishes
``--items`` sample items at once, records the worker with ``py-spy record --format raw`` for
``--seconds`` while it works through them, and prints the functions with the most samples on
the stack (inclusive) and at the top of the stack (self), as shares of all samples. Writes the raw
stacks to ``bench/results/worker-profile.txt``. Needs ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.contracts.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.tools import services  # noqa: E402
from streams.tools.publish import publish, route  # noqa: E402
from streams.tools.samples import sample_items  # noqa: E402


def summarise(raw: Path, top: int = 25) -> dict:
    inclusive, own, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        n = int(count)
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    share = lambda c: [(f, round(100 * n / total, 1)) for f, n in c.most_common(top)]  # noqa: E731
    return {"samples": total, "inclusive_pct": share(inclusive), "self_pct": share(own)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--items", type=int, default=6000)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "worker-profile.txt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, services.local_pipeline(args.model_dir, Path(work)) as stack:
        kafka, topics = KafkaSettings(broker=stack.broker_url), TopicSettings()
        warm = [route(json.dumps(i).encode(), topics, force_topic=topics.news) for i in sample_items(100, seed=1)]
        asyncio.run(publish(warm, kafka))
        time.sleep(20)  # worker up and warm
        items = list(sample_items(args.items, seed=2))
        bulk = [route(json.dumps(i).encode(), topics) for i in items]
        asyncio.run(publish(bulk, kafka))
        raw = Path(work) / "raw.txt"
        subprocess.run([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(stack.worker.pid), "--duration",
                        str(args.seconds), "--format", "raw", "--rate", "100", "--nonblocking", "-o", str(raw)],
                       check=True, capture_output=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(raw.read_text())
    report = summarise(args.out)
    print(f"{report['samples']} samples")
    for title, key in (("on the stack (inclusive %)", "inclusive_pct"), ("at the top (self %)", "self_pct")):
        print(f"\n{title}")
        for frame, pct in report[key]:
            print(f"  {pct:5.1f}  {frame[:150]}")


if __name__ == "__main__":
    main()
