"""The per-ticker aggregation agent: mentions -> windows, baselines, alerts.

Reads the mentions topic (key = ticker, so a ticker's mentions are in one
partition, in order), runs :class:`streams.engine.Aggregator` and keeps each
ticker's state in the Faust table ``ticker-state`` (changelog-backed; a
restarted worker recovers it before consuming). Per mention, in this order:
window and alert points go to InfluxDB, alerts go to the alerts topic, then
the new states go to the table. Faust flushes the changelog before it commits
the mention's offset, so a committed mention always has its state saved; a
crash before that replays the mention, and the ids kept in the state make the
replay count nothing twice.
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timezone
from typing import Any

import faust

from streams.engine import Aggregator, Effects, EngineConfig
from streams.publish import deliver
from streams.records import Alert, DeadLetter, Mention
from streams.rules import load_rules
from streams.settings import Settings
from streams.sink import Rejected, make_sink

__all__ = ["TABLE_NAME", "engine_config", "attach_aggregation", "changelog_topic", "mark_changelog_end",
           "CHANGELOG_END_KEY"]

log = logging.getLogger(__name__)

TABLE_NAME = "ticker-state"
#: Key of the record :func:`mark_changelog_end` appends (value JSON null; the engine ignores it).
CHANGELOG_END_KEY = "__changelog_end__"


def changelog_topic(settings: Settings) -> str:
    """Faust's name for the state table's changelog topic."""
    return f"{settings.kafka.consumer_group}-{TABLE_NAME}-changelog"


async def mark_changelog_end(settings: Settings) -> int:
    """Append one single-record batch to every changelog partition; return how many were written.

    Workaround for brokers that report a wrong end offset when the last write
    to a partition was a multi-record batch (tansu 0.6, docs/kafka.md): Faust
    recovers a table by reading its changelog up to that end offset, so it
    would stop short and lose state. After a single-record batch the end offset
    is right. Run before the worker starts (``FINSENTRY_KAFKA__CHANGELOG_END_MARKER``);
    Apache Kafka does not need it.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.publish import producer_kwargs

    topic = changelog_topic(settings)
    consumer = AIOKafkaConsumer(group_id=None, **producer_kwargs(settings.kafka))
    await consumer.start()
    try:
        existing = await consumer.topics()  # refreshes metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or []) if topic in existing else []
    finally:
        await consumer.stop()
    if not partitions:
        return 0  # first start: nothing to recover
    producer = AIOKafkaProducer(acks="all", linger_ms=0, **producer_kwargs(settings.kafka))
    await producer.start()
    try:
        for partition in partitions:
            await producer.send_and_wait(topic, b"null", key=json.dumps(CHANGELOG_END_KEY).encode(),
                                         partition=partition)
    finally:
        await producer.stop()
    return len(partitions)


def engine_config(settings: Settings) -> EngineConfig:
    a = settings.alerts
    return EngineConfig(
        windows=tuple(a.windows), lateness=a.lateness, half_life=a.baseline_half_life,
        between_window_std=a.between_window_std, rate_floor_per_minute=a.rate_floor_per_minute,
        top_items=a.top_items,
    )


async def _end_changelog_batches(app: faust.App, table: Any, partitions: set[int]) -> None:
    """Close each written changelog partition with a single-record batch (the tansu workaround of
    :func:`mark_changelog_end`, applied as the states are written, so that a worker that takes a
    partition over after a rebalance recovers all of it, not only a restarted one)."""
    await app.producer.flush()
    for partition in sorted(partitions):
        sent = await table.changelog_topic.send(key=CHANGELOG_END_KEY, value=None, partition=partition)
        await sent


def _save(table: Any, partition: int, key: str, value: dict) -> None:
    """``table[key] = value`` for a state whose ticker lives in ``partition``.

    Faust's own ``__setitem__`` takes the partition from the event being
    processed; a batch holds events of several partitions, and each ticker's
    state must go to its own changelog partition (the one its mentions use),
    or another worker would recover it after a rebalance.
    """
    table.send_changelog(partition, key, value)
    table.data[key] = value


