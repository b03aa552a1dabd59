"""The scoring agent: input bytes -> Score (+ Mention per ticker) -> InfluxDB and Kafka.

Mentions go out as one :class:`MentionBatch` per partition of the mentions topic.

Batches come from ``noack_take``: nothing is acked before InfluxDB accepted the
points and the scores, mentions and dead letters were delivered (acks=all).
A batch that fails unexpectedly is scored message by message, so one bad
message costs one dead letter; a message that fails twice on its own is
dead-lettered, never retried forever. The model is loaded inside the agent
(hashing the files runs off the loop) and can be hot-swapped between batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faust

from streams.contracts import metrics
from streams.contracts.records import Mention, MentionBatch, Score, trusted
from streams.contracts.settings import Settings
from streams.influx.sink import make_sink
from streams.kafka.delivery import deliver, partitions_of
from streams.kafka.stage import OrderedStage
from streams.runtime import ModelWatcher, SentimentModel, load_model
from streams.scoring.scorer import BatchResult, BatchScorer, Incoming, Scored
from streams.scoring.tickers import default_extractor

__all__ = ["ScoringStage", "attach_scoring", "RETRIES_BEFORE_DEAD_LETTER"]

log = logging.getLogger(__name__)

#: Unexpected failures of one message, scored alone, before it is dead-lettered.
RETRIES_BEFORE_DEAD_LETTER = 2
#: Mentions per MentionBatch record at most (a mention is < 1 kB: a record stays far below 1 MB).
MENTIONS_PER_RECORD = 256


@dataclass
class ScoringStage:
    """What the scoring agent exposes to the rest of the app (and to tests)."""

    scorer: BatchScorer | None = None
    #: input "topic:partition" -> latest published_at seen there (epoch s): the mentions' watermark
    source_watermarks: dict[str, float] = field(default_factory=dict)
    #: (topic, partition, offset) -> unexpected failures of that message scored alone
    failures: dict[tuple[str, int, int], int] = field(default_factory=dict)


def _model_loader(settings: Settings):
    r = settings.runtime

    def load(directory: Path) -> SentimentModel:
        return load_model(directory, variant=settings.model_variant, providers=r.providers,
                          intra_op_threads=r.intra_op_threads, max_batch=r.max_batch, parallel=r.parallel,
                          chunk_overlap=r.chunk_overlap, max_chunks=r.max_chunks, warm_up=r.warm_up)

    return load


def _announce(model: SentimentModel) -> None:
    """The model in use, as the ``finsentry_model`` info metric (at start and after each hot swap)."""
    metrics.MODEL.info({"name": model.name, "version": model.version, "variant": model.variant,
                        "provider": model.provider})


def _count(batch: list[Incoming], result: BatchResult) -> None:
    """The batch's outcomes, one counter update per (outcome, topic) rather than per message."""
    metrics.BATCH_SIZE.observe(len(batch))
    outcomes = Counter(("received", msg.topic) for msg in batch)
    outcomes.update(("scored", source.rsplit(":", 1)[0]) for source in result.sources)
    outcomes.update(("dead_lettered", letter.topic) for letter in result.dead_letters)
    for (outcome, topic), n in outcomes.items():
        metrics.ITEMS.labels(outcome=outcome, topic=topic).inc(n)
    for stage_name, n in Counter(letter.stage for letter in result.dead_letters).items():
        metrics.DEAD_LETTERS.labels(stage=stage_name).inc(n)


