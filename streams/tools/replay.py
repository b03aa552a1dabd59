"""Replay historical items into the input topics in event time.

Sources: JSONL, CSV or Parquet files (any mix, read in order), or a time range
of an existing Kafka topic. Every message carries its item's ``published_at``
as the Kafka timestamp and two headers, ``finsentry-run`` and
``finsentry-seq`` (the item's position in the replay), so a replay can be
resumed exactly:

* a checkpoint file (JSON, written atomically after every acknowledged batch)
  holds the run id, the next sequence number and, per topic partition, the
  offset after the last acknowledged batch;
* on resume the tool reads each partition from that offset and skips every
  sequence number of this run that is already there (a batch that reached the
  broker but not the checkpoint), then continues: nothing is published twice.

Speed: ``real`` (event-time gaps kept), ``10x`` (gaps divided by 10) or
``max``. At ``max`` the tool keeps the scoring group's lag (published minus
committed offsets) under ``max_lag`` messages, so a replay never floods the
broker faster than the workers drain it.

The pipeline works in event time and its outputs are keyed by item id, so a
replay at any speed yields the same points and alert keys as any other
(``tests/test_replay.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable, Iterator

from streams.kafka.security import client_kwargs
from streams.tools.publish import read_items, route
from streams.contracts.settings import KafkaSettings, TopicSettings

import typer
from typing import Optional

from streams.tools.options import BrokerOpt, console, settings_with

__all__ = ["parse_speed", "read_sources", "topic_range", "Checkpoint", "ReplayOptions", "ReplayStats", "replay",
           "RUN_HEADER", "SEQ_HEADER"]

RUN_HEADER = "finsentry-run"
SEQ_HEADER = "finsentry-seq"


def parse_speed(text: str) -> float | None:
    """``max`` -> None, ``real`` -> 1.0, ``10x``/``10`` -> 10.0.

    >>> parse_speed("max"), parse_speed("real"), parse_speed("25x"), parse_speed("0.5")
    (None, 1.0, 25.0, 0.5)
    """
    value = text.strip().lower()
    if value == "max":
        return None
    if value == "real":
        return 1.0
    try:
        speed = float(value.removesuffix("x"))
    except ValueError:
        raise ValueError(f"speed must be 'real', 'max' or a multiple like '10x', not {text!r}") from None
    if speed <= 0:
        raise ValueError("speed must be positive")
    return speed


def _parquet_rows(path: Path) -> Iterator[bytes]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading Parquet needs pyarrow: pip install 'finsentry[parquet]'") from None

    table = pq.read_table(path)
    for row in table.to_pylist():
        item = {k: v for k, v in row.items() if v is not None}
        for key, value in list(item.items()):
            if isinstance(value, datetime):
                item[key] = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
        yield json.dumps(item, ensure_ascii=False).encode("utf-8")


def read_sources(paths: Iterable[Path]) -> Iterator[bytes]:
    """Raw item payloads from ``.jsonl`` (also ``.jsonl.gz``), ``.csv`` and ``.parquet`` files, in order."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"replay source {path} does not exist")
        if path.suffix.lower() == ".parquet":
            yield from _parquet_rows(path)
        elif path.suffix.lower() == ".gz":  # gzipped JSONL
            import gzip

            with gzip.open(path, "rb") as fh:
                for line in fh:
                    line = line.rstrip(b"\r\n")
                    if line.strip():
                        yield line
        else:
            yield from read_items(path)


def event_time_ms(payload: bytes) -> int | None:
    """``published_at`` of a payload in epoch ms (None when it has none or is not JSON)."""
    try:
        value = json.loads(payload).get("published_at")
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        return None
    if ts.tzinfo is None:
        return None
    return int(ts.timestamp() * 1000)


