"""Memory over a long run: does the worker's RSS stay flat at a steady load?

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 250] [--tickers 2000] [--warm-up 16]

Starts tansu + InfluxDB 1.x + one worker (aggregation and alert rules on, the
default int8 model), then publishes sample texts at ``--rate`` items/s for
``--minutes``, each item about 1–3 of ``--tickers`` synthetic symbols and
``published_at`` = now (so windows close and per-ticker state is exercised
for many tickers, not a handful). Every 15 s it samples the RSS of the worker,
the broker and InfluxDB from /proc. At the end it waits until every point is
stored (a soak that loses items is not a pass) and reports the worker's RSS at
the end of the warm-up, the largest RSS after it, and the growth between them.
The warm-up must outlast the aggregation's dedup horizon (15 min of event
time, swept once a minute: each ticker remembers the ids it counted up to 16
min; the default warm-up is that), until which the
per-ticker state fills by design; after it, every per-ticker and per-id
structure is bounded, so RSS should be flat.

Prints a table and writes ``bench/results/soak.json``. Target (issue 15):
growth after warm-up < 10 %. tansu keeps every topic in memory, so the
broker's RSS grows with the data by design; it is reported, not judged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.contracts.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.tools import services  # noqa: E402
from streams.tools.publish import route  # noqa: E402
from streams.tools.samples import sample_items  # noqa: E402

from pipeline import _count, _wait_points, machine  # noqa: E402  (bench/pipeline.py)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def publish_steady(kafka: KafkaSettings, topics: TopicSettings, *, rate: float, seconds: float,
                         symbols: list[str], on_tick) -> int:
    """Publish at ``rate`` items/s for ``seconds``; returns the number of points expected."""
    from aiokafka import AIOKafkaProducer

    rng = random.Random(5)
    texts = list(sample_items(2000, seed=11))
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    t0, sent, points, n = loop.time(), 0, 0, 0
    try:
        while (elapsed := loop.time() - t0) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                base = dict(texts[n % len(texts)])
                tickers = rng.sample(symbols, rng.choice((1, 1, 1, 2, 3)))
                item = {**base, "id": f"soak-{n}", "tickers": tickers,
                        "published_at": datetime.now(timezone.utc).isoformat()}
                message = route(json.dumps(item).encode(), topics)
                await producer.send(message.topic, message.value, key=message.key)
                points += len(tickers)
                n += 1
            sent += due
            on_tick(elapsed)
            await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        await producer.stop()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=250.0, help="items/s (≈ 50 %% of this box's throughput)")
    parser.add_argument("--tickers", type=int, default=2000)
    parser.add_argument("--warm-up", type=float, default=16.0, help="minutes before the baseline RSS is taken")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()

    symbols = [f"S{i:04d}" for i in range(args.tickers)]
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-soak-"))
    samples: list[dict] = []
    with services.local_pipeline(args.model_dir, workdir) as stack:
        kafka, topics = KafkaSettings(broker=stack.broker_url), TopicSettings()
        pids = {"worker": stack.worker.pid, "broker": stack.broker_pid, "influxdb": stack.influx_pid}
        next_sample = [0.0]

        def on_tick(elapsed: float) -> None:
            if elapsed >= next_sample[0]:
                samples.append({"minute": round(elapsed / 60, 2),
                                **{name: round(rss_mb(pid), 1) for name, pid in pids.items()}})
                print(json.dumps(samples[-1]), flush=True)
                next_sample[0] += 15.0

        expected = asyncio.run(publish_steady(kafka, topics, rate=args.rate, seconds=args.minutes * 60,
                                              symbols=symbols, on_tick=on_tick))
        try:
            _wait_points(stack.influx_url, "finsentry", expected, 900)
        except TimeoutError as exc:
            print(f"NOT ALL STORED: {exc}", flush=True)
        stored = _count(stack.influx_url, "finsentry")
        samples.append({"minute": "end", **{name: round(rss_mb(pid), 1) for name, pid in pids.items()}})

    after = [s for s in samples if s["minute"] == "end" or s["minute"] >= args.warm_up]
    baseline = after[0]["worker"] if after else float("nan")
    peak = max(s["worker"] for s in after) if after else float("nan")
    result = {
        "command": " ".join(["bench/soak.py", *sys.argv[1:]]),
        "machine": machine(),
        "minutes": args.minutes, "rate_items_s": args.rate, "tickers": args.tickers,
        "expected_points": expected, "stored_points": stored,
        "worker_rss_mb": {"start": samples[0]["worker"], "after_warm_up": baseline, "peak_after_warm_up": peak,
                          "end": samples[-1]["worker"]},
        "worker_growth_after_warm_up": round(peak / baseline - 1, 4) if after else None,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    r = result["worker_rss_mb"]
    print(f"\nworker RSS MB: start {r['start']}, after {args.warm_up:g} min warm-up {r['after_warm_up']}, "
          f"peak after it {r['peak_after_warm_up']}, end {r['end']}; growth {result['worker_growth_after_warm_up']:.1%} "
          f"(target < 10 %)\npoints stored {stored} of {expected}; broker RSS {samples[-1]['broker']} MB "
          f"(tansu keeps everything in memory)\nwrote {args.out}")


if __name__ == "__main__":
    main()
