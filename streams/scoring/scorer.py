"""One micro-batch, end to end: decode -> infer (off the loop) -> InfluxDB.

Two steps, :meth:`BatchScorer.score` and :meth:`BatchScorer.store`, so the agent
can infer the next batch while the previous one is being written.

Kept free of Faust so it can be driven by the agent, the benchmark and tests
alike. The caller publishes the returned scores and dead letters, and only
then acks the Kafka messages: nothing is acked before InfluxDB accepted it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from streams.runtime.model import SentimentModel
from streams.contracts import metrics
from streams.influx.points import pipeline_point, score_points
from streams.contracts.records import DeadLetter, Item, Score, Stage, trusted
from streams.contracts.schema import MAX_TICKERS, BadInput, parse_item
from streams.influx.sink import InfluxSink

__all__ = ["Incoming", "Scored", "BatchResult", "BatchScorer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """A Kafka message as received: bytes untouched."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker/producer timestamp, seconds


@dataclass
class BatchResult:
    scores: list[Score] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # "topic:partition" of each score's input message
    dead_letters: list[DeadLetter] = field(default_factory=list)
    points: int = 0
    inference_ms: float = 0.0
    total_ms: float = 0.0

    @classmethod
    def merge(cls, results: Sequence["BatchResult"]) -> "BatchResult":
        """One result for messages that were scored in several calls."""
        merged = cls()
        for r in results:
            merged.scores += r.scores
            merged.sources += r.sources
            merged.dead_letters += r.dead_letters
            merged.points += r.points
            merged.inference_ms += r.inference_ms
            merged.total_ms += r.total_ms
        return merged