async def topic_range(kafka: KafkaSettings, topic: str, start: datetime | None, end: datetime | None,
                      idle_s: float = 2.0) -> AsyncIterator[bytes]:
    """Values of ``topic`` with message timestamps in ``[start, end)``, partition by partition."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                **client_kwargs(kafka))
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
        for p in partitions:
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            if start is not None:
                try:
                    found = await consumer.offsets_for_times({tp: int(start.timestamp() * 1000)})
                    if found.get(tp) is not None:
                        consumer.seek(tp, found[tp].offset)
                except Exception:  # brokers without timestamp lookup: scan from the beginning
                    pass
            while True:
                batch = await consumer.getmany(tp, timeout_ms=int(idle_s * 1000))
                records = batch.get(tp, [])
                if not records:
                    break
                for record in records:
                    if start is not None and record.timestamp < start.timestamp() * 1000:
                        continue
                    if end is not None and record.timestamp >= end.timestamp() * 1000:
                        break
                    yield record.value
                else:
                    continue
                break
    finally:
        await consumer.stop()


async def _partitions(consumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
    return consumer.partitions_for_topic(topic) or {0}


@dataclass
class Checkpoint:
    """Where a replay stands; survives the process (atomic JSON file)."""

    path: Path
    run_id: str
    next_seq: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset after our acks
    sources: list[str] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def load_or_new(cls, path: Path, run_id: str | None, sources: list[str]) -> "Checkpoint":
        path = Path(path)
        if path.exists():
            data = json.loads(path.read_text())
            if run_id and data["run_id"] != run_id:
                raise ValueError(f"{path} belongs to run {data['run_id']!r}, not {run_id!r}; use another --state file")
            if data.get("sources") != sources:
                raise ValueError(f"{path} was written for sources {data.get('sources')}, not {sources}")
            return cls(path, data["run_id"], data["next_seq"], data.get("offsets", {}), data.get("sources", []),
                       data.get("finished", False))
        run = run_id or f"replay-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        return cls(path, run, sources=sources)

    def save(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"run_id": self.run_id, "next_seq": self.next_seq, "offsets": self.offsets,
                                   "sources": self.sources, "finished": self.finished,
                                   "saved_at": datetime.now(timezone.utc).isoformat()}, indent=2) + "\n")
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class ReplayOptions:
    speed: float | None = None  # None = max
    batch_size: int = 500
    max_lag: int = 5000
    lag_group: str | None = None  # the scoring workers' consumer group (back-pressure at max speed)
    force_topic: str | None = None


@dataclass
class ReplayStats:
    run_id: str
    sent: int = 0
    skipped: int = 0  # already published by an interrupted earlier attempt
    elapsed_s: float = 0.0
    waited_for_lag_s: float = 0.0
    first_event: datetime | None = None
    last_event: datetime | None = None

    @property
    def items_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0


def _tp(key: str):
    """``"topic:partition"`` (the checkpoint's offset keys) -> TopicPartition."""
    from aiokafka.structs import TopicPartition

    topic, partition = key.rsplit(":", 1)
    return TopicPartition(topic, int(partition))


async def _aiter(payloads: Iterable[bytes] | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Files give a plain iterator, a topic range an async one: iterate both the same way."""
    if hasattr(payloads, "__aiter__"):
        async for payload in payloads:  # type: ignore[union-attr]
            yield payload
    else:
        for payload in payloads:  # type: ignore[union-attr]
            yield payload


async def _already_published(kafka: KafkaSettings, checkpoint: Checkpoint) -> set[int]:
    """Sequence numbers of this run found after the checkpointed offsets."""
    if not checkpoint.offsets:
        return set()
    from aiokafka import AIOKafkaConsumer

    seen: set[int] = set()
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **client_kwargs(kafka))
    await consumer.start()
    try:
        for key, offset in checkpoint.offsets.items():
            tp = _tp(key)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1500)
                records = batch.get(tp, [])
                if not records:
                    break
                for record in records:
                    headers = dict(record.headers or ())
                    if headers.get(RUN_HEADER, b"").decode() == checkpoint.run_id:
                        seen.add(int(headers[SEQ_HEADER]))
    finally:
        await consumer.stop()
    return seen


class LagProbe:
    """Published-minus-committed offsets of the scoring group (OffsetFetch via the group coordinator;
    a consumer that never subscribes, so it never joins the group)."""

    def __init__(self, kafka: KafkaSettings, group: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(kafka))

    async def start(self) -> None:
        await self._consumer.start()

    async def close(self) -> None:
        await self._consumer.stop()

    async def lag(self, produced: dict) -> int:
        total = 0
        for tp, end in produced.items():
            committed = await self._consumer.committed(tp)
            total += end - (committed or 0)
        return total


async def replay(payloads: Iterable[bytes] | AsyncIterator[bytes], kafka: KafkaSettings, topics: TopicSettings,
                 checkpoint: Checkpoint, options: ReplayOptions = ReplayOptions(),
                 on_progress: Callable[[ReplayStats], None] | None = None) -> ReplayStats:
    """Publish ``payloads`` (resuming ``checkpoint``) and return what happened."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    stats = ReplayStats(checkpoint.run_id)
    done_before = await _already_published(kafka, checkpoint)
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **client_kwargs(kafka))
    probe = None
    if options.speed is None and options.lag_group:
        probe = LagProbe(kafka, options.lag_group)
        await probe.start()
    await producer.start()
    produced: dict = {_tp(k): v for k, v in checkpoint.offsets.items()}
    started = time.monotonic()
    first_event_ms: int | None = None
    pending: list = []

    async def flush(upto_seq: int) -> None:
        if pending:
            for meta in await asyncio.gather(*pending):
                tp = TopicPartition(meta.topic, meta.partition)
                produced[tp] = max(produced.get(tp, 0), meta.offset + 1)
            pending.clear()
        checkpoint.next_seq = upto_seq
        checkpoint.offsets = {f"{tp.topic}:{tp.partition}": off for tp, off in produced.items()}  # see _tp
        checkpoint.save()

    try:
        seq = -1
        async for payload in _aiter(payloads):
            seq += 1
            if seq < checkpoint.next_seq:
                continue  # acknowledged in an earlier attempt
            if seq in done_before:
                stats.skipped += 1
                continue
            ts_ms = event_time_ms(payload)
            if ts_ms is not None:
                if first_event_ms is None:
                    first_event_ms = ts_ms
                if options.speed is not None:
                    due = started + (ts_ms - first_event_ms) / 1000 / options.speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        if pending:
                            await flush(seq)
                        await asyncio.sleep(delay)
                event = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
                stats.first_event = stats.first_event or event
                stats.last_event = event
            message = route(payload, topics, options.force_topic)
            pending.append(await producer.send(
                message.topic, message.value, key=message.key, timestamp_ms=ts_ms,
                headers=[(RUN_HEADER, checkpoint.run_id.encode()), (SEQ_HEADER, str(seq).encode())]))
            stats.sent += 1
            if len(pending) >= options.batch_size:
                await flush(seq + 1)
                if probe is not None:
                    wait_started = time.monotonic()
                    while await probe.lag(produced) > options.max_lag:
                        await asyncio.sleep(0.2)
                    stats.waited_for_lag_s += time.monotonic() - wait_started
            stats.elapsed_s = time.monotonic() - started
            if on_progress and stats.sent % 100 == 0:
                on_progress(stats)
        await flush(seq + 1)
        checkpoint.finished = True
        checkpoint.save()
    finally:
        await producer.stop()
        if probe is not None:
            await probe.close()
    stats.elapsed_s = time.monotonic() - started
    if on_progress:
        on_progress(stats)
    return stats


def command(
    files: list[Path] = typer.Argument(None, help="JSONL, CSV or Parquet files of items, replayed in order"),
    speed: str = typer.Option("max", help="real | max | a multiple like 10x"),
    state: Path = typer.Option(Path("replay-state.json"), help="checkpoint file: resume by running the same command"),
    run_id: Optional[str] = typer.Option(None, help="run id (default: replay-<time>-<random>); kept in the state file"),
    from_topic: Optional[str] = typer.Option(None, help="replay a time range of this Kafka topic instead of files"),
    start: Optional[datetime] = typer.Option(None, help="with --from-topic: first message timestamp (UTC)"),
    end: Optional[datetime] = typer.Option(None, help="with --from-topic: end of the range (exclusive)"),
    max_lag: int = typer.Option(5000, help="at max speed: most messages the scoring group may lag behind"),
    batch: int = typer.Option(500, help="messages per acknowledged batch (and checkpoint)"),
    topic: Optional[str] = typer.Option(None, help="send everything to this topic (default: news/social by item)"),
    broker: Optional[str] = BrokerOpt,
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Replay historical items into the input topics in event time (resumable; see docs/replay.md)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


    settings = settings_with(broker)
    if not files and not from_topic:
        typer.echo("error: give files to replay or --from-topic", err=True)
        raise typer.Exit(2)
    try:
        speed_value = parse_speed(speed)
        sources = [str(f) for f in files] if files else [f"kafka:{from_topic}:{start}:{end}"]
        checkpoint = Checkpoint.load_or_new(state, run_id, sources)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if checkpoint.finished:
        console.print(f"run {checkpoint.run_id} already finished ({checkpoint.next_seq} items); nothing to do")
        return
    if files:
        missing = [f for f in files if not f.exists()]
        if missing:
            typer.echo(f"error: no such file: {', '.join(map(str, missing))}", err=True)
            raise typer.Exit(2)
        payloads = read_sources(files)
    else:
        payloads = topic_range(settings.kafka, from_topic, _utc(start), _utc(end))
    options = ReplayOptions(speed=speed_value, batch_size=batch, max_lag=max_lag,
                            lag_group=settings.kafka.consumer_group, force_topic=topic)
    console.print(f"run {checkpoint.run_id}: replaying {', '.join(sources)} at {speed} "
                  f"(resuming at item {checkpoint.next_seq})" if checkpoint.next_seq else
                  f"run {checkpoint.run_id}: replaying {', '.join(sources)} at {speed}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} items"),
                  TextColumn("{task.fields[rate]:.0f} items/s"), TextColumn("event time {task.fields[event]}"),
                  TimeElapsedColumn(), console=console, disable=quiet) as bar:
        task = bar.add_task(checkpoint.run_id, total=None, rate=0.0, event="-")

        def progress(stats) -> None:
            event = stats.last_event.strftime("%Y-%m-%d %H:%M:%S") if stats.last_event else "-"
            bar.update(task, completed=stats.sent, rate=stats.items_per_s, event=event)

        stats = asyncio.run(replay(payloads, settings.kafka, settings.topics, checkpoint, options, progress))
    typer.echo(json.dumps({
        "run_id": stats.run_id, "sent": stats.sent, "skipped_already_published": stats.skipped,
        "items_per_s": round(stats.items_per_s, 1), "elapsed_s": round(stats.elapsed_s, 2),
        "waited_for_lag_s": round(stats.waited_for_lag_s, 2),
        "first_event": stats.first_event.isoformat() if stats.first_event else None,
        "last_event": stats.last_event.isoformat() if stats.last_event else None, "state": str(state)}, indent=2))


def _utc(value: Optional[datetime]) -> Optional[datetime]:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
