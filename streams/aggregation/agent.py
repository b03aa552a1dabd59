"""The per-ticker aggregation agent: mentions -> windows, baselines, alerts.

Reads the mentions topic (MentionBatch records keyed by ticker, so a ticker's
mentions are in one partition, in order), runs :class:`streams.aggregation.engine.Aggregator` and keeps each
ticker's state in the Faust table ``ticker-state`` (changelog-backed; a
restarted worker recovers it before consuming). Per mention, in this order:
window and alert points go to InfluxDB, alerts go to the alerts topic, then
the new states go to the table. Faust flushes the changelog before it commits
the mention's offset, so a committed mention always has its state saved; a
crash before that replays the mention, and the ids kept in the state make the
replay count nothing twice.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone
from typing import Any

import faust

from dataclasses import dataclass, field

from streams.aggregation.engine import Aggregator, Effects, EngineConfig
from streams.aggregation.rules import RuleSet, load_rules
from streams.contracts import metrics
from streams.contracts.records import Alert, DeadLetter, decode_mentions
from streams.contracts.settings import Settings
from streams.influx.points import alert_point, window_point
from streams.influx.sink import Rejected, make_sink
from streams.kafka.changelog import end_changelog_batches
from streams.kafka.delivery import deliver

__all__ = ["TABLE_NAME", "AggregationStage", "engine_config", "effect_points", "attach_aggregation",
           "changelog_topic"]

log = logging.getLogger(__name__)

TABLE_NAME = "ticker-state"


def changelog_topic(settings: Settings) -> str:
    """Faust's name for the state table's changelog topic."""
    return f"{settings.kafka.consumer_group}-{TABLE_NAME}-changelog"


@dataclass
class AggregationStage:
    """What the aggregation agent exposes to the rest of the app (and to tests)."""

    engine: Aggregator
    table: Any
    rules: RuleSet
    mentions_topic: faust.TopicT
    alerts_topic: faust.TopicT
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("mentions", "duplicates", "late", "closed_windows", "alerts"), 0))


def effect_points(effects: Effects) -> list[str]:
    """InfluxDB lines for what a batch caused: closed windows, then alert status changes."""
    return [window_point(**w._asdict()) for w in effects.closed] + [alert_point(a) for a in effects.alerts]


def engine_config(settings: Settings) -> EngineConfig:
    a = settings.alerts
    return EngineConfig(
        windows=tuple(a.windows), lateness=a.lateness, half_life=a.baseline_half_life,
        between_window_std=a.between_window_std, rate_floor_per_minute=a.rate_floor_per_minute,
        top_items=a.top_items,
    )


def _save(table: Any, partition: int, key: str, value: dict | None) -> None:
    """``table[key] = value`` (``del`` for None) for a record of a ticker that lives in ``partition``.

    Faust's own ``__setitem__`` takes the partition from the event being
    processed; a batch holds events of several partitions, and each ticker's
    records must go to its own changelog partition (the one its mentions use),
    or another worker would recover it after a rebalance.
    """
    table.send_changelog(partition, key, value)
    if value is None:
        table.data.pop(key, None)
    else:
        table.data[key] = value


def _rejected_point(bad: Rejected, mention_topic: str, worker: str) -> DeadLetter:
    """A dead letter for a point the aggregator made and InfluxDB refused (no input message is its
    source: topic = the mentions topic, partition and offset -1, value = the line)."""
    measurement = bad.line.split(",", 1)[0]
    return DeadLetter.of(stage="sink", reason=f"InfluxDB rejected a {measurement} point: {bad.reason}",
                         topic=mention_topic, partition=-1, offset=-1, key=None,
                         value=bad.line.encode("utf-8"), failed_at=datetime.now(timezone.utc), worker=worker)


def _undecodable(message: Any, reason: str, worker: str) -> DeadLetter:
    """A dead letter for a mentions record that is neither a MentionBatch nor a Mention (not ours)."""
    log.error("undecodable record in %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
    return DeadLetter.of(stage="decode", reason=reason, topic=message.topic, partition=message.partition,
                         offset=message.offset, key=message.key, value=message.value,
                         failed_at=datetime.now(timezone.utc), worker=worker)


def attach_aggregation(app: faust.App, settings: Settings, dead_letters: faust.TopicT) -> AggregationStage:
    """Declare the mentions/alerts topics, the state table and the ``aggregate-tickers`` agent on ``app``.

    Points InfluxDB refuses go to ``dead_letters`` with the server's reason.
    """
    t = settings.topics
    rules = load_rules(settings.alerts.rules_file, windows=settings.alerts.windows)
    # raw: a record is a MentionBatch or (from earlier workers) one Mention; decode_mentions reads both
    mentions = app.topic(t.mentions, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    alerts = app.topic(t.alerts, key_type=bytes, value_type=Alert, key_serializer="raw")
    table = app.Table(TABLE_NAME, default=None, partitions=t.partitions, key_type=str,
                      help="per-ticker windows, baselines and open incidents")
    engine = Aggregator(rules, engine_config(settings), table)
    stage = AggregationStage(engine, table, rules, mentions, alerts)
    sink = make_sink(settings.influx)
    worker = socket.gethostname()

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
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
                undecodable: list[DeadLetter] = []
                for event in events:
                    try:
                        batch = decode_mentions(event.value)
                    except ValueError as exc:
                        undecodable.append(_undecodable(event.message, str(exc), worker))
                        continue
                    for mention in batch:
                        engine.observe(mention, event.message.partition, now=now, effects=effects)
                points = effect_points(effects)
                with metrics.SINK_WRITE_SECONDS.labels(stage="aggregation").time():
                    rejected = await sink.write(points) if points else []
                for bad in rejected:  # our own points: a rejection is a bug or a schema clash, say so loudly
                    log.error("InfluxDB rejected an aggregate point: %s (%s)", bad.line[:200], bad.reason)
                await deliver([(alerts, a.dedup_key.encode(), a) for a in effects.alerts]
                              + [(dead_letters, None, _rejected_point(bad, t.mentions, worker)) for bad in rejected]
                              + [(dead_letters, None, letter) for letter in undecodable],
                              f"{len(effects.alerts)} alerts / {len(rejected)} rejected points")
                for alert in effects.alerts:
                    log.info("alert %s %s: %s", alert.status, alert.dedup_key, alert.suggestion)
                    metrics.ALERTS.labels(status=alert.status, severity=alert.severity).inc()
                metrics.DEAD_LETTERS.labels(stage="sink").inc(len(rejected))
                metrics.DEAD_LETTERS.labels(stage="decode").inc(len(undecodable))
                counted = effects.mentions - effects.duplicates - effects.late
                metrics.MENTIONS.labels(outcome="counted").inc(max(0, counted))
                metrics.MENTIONS.labels(outcome="duplicate").inc(effects.duplicates)
                metrics.MENTIONS.labels(outcome="late").inc(effects.late)
                written = set()
                for key, value, partition in effects.writes():
                    _save(table, partition, key, value)
                    written.add(partition)
                if written and settings.kafka.changelog_end_marker:
                    await end_changelog_batches(app, table, written)
                engine.commit(effects)
                for name, n in (("mentions", effects.mentions), ("duplicates", effects.duplicates),
                                ("late", effects.late), ("closed_windows", effects.closed_windows),
                                ("alerts", len(effects.alerts))):
                    stage.stats[name] += n
        finally:
            await sink.stop()

    return stage
