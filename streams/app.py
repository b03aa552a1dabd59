"""The Faust application: topics, the scoring agent and its lifecycle.

Delivery guarantee: at-least-once into Kafka topics, effectively-once into
InfluxDB. The agent takes events with ``noack_take`` and acks them only after
InfluxDB accepted the batch and the scores/dead letters were delivered, and
the consumer (:mod:`streams.consumer`) never commits past a message still in
flight. A crash re-delivers at most the un-acked tail; the idempotent point
identity (:mod:`streams.points`) makes that re-delivery a no-op in InfluxDB.

Run it with ``finsentry worker`` (or ``faust -A streams.app worker``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import faust

from streams.aggregate import attach_aggregation
from streams.consumer import SafeCommitApp
from streams.model import SentimentModel, load_model
from streams.notify import attach_webhook
from streams.publish import deliver
from streams.records import DeadLetter, Mention, Score
from streams.scoring import BatchResult, BatchScorer, Incoming
from streams.settings import Settings, load_settings
from streams.sink import make_sink
from streams.swap import ModelWatcher
from streams.tickers import default_extractor

__all__ = ["create_app", "app"]

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    ssl_context = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        ssl_context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        if k.ssl_certfile:
            ssl_context.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism,
            ssl_context=ssl_context,
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def create_app(settings: Settings | None = None) -> faust.App:
    """Build the worker app from settings (env/file when not given)."""
    settings = settings or load_settings()
    app = SafeCommitApp(
        settings.kafka.consumer_group,
        broker=settings.kafka.broker,
        broker_credentials=_credentials(settings),
        broker_session_timeout=settings.kafka.session_timeout,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        table_standby_replicas=0,
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=True,
        store="memory://",
        datadir=str(settings.data_dir),
        web_enabled=settings.web_port != 0,
        web_port=settings.web_port or 6066,
        web_bind="127.0.0.1",
        stream_wait_empty=False,
    )
    app.fetch_max_wait_ms = settings.kafka.fetch_max_wait_ms
    app.finsentry_settings = settings  # type: ignore[attr-defined]

    t = settings.topics
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    inputs = app.topic(t.news, t.social, **raw)
    scores_topic = app.topic(t.scores, key_type=bytes, value_type=Score, key_serializer="raw")
    dead_topic = app.topic(t.dead_letter, key_type=bytes, value_type=DeadLetter, key_serializer="raw")
    kind_by_topic = {t.news: "news", t.social: "social"}
    aggregation = attach_aggregation(app, settings, dead_topic) if settings.alerts.enabled else None
    mentions_topic = aggregation["mentions_topic"] if aggregation else None
    if aggregation and settings.alerts.webhook_url is not None:
        attach_webhook(app, settings, aggregation["alerts_topic"], dead_topic)

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    sink = make_sink(settings.influx)
    state: dict[str, BatchScorer] = {}

    r = settings.runtime

    def _load(directory: Path) -> SentimentModel:
        return load_model(directory, variant=settings.model_variant, providers=r.providers,
                          intra_op_threads=r.intra_op_threads, max_batch=r.max_batch, parallel=r.parallel,
                          chunk_overlap=r.chunk_overlap, max_chunks=r.max_chunks, warm_up=r.warm_up)

    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
    watcher = ModelWatcher(settings.model_dir, _load, loader)

    async def _start_scorer() -> BatchScorer:
        # Loaded inside the agent, before its first batch: loading reads and
        # hashes the model files, so it runs in a thread, off the loop.
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(loader, _load, settings.model_dir)
        await sink.start()
        log.info(
            "worker ready: %s + %s -> %s; batch %d within %.2fs; model %s %s (%s) on %s; sink %s %s; settings %s",
            t.news, t.social, t.scores, settings.batch.size, settings.batch.wait, model.name, model.version,
            model.variant, model.provider, settings.influx.api.value, settings.influx.url, settings.redacted(),
        )
        extractor = default_extractor() if settings.extract_tickers else None
        scorer = BatchScorer(model, sink, kind_by_topic=kind_by_topic, executor=executor,
                             max_text_chars=settings.batch.max_text_chars,
                             extract_tickers=extractor.extract if extractor else None)
        state["scorer"] = scorer
        return scorer

    if r.reload_interval > 0:

        @app.timer(interval=r.reload_interval)
        async def _reload_model() -> None:
            scorer = state.get("scorer")
            if scorer is not None and (new := await watcher.check(scorer.model)) is not None:
                scorer.model = new  # the next batch uses it; in-flight batches keep theirs

    source_watermarks: dict[str, float] = {}  # input "topic:partition" -> latest published_at seen (epoch s)

    def _mentions(result: BatchResult) -> list[Mention]:
        if mentions_topic is None:
            return []
        out = []
        for s, source in zip(result.scores, result.sources):
            wm = max(source_watermarks.get(source, float("-inf")), s.published_at.timestamp())
            source_watermarks[source] = wm
            out += [Mention(id=s.id, ticker=ticker, published_at=s.published_at, score=s.score, label=s.label,
                            source=s.source, kind=s.kind, headline=s.headline, model_version=s.model_version,
                            source_partition=source, source_watermark=wm)
                    for ticker in s.tickers]
        return out

    async def _publish(result: BatchResult) -> None:
        """Deliver scores, dead letters and mentions (acks=all), retrying until the broker takes them."""
        await deliver(
            [(scores_topic, s.id.encode("utf-8"), s) for s in result.scores]
            + [(dead_topic, (d.item_id or "").encode("utf-8") or None, d) for d in result.dead_letters]
            + [(mentions_topic, m.ticker.encode("utf-8"), m) for m in _mentions(result)],
            f"{len(result.scores)} scores / {len(result.dead_letters)} dead letters",
        )

    @app.agent(inputs, name="score-items")
    async def score_items(stream: faust.StreamT) -> None:
        await _start_scorer()
        try:
            await _consume(stream)
        finally:
            await sink.stop()

    failures: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> unexpected failures

    async def _process(batch: list[Incoming]) -> BatchResult:
        """Score a batch; if it fails unexpectedly, score its messages one by one, so one bad message
        costs one dead letter: a message that fails twice on its own is dead-lettered, never retried forever."""
        scorer = state["scorer"]
        try:
            return await scorer.process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not stop the stream nor lose the batch
            if len(batch) > 1:
                log.exception("batch of %d failed unexpectedly; scoring its messages one by one", len(batch))
                results = [await _process([msg]) for msg in batch]
                return BatchResult.merge(results)
            msg = batch[0]
            key = (msg.topic, msg.partition, msg.offset)
            failures[key] = failures.get(key, 0) + 1
            if failures[key] < 2:
                log.exception("%s[%d]@%d failed unexpectedly; trying it once more", *key)
                return await _process(batch)
            del failures[key]
            return BatchResult(dead_letters=[scorer.dead_letter(
                msg, "score", f"internal error (failed twice): {type(exc).__name__}: {exc}", None,
                datetime.now(timezone.utc))])

    async def _consume(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(settings.batch.size, within=settings.batch.wait):
            batch = [
                Incoming(
                    topic=e.message.topic, partition=e.message.partition, offset=e.message.offset,
                    key=e.message.key, value=e.message.value, timestamp=e.message.timestamp,
                )
                for e in events
            ]
            result = await _process(batch)
            await _publish(result)
            for event in events:
                await stream.ack(event)
            log.debug("batch %d: %d scored, %d dead-lettered, %.1f ms", len(batch),
                      len(result.scores), len(result.dead_letters), result.total_ms)

    app.finsentry_state = state  # type: ignore[attr-defined]
    app.finsentry_aggregation = aggregation  # type: ignore[attr-defined]
    return app


def __getattr__(name: str) -> Any:
    # `faust -A streams.app` imports `app`; build it lazily from the environment.
    if name == "app":
        value = create_app()
        globals()["app"] = value
        return value
    raise AttributeError(name)