def attach_scoring(app: faust.App, settings: Settings, *, dead_letters: faust.TopicT,
                   mentions: faust.TopicT | None) -> ScoringStage:
    """Declare the input, scores topics and the ``score-items`` agent on ``app``."""
    t = settings.topics
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    inputs = app.topic(t.news, t.social, **raw)
    scores = app.topic(t.scores, key_type=bytes, value_type=Score, key_serializer="raw")
    kind_by_topic = t.kind_by_topic
    stage = ScoringStage()
    sink = make_sink(settings.influx)
    # Two batches at once by default: with one, a core idled while the other finished a batch's last
    # sub-batch (12,000 items, 3 alternating runs: 601-631 -> 656-698 items/s, 1.67 -> 1.80 cores busy).
    executor = ThreadPoolExecutor(max_workers=settings.runtime.batches_at_once, thread_name_prefix="inference")
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
    load = _model_loader(settings)
    watcher = ModelWatcher(settings.model_dir, load, loader)

    async def start() -> BatchScorer:
        model = await asyncio.get_running_loop().run_in_executor(loader, load, settings.model_dir)
        await sink.start()
        log.info(
            "worker ready: %s + %s -> %s; batch %d within %.2fs; model %s %s (%s) on %s; sink %s %s; settings %s",
            t.news, t.social, t.scores, settings.batch.size, settings.batch.wait, model.name, model.version,
            model.variant, model.provider, settings.influx.api.value, settings.influx.url, settings.redacted(),
        )
        _announce(model)
        extractor = default_extractor() if settings.extract_tickers else None
        stage.scorer = BatchScorer(model, sink, kind_by_topic=kind_by_topic, executor=executor,
                                   max_text_chars=settings.batch.max_text_chars,
                                   extract_tickers=extractor.extract if extractor else None)
        return stage.scorer

    if settings.runtime.reload_interval > 0:

        @app.timer(interval=settings.runtime.reload_interval)
        async def reload_model() -> None:
            scorer = stage.scorer
            if scorer is not None and (new := await watcher.check(scorer.model)) is not None:
                scorer.model = new  # the next batch uses it; in-flight batches keep theirs
                _announce(new)

    def to_mentions(result: BatchResult) -> list[Mention]:
        out = []
        for s, source in zip(result.scores, result.sources):
            wm = max(stage.source_watermarks.get(source, float("-inf")), s.published_at.timestamp())
            stage.source_watermarks[source] = wm
            out += [trusted(Mention, dict(id=s.id, ticker=ticker, published_at=s.published_at, score=s.score,
                                          label=s.label, source=s.source, kind=s.kind, headline=s.headline,
                                          model_version=s.model_version, source_partition=source,
                                          source_watermark=wm))
                    for ticker in s.tickers]
        return out

    async def mention_batches(result: BatchResult) -> list[tuple[Any, bytes, MentionBatch]]:
        """One record per partition of the mentions topic, keyed by its first ticker."""
        assert mentions is not None
        by_partition: dict[int, list[Mention]] = {}
        batch = to_mentions(result)
        partition = await partitions_of(mentions, {m.ticker.encode("utf-8") for m in batch})
        for m in batch:
            by_partition.setdefault(partition[m.ticker.encode("utf-8")], []).append(m)
        return [(mentions, group[0].ticker.encode("utf-8"), MentionBatch(mentions=group[i : i + MENTIONS_PER_RECORD]))
                for group in by_partition.values() for i in range(0, len(group), MENTIONS_PER_RECORD)]

    async def publish(result: BatchResult) -> None:
        records: list[tuple[Any, bytes | None, Any]] = [(scores, s.id.encode("utf-8"), s) for s in result.scores]
        records += [(dead_letters, (d.item_id or "").encode("utf-8") or None, d) for d in result.dead_letters]
        if mentions is not None:
            records += await mention_batches(result)
        await deliver(records, f"{len(result.scores)} scores / {len(result.dead_letters)} dead letters")

    async def process(batch: list[Incoming]) -> BatchResult:
        scorer = stage.scorer
        assert scorer is not None
        try:
            return await scorer.process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not stop the stream nor lose the batch
            if len(batch) > 1:
                log.exception("batch of %d failed unexpectedly; scoring its messages one by one", len(batch))
                return await one_by_one(batch)
            msg = batch[0]
            key = (msg.topic, msg.partition, msg.offset)
            stage.failures[key] = stage.failures.get(key, 0) + 1
            if stage.failures[key] < RETRIES_BEFORE_DEAD_LETTER:
                log.exception("%s[%d]@%d failed unexpectedly; trying it once more", *key)
                return await process(batch)
            del stage.failures[key]
            return BatchResult(dead_letters=[scorer.dead_letter(
                msg, "score", f"internal error (failed {RETRIES_BEFORE_DEAD_LETTER} times): "
                f"{type(exc).__name__}: {exc}", None, datetime.now(timezone.utc))])

    async def one_by_one(batch: list[Incoming]) -> BatchResult:
        return BatchResult.merge([await process([msg]) for msg in batch])

    async def score(batch: list[Incoming]) -> Scored | None:
        """Decode and infer; None if that failed unexpectedly (the batch is then scored message by message)."""
        scorer = stage.scorer
        assert scorer is not None
        try:
            return await scorer.score(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch of %d failed unexpectedly; scoring its messages one by one", len(batch))
            return None

    async def store(batch: list[Incoming], scored: Scored | None) -> BatchResult:
        scorer = stage.scorer
        assert scorer is not None
        if scored is not None:
            try:
                return await scorer.store(scored)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("storing a batch of %d failed unexpectedly; scoring its messages one by one",
                              len(batch))
        return await one_by_one(batch)

    @app.agent(inputs, name="score-items")
    async def score_items(stream: faust.StreamT) -> None:
        async def finish(work: tuple[list[Any], list[Incoming], asyncio.Future[Scored | None]]) -> None:
            events, batch, scoring = work
            result = await store(batch, await scoring)
            await publish(result)
            for event in events:
                await stream.ack(event)
            _count(batch, result)
            log.debug("batch %d: %d scored, %d dead-lettered, %.1f ms", len(batch),
                      len(result.scores), len(result.dead_letters), result.total_ms)

        await start()
        # Scoring starts as soon as a batch is taken, so batch n+1 is decoded and inferred while batch n is
        # (``runtime.batches_at_once`` inference threads: they may finish out of order), and batches are
        # stored, published and acked in the background, in the order they were taken, after their scoring
        # finished.
        outputs = OrderedStage(finish, depth=settings.batch.in_flight, name="scoring outputs")
        scoring: set[asyncio.Future] = set()
        metrics.READY.set(1)
        try:
            async for events in stream.noack_take(settings.batch.size, within=settings.batch.wait):
                batch = [Incoming(topic=e.message.topic, partition=e.message.partition, offset=e.message.offset,
                                  key=e.message.key, value=e.message.value, timestamp=e.message.timestamp)
                         for e in events]
                future = asyncio.ensure_future(score(batch))
                scoring.add(future)
                future.add_done_callback(scoring.discard)
                await outputs.submit((events, batch, future))
        finally:
            metrics.READY.set(0)
            await outputs.close()
            for future in list(scoring):
                future.cancel()
            await sink.stop()

    return stage