def _rejected_point(bad: Rejected, mention_topic: str, worker: str) -> DeadLetter:
    """A dead letter for a point the aggregator made and InfluxDB refused (no input message is its
    source: topic = the mentions topic, partition and offset -1, value = the line)."""
    measurement = bad.line.split(",", 1)[0]
    return DeadLetter.of(stage="sink", reason=f"InfluxDB rejected a {measurement} point: {bad.reason}",
                         topic=mention_topic, partition=-1, offset=-1, key=None,
                         value=bad.line.encode("utf-8"), failed_at=datetime.now(timezone.utc), worker=worker)


def attach_aggregation(app: faust.App, settings: Settings, dead_letters: faust.TopicT) -> dict[str, Any]:
    """Declare the mentions/alerts topics, the state table and the agent on ``app``.

    Points InfluxDB refuses go to ``dead_letters`` with the server's reason.
    """
    t = settings.topics
    rules = load_rules(settings.alerts.rules_file, windows=settings.alerts.windows)
    mentions = app.topic(t.mentions, key_type=bytes, value_type=Mention, key_serializer="raw")
    alerts = app.topic(t.alerts, key_type=bytes, value_type=Alert, key_serializer="raw")
    table = app.Table(TABLE_NAME, default=None, partitions=t.partitions, key_type=str,
                      help="per-ticker windows, baselines and open incidents")
    engine = Aggregator(rules, engine_config(settings), table)
    sink = make_sink(settings.influx)
    worker = socket.gethostname()
    stats = {"mentions": 0, "duplicates": 0, "late": 0, "closed_windows": 0, "alerts": 0}

    @app.on_partitions_revoked.connect
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        engine.forget_partitions({tp.partition for tp in revoked if tp.topic == t.mentions})

    @app.agent(mentions, name="aggregate-tickers")
    async def aggregate_tickers(stream: faust.StreamT) -> None:
        await sink.start()
        log.info("aggregating %s per ticker: windows %s, lateness %ds, %d rules; alerts -> %s",
                 t.mentions, settings.alerts.windows, settings.alerts.lateness, len(rules.active), t.alerts)
        try:
            # Micro-batches: one InfluxDB write, and one changelog record per ticker, per batch.
            # take_events acks the batch only after this body has delivered everything.
            async for events in stream.take_events(settings.alerts.batch_size, within=settings.alerts.batch_wait):
                effects = Effects()
                now = datetime.now(timezone.utc)
                for event in events:
                    engine.observe(event.value, event.message.partition, now=now, effects=effects)
                rejected = await sink.write(effects.points) if effects.points else []
                for bad in rejected:  # our own points: a rejection is a bug or a schema clash, say so loudly
                    log.error("InfluxDB rejected an aggregate point: %s (%s)", bad.line[:200], bad.reason)
                await deliver([(alerts, a.dedup_key.encode(), a) for a in effects.alerts]
                              + [(dead_letters, None, _rejected_point(bad, t.mentions, worker)) for bad in rejected],
                              f"{len(effects.alerts)} alerts / {len(rejected)} rejected points")
                for alert in effects.alerts:
                    log.info("alert %s %s: %s", alert.status, alert.dedup_key, alert.suggestion)
                written = set()
                for key, value in effects.writes():
                    _save(table, value["partition"], key, value)
                    written.add(value["partition"])
                if written and settings.kafka.changelog_end_marker:
                    await _end_changelog_batches(app, table, written)
                engine.commit(effects)
                stats["mentions"] += effects.mentions
                stats["duplicates"] += effects.duplicates
                stats["late"] += effects.late
                stats["closed_windows"] += effects.closed_windows
                stats["alerts"] += len(effects.alerts)
        finally:
            await sink.stop()

    return {"engine": engine, "table": table, "alerts_topic": alerts, "mentions_topic": mentions,
            "stats": stats, "rules": rules}