@dataclass
class Scored:
    """A batch decoded and scored, not yet written anywhere (what :meth:`BatchScorer.store` takes)."""

    batch: list[Incoming]
    now: datetime
    started: float  # perf_counter at the start of scoring
    scored: list[tuple[Incoming, Score]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    inference_ms: float = 0.0
    scored_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class BatchScorer:
    """Scores batches with the current model and writes points to the sink.

    ``model`` may be replaced between batches (hot swap); each score records
    the name and version of the model that produced it.
    """

    def __init__(
        self,
        model: SentimentModel,
        sink: InfluxSink,
        *,
        kind_by_topic: dict[str, str],
        executor: Executor | None = None,
        max_text_chars: int = 20_000,
        worker: str | None = None,
        health_points: bool = True,
        extract_tickers: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.model = model
        self.sink = sink
        self.kind_by_topic = kind_by_topic
        self.executor = executor
        self.max_text_chars = max_text_chars
        self.worker = worker or socket.gethostname()
        self.health_points = health_points
        self.extract_tickers = extract_tickers

    def dead_letter(self, msg: Incoming, stage: Stage, reason: str, item_id: str | None, now: datetime) -> DeadLetter:
        log.warning("dead-letter %s[%d]@%d (%s): %s", msg.topic, msg.partition, msg.offset, stage, reason)
        return DeadLetter.of(
            stage=stage, reason=reason, topic=msg.topic, partition=msg.partition, offset=msg.offset,
            key=msg.key, value=msg.value, failed_at=now, worker=self.worker, item_id=item_id,
        )

    def _tickers(self, item: Item) -> list[str]:
        """Tickers on the record win; otherwise the first :data:`MAX_TICKERS` the text names."""
        if item.tickers or self.extract_tickers is None:
            return list(item.tickers)
        return self.extract_tickers(item.scoring_text)[:MAX_TICKERS]

    async def _infer(self, model: SentimentModel, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, model.predict_proba, texts)

    async def _infer_isolating(
        self, model: SentimentModel, texts: list[str]
    ) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Batch inference; if the batch fails, retry item by item so one bad
        text costs one dead letter, not the whole batch."""
        try:
            probs = await self._infer(model, texts)
            return list(probs), [None] * len(texts)
        except Exception as exc:  # ORT/tokenizer errors have no common base
            log.error("batch inference failed (%s); scoring items one by one", exc)
        rows: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for text in texts:
            try:
                rows.append((await self._infer(model, [text]))[0])
                errors.append(None)
            except Exception as exc:
                rows.append(None)
                errors.append(f"inference failed: {type(exc).__name__}: {exc}")
        return rows, errors

    async def process(self, batch: Sequence[Incoming]) -> BatchResult:
        """Score a batch and store its points: :meth:`score` then :meth:`store`."""
        return await self.store(await self.score(batch))

    async def score(self, batch: Sequence[Incoming]) -> Scored:
        """Decode and infer (off the loop); nothing is written yet."""
        started = time.perf_counter()
        now = datetime.now(timezone.utc)
        out = Scored(batch=list(batch), now=now, started=started)

        items: list[tuple[Incoming, Item]] = []
        for msg in batch:
            try:
                kind = self.kind_by_topic.get(msg.topic, "news")
                items.append((msg, parse_item(msg.value, kind=kind, max_text_chars=self.max_text_chars)))
            except BadInput as bad:
                out.dead_letters.append(self.dead_letter(msg, bad.stage, bad.reason, bad.item_id, now))

        model = self.model  # one model per batch, even if swapped meanwhile
        t0 = time.perf_counter()
        rows, errors = await self._infer_isolating(model, [item.scoring_text for _, item in items])
        out.inference_ms = (time.perf_counter() - t0) * 1000
        metrics.INFERENCE_SECONDS.observe(out.inference_ms / 1000)

        out.scored_at = scored_at = datetime.now(timezone.utc)
        labels = model.labels
        index = {label: i for i, label in enumerate(labels)}
        for (msg, item), row, error in zip(items, rows, errors):
            if row is None:
                out.dead_letters.append(self.dead_letter(msg, "score", error or "inference failed", item.id, now))
                continue
            p_neg, p_neu, p_pos = (float(row[index[k]]) for k in ("negative", "neutral", "positive"))
            out.scored.append((msg, trusted(Score, dict(
                id=item.id, source=item.source, published_at=item.published_at, tickers=self._tickers(item),
                label=labels[int(np.argmax(row))], p_negative=p_neg, p_neutral=p_neu, p_positive=p_pos,
                score=p_pos - p_neg, model_name=model.name, model_version=model.version,
                scored_at=scored_at, kind=item.kind, headline=item.title,
            ))))
        return out

    async def store(self, scored: Scored) -> BatchResult:
        """Write a scored batch's points (and its health point) to InfluxDB; a point InfluxDB rejects
        makes its item a dead letter."""
        result = BatchResult(dead_letters=list(scored.dead_letters), inference_ms=scored.inference_ms)
        lines: list[str] = []
        owner: list[int] = []  # line -> index in `scored.scored`
        for i, (_, score) in enumerate(scored.scored):
            for line in score_points(score):
                lines.append(line)
                owner.append(i)
        latencies = [
            max(0.0, scored.scored_at.timestamp() - msg.timestamp) * 1000 for msg, _ in scored.scored if msg.timestamp
        ]
        health = None
        if self.health_points and scored.batch:
            health = pipeline_point(
                worker=self.worker, at=scored.scored_at, items=len(scored.batch), scored=len(scored.scored),
                dead_letters=len(result.dead_letters), batch_ms=(time.perf_counter() - scored.started) * 1000,
                inference_ms=result.inference_ms,
                latency_p50_ms=float(statistics.median(latencies)) if latencies else 0.0,
                latency_max_ms=max(latencies, default=0.0),
            )
        with metrics.SINK_WRITE_SECONDS.labels(stage="scoring").time():
            rejected = await self.sink.write(lines + ([health] if health else []))

        bad_rows: dict[int, str] = {}
        for rej in rejected:
            if rej.index < len(owner):
                bad_rows.setdefault(owner[rej.index], rej.reason)
            else:
                log.error("pipeline health point rejected: %s", rej.reason)
        for i, (msg, score) in enumerate(scored.scored):
            if i in bad_rows:
                result.dead_letters.append(self.dead_letter(
                    msg, "sink", f"InfluxDB rejected the point: {bad_rows[i]}", score.id, scored.now))
            else:
                result.scores.append(score)
                result.sources.append(f"{msg.topic}:{msg.partition}")
        result.points = len(lines) - sum(1 for r in rejected if r.index < len(owner))
        result.total_ms = (time.perf_counter() - scored.started) * 1000
        return result
