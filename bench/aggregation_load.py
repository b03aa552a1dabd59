"""The aggregation engine by itself under many tickers: CPU per mention, memory, changelog bytes.

    .venv/bin/python bench/aggregation_load.py [--minutes 20] [--tickers 2000] [--rate 760]

Feeds :class:`streams.aggregation.engine.Aggregator` (the shipped rules, default
windows and dedup horizon) ``--rate`` mentions per second of *simulated* event
time, each for one of ``--tickers`` symbols, in batches of 256 as the agent
takes them, and writes each batch's new ticker states to a dict the way the
agent writes the table. No broker, no Faust: this isolates the engine's own
cost. The defaults match ``bench/soak.py --rate 475 --tickers 2000`` (1.6
mentions per item). Every simulated minute it prints the process RSS, the CPU
per mention over the last minute, and the changelog bytes per mention (each
written state JSON-encoded with orjson, as Faust's codec does). The ids a
ticker remembers fill up over the 15-minute dedup horizon; after it, all
three should be flat. Writes ``bench/results/aggregation_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.aggregation.engine import Aggregator, EngineConfig, Effects  # noqa: E402
from streams.aggregation.rules import load_rules  # noqa: E402
from streams.contracts.records import Mention  # noqa: E402

from pipeline import machine  # noqa: E402  (bench/pipeline.py)
from soak import rss_mb  # noqa: E402  (bench/soak.py)

BATCH = 256


def run(minutes: float, tickers: int, rate: float) -> list[dict]:
    config = EngineConfig()
    store: dict = {}
    engine = Aggregator(load_rules(None, windows=list(config.windows)), config, store)
    rng = random.Random(5)
    symbols = [f"S{i:04d}" for i in range(tickers)]
    t0 = datetime(2026, 12, 2, 12, 7, tzinfo=timezone.utc)
    per_minute = int(rate * 60)
    rows, n = [], 0
    cpu_mark, bytes_in_minute, writes_in_minute = time.process_time(), 0, 0
    while n < minutes * per_minute:
        effects = Effects()
        for _ in range(BATCH):
            ts = t0 + timedelta(seconds=n / rate)
            label = rng.choice(("positive", "negative", "neutral"))
            engine.observe(Mention(id=f"item-{n:09d}", ticker=rng.choice(symbols), published_at=ts,
                                   score=rng.uniform(-1, 1), label=label, source="wire",
                                   headline=f"headline of item {n}", source_partition="news:0",
                                   source_watermark=ts.timestamp()), 0, now=ts, effects=effects)
            n += 1
        sizes: list[int] = []
        effects.apply(store, lambda value: sizes.append(len(orjson.dumps(value))) or value)
        bytes_in_minute += sum(sizes)
        writes_in_minute += len(sizes)
        engine.commit(effects)
        if n // per_minute > len(rows):
            cpu = time.process_time()
            rows.append({"minute": len(rows) + 1, "rss_mb": round(rss_mb(os.getpid()), 1),
                         "cpu_us_per_mention": round((cpu - cpu_mark) / per_minute * 1e6, 1),
                         "changelog_bytes_per_mention": round(bytes_in_minute / per_minute),
                         "state_writes_per_mention": round(writes_in_minute / per_minute, 2)})
            print(json.dumps(rows[-1]), flush=True)
            cpu_mark, bytes_in_minute, writes_in_minute = time.process_time(), 0, 0
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated event-time minutes")
    parser.add_argument("--tickers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=760.0, help="mentions per simulated second")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "aggregation_load.json")
    args = parser.parse_args()
    rows = run(args.minutes, args.tickers, args.rate)
    last = rows[-3:]
    summary = {key: round(sum(r[key] for r in last) / len(last), 1)
               for key in ("cpu_us_per_mention", "changelog_bytes_per_mention", "rss_mb")}
    print(f"last {len(last)} minutes: {summary['cpu_us_per_mention']} CPU-us and "
          f"{summary['changelog_bytes_per_mention']:.0f} changelog bytes per mention, RSS {summary['rss_mb']} MB")
    result = {"command": f"bench/aggregation_load.py --minutes {args.minutes:g} --tickers {args.tickers} "
                         f"--rate {args.rate:g}",
              "machine": machine(),
              "steady_state": summary, "minutes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
