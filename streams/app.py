"""The Faust application: it only wires the stages together.

::

    news.items ┐                                   ┌> sentiment.scores
               ├> scoring (score-items) ─> InfluxDB ┼> finsentry.dead-letter
    social.posts┘                                   └> sentiment.mentions ─> aggregation (aggregate-tickers)
                                                         ─> InfluxDB, finsentry.alerts ─> notify (notify-webhook)

Delivery guarantee: at-least-once into Kafka topics, effectively-once into
InfluxDB. Agents ack input only after their outputs were accepted, and the
consumer (:mod:`streams.kafka.consumer`) never commits past an unprocessed
message; re-delivered items overwrite their own points (:mod:`streams.influx.points`).

Run it with ``finsentry worker`` (or ``faust -A streams.app worker``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.aggregation.agent import AggregationStage, attach_aggregation
from streams.contracts.records import DeadLetter
from streams.contracts.settings import Settings, load_settings
from streams.kafka.consumer import SafeCommitApp
from streams.kafka.observe import serve_operations
from streams.kafka.partitioner import key_partition
from streams.kafka.recovery import watch_recovery
from streams.kafka.security import faust_credentials
from streams.notify.webhook import attach_webhook
from streams.scoring.agent import ScoringStage, attach_scoring

__all__ = ["create_app", "worker_app", "app", "Stages"]


@dataclass(frozen=True)
class Stages:
    """The stages of one worker app (``app.finsentry``), for the CLI, benchmarks and tests."""

    settings: Settings
    scoring: ScoringStage
    aggregation: AggregationStage | None


def worker_app(settings: Settings) -> SafeCommitApp:
    """The Faust app a worker runs, configured (broker, consumer commits, producer acks, recovery
    watch) but without stages: :func:`create_app` adds them; ``bench/stage_cpu.py`` measures
    what this costs per item with nothing else on it."""
    app = SafeCommitApp(
        settings.kafka.consumer_group,
        broker=settings.kafka.broker,
        broker_credentials=faust_credentials(settings.kafka),
        broker_session_timeout=settings.kafka.session_timeout,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval,
        broker_max_poll_interval=settings.kafka.max_poll_interval,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        producer_partitioner=key_partition,  # aiokafka's, with the hash in native code
        table_standby_replicas=0,
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=True,
        store="memory://",
        datadir=str(settings.data_dir),
        web_enabled=settings.web_port != 0,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_bind,
        stream_wait_empty=False,
    )
    app.fetch_max_wait_ms = settings.kafka.fetch_max_wait_ms
    watch_recovery(app, settings.kafka.recovery_stall_timeout)
    return app


def create_app(settings: Settings | None = None) -> faust.App:
    """Build the worker app from settings (env/file when not given)."""
    settings = settings or load_settings()
    app = worker_app(settings)

    t = settings.topics
    dead_letters = app.topic(t.dead_letter, key_type=bytes, value_type=DeadLetter, key_serializer="raw")
    aggregation = attach_aggregation(app, settings, dead_letters) if settings.alerts.enabled else None
    if aggregation is not None and settings.alerts.webhook_url is not None:
        attach_webhook(app, settings, aggregation.alerts_topic, dead_letters)
    scoring = attach_scoring(app, settings, dead_letters=dead_letters,
                             mentions=aggregation.mentions_topic if aggregation else None)
    app.finsentry = Stages(settings, scoring, aggregation)  # type: ignore[attr-defined]
    if settings.web_port:
        serve_operations(app)
    return app


def __getattr__(name: str) -> Any:
    # `faust -A streams.app` imports `app`; build it lazily from the environment.
    if name == "app":
        value = create_app()
        globals()["app"] = value
        return value
    raise AttributeError(name)
