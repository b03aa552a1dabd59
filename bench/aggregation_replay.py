"""The aggregation stage's CPU on the pipeline's own mentions, replayed: before/after in one run.

    .venv/bin/python bench/aggregation_replay.py [--items 12000] [--against DIR] [--rounds 3]
    .venv/bin/python bench/aggregation_replay.py --mentions FILE --against DIR   # reuse a capture

End to end, this box's speed drifts by 10 %+ within minutes, so a change worth
5 % of the worker's event-loop CPU does not show in ``bench/pipeline.py``. This
bench holds the input still instead: it runs the live pipeline once (tansu +
InfluxDB + one worker, the sample items of ``bench/pipeline.py``) and reads
back the mentions topic, i.e. the records exactly as the aggregation agent
consumed them, with the event-time lag a backlog creates (the watermark is the
slowest input partition's, so a ticker holds many open windows). Then it feeds
them, in batches of ``--records-per-batch`` as the agent took them, through
what the agent does on the event loop, minus the I/O: decode, engine, window
and alert points, each new state JSON-encoded as Faust's codec does. CPU time,
best of 3 passes, in a fresh process per measurement.

``--against DIR`` (another checkout, e.g. ``git worktree add /tmp/before
<commit>``) replays the same records through that tree's code, alternating with
this one, and prints the ratio; the digest of the output (points and changelog
bytes) says whether both produce the same thing. Writes
``bench/results/aggregation_replay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def capture(items: int, out: Path) -> int:
    """Run the pipeline on ``items`` sample items; save its mentions records (partition, value) in
    the order a consumer reads them. Returns the number of records."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from pipeline import _wait_points
    from streams.contracts.settings import KafkaSettings, TopicSettings
    from streams.tools import services
    from streams.tools.publish import publish, route
    from streams.tools.samples import sample_items

    async def read(kafka: KafkaSettings, topic: str) -> list[tuple[int, bytes]]:
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                    bootstrap_servers=kafka.bootstrap_servers)
        await consumer.start()
        try:
            await consumer.topics()  # metadata for the topic's partitions
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[tuple[int, bytes]] = []
            while batch := await consumer.getmany(timeout_ms=2000, max_records=20):
                for tp, rows in batch.items():
                    records += [(tp.partition, row.value) for row in rows]
            return records
        finally:
            await consumer.stop()

    with services.local_pipeline(ROOT / "models" / "default", Path(tempfile.mkdtemp(prefix="finsentry-agg-"))) as stack:
        kafka, topics = KafkaSettings(broker=stack.broker_url), TopicSettings()
        sample = list(sample_items(items, seed=2))
        asyncio.run(publish([route(json.dumps(it).encode(), topics) for it in sample], kafka))
        _wait_points(stack.influx_url, "finsentry", sum(len(it["tickers"]) for it in sample), 900)
        records = asyncio.run(read(kafka, topics.mentions))
    out.write_text(json.dumps([[p, base64.b64encode(v).decode("ascii")] for p, v in records]))
    return len(records)


def replay(code_root: Path, mentions: Path, per_batch: int) -> dict:
    """In this process, with ``code_root``'s ``streams``: CPU seconds of the best of 3 passes, and a digest."""
    import hashlib
    import time
    from datetime import datetime, timedelta, timezone

    sys.path.insert(0, str(code_root))
    import orjson

    from streams.aggregation.agent import effect_points, engine_config
    from streams.aggregation.engine import Aggregator, Effects
    from streams.aggregation.rules import load_rules
    from streams.contracts.records import decode_mentions
    from streams.contracts.settings import Settings

    records = [(p, base64.b64decode(v)) for p, v in json.loads(mentions.read_text())]
    settings = Settings()

    def one_pass() -> tuple[str, int]:
        engine = Aggregator(load_rules(settings.alerts.rules_file, windows=settings.alerts.windows),
                            engine_config(settings), {})
        digest, mentions_seen = hashlib.sha256(), 0
        start = datetime(2026, 12, 3, tzinfo=timezone.utc)
        for n, i in enumerate(range(0, len(records), per_batch)):
            effects, now = Effects(), start + timedelta(seconds=n * 0.5)  # fixed clock: same decisions each pass
            for partition, value in records[i : i + per_batch]:
                for mention in decode_mentions(value):
                    engine.observe(mention, partition, now=now, effects=effects)
                    mentions_seen += 1
            digest.update("\n".join(effect_points(effects)).encode())
            for key, value, _ in effects.writes():
                digest.update(key.encode() + (orjson.dumps(value) if value is not None else b"-"))
                if value is None:
                    engine.store.pop(key, None)
                else:
                    engine.store[key] = value
            engine.commit(effects)
        return digest.hexdigest()[:16], mentions_seen

    best = None
    for _ in range(3):
        cpu = time.process_time()
        digest, seen = one_pass()
        cpu = time.process_time() - cpu
        best = cpu if best is None else min(best, cpu)
    return {"cpu_s": round(best, 3), "mentions": seen, "us_per_mention": round(best / seen * 1e6, 1),
            "digest": digest}


def measure(code_root: Path, mentions: Path, per_batch: int) -> dict:
    """:func:`replay` in a fresh interpreter (one tree's ``streams`` per process)."""
    out = subprocess.run([sys.executable, __file__, "--replay", str(code_root), "--mentions", str(mentions),
                          "--records-per-batch", str(per_batch)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12000, help="sample items to run through the pipeline")
    parser.add_argument("--mentions", type=Path, help="a capture to reuse (written next to --out otherwise)")
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records-per-batch", type=int, default=9,
                        help="mentions records per agent batch (the pipeline bench's backlog gives ~9)")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "aggregation_replay.json")
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(replay(args.replay, args.mentions, args.records_per_batch)))
        return

    mentions = args.mentions
    if mentions is None:
        mentions = Path(tempfile.mkdtemp(prefix="finsentry-agg-")) / "mentions.json"
        print(f"capturing the mentions of {args.items} items …", flush=True)
        print(f"{capture(args.items, mentions)} records -> {mentions}", flush=True)
    trees = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for n in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(measure(tree, mentions, args.records_per_batch))
            print(f"round {n + 1} {name:8} {runs[name][-1]}", flush=True)
    summary = {name: {"median_us_per_mention": statistics.median(r["us_per_mention"] for r in rs),
                      "digests": sorted({r["digest"] for r in rs})} for name, rs in runs.items()}
    if args.against:
        summary["ratio_this_to_against"] = round(summary["this"]["median_us_per_mention"]
                                                 / summary["against"]["median_us_per_mention"], 3)
        summary["same_output"] = summary["this"]["digests"] == summary["against"]["digests"]
    report = {"command": " ".join(["bench/aggregation_replay.py", *sys.argv[1:]]), "trees": {k: str(v) for k, v in trees.items()},
              "records_per_batch": args.records_per_batch, "runs": runs, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
