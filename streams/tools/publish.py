"""Publish JSONL/CSV files of items to the input topics (key = item id).

Lines are sent byte for byte (JSONL) so that whatever is in the file, good or
bad, reaches the worker exactly as written; routing to the news or social
topic follows the item's fields (``headline`` -> news, ``text`` -> social)
unless a topic is forced.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from streams.contracts.settings import KafkaSettings, TopicSettings
from streams.kafka.security import client_kwargs

import typer
from typing import Optional

from streams.tools.options import BrokerOpt, console, settings_with

__all__ = ["Outgoing", "read_items", "route", "publish"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


def _csv_rows(path: Path) -> Iterator[bytes]:
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            item = {k: v for k, v in row.items() if k and v not in (None, "")}
            if "tickers" in item:
                item["tickers"] = [t for t in item["tickers"].replace(",", " ").replace(";", " ").split() if t]
            yield json.dumps(item, ensure_ascii=False).encode("utf-8")


def read_items(path: Path) -> Iterator[bytes]:
    """Raw item payloads from a ``.jsonl`` (one per line) or ``.csv`` file."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path)
        return
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def route(payload: bytes, topics: TopicSettings, force_topic: str | None = None) -> Outgoing:
    """Pick topic and key; unparseable payloads still go out (the worker dead-letters them)."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        data = None
    key = None
    topic = force_topic or topics.news
    if isinstance(data, dict):
        if isinstance(data.get("id"), str):
            key = data["id"].encode("utf-8")
        if not force_topic and data.get("text") and not data.get("headline"):
            topic = topics.social
    return Outgoing(topic, key, payload)


async def publish(messages: Iterable[Outgoing], kafka: KafkaSettings, *, rate: float | None = None,
                  on_sent=None, max_request_size: int = 1_048_576) -> int:
    """Send every message and wait for the broker's acks (acks=all)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(acks="all", linger_ms=5, max_request_size=max_request_size, **client_kwargs(kafka))
    await producer.start()
    sent = 0
    pending = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for message in messages:
            if rate:
                delay = started + sent / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(
                message.topic, message.value, key=message.key, timestamp_ms=message.timestamp_ms))
            sent += 1
            if on_sent:
                on_sent(sent)
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def command(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help=".jsonl or .csv files of items"),
    broker: Optional[str] = BrokerOpt,
    topic: Optional[str] = typer.Option(None, help="send everything to this topic instead of routing"),
    rate: Optional[float] = typer.Option(None, help="items per second (default: as fast as possible)"),
    event_time: bool = typer.Option(False, help="use published_at as the Kafka message timestamp"),
) -> None:
    """Publish items to the input topics, key = item id. Lines are sent as written."""
    settings = settings_with(broker)

    def messages():
        for path in files:
            for payload in read_items(path):
                out = route(payload, settings.topics, topic)
                if event_time:
                    out = _with_event_time(out)
                yield out

    count = asyncio.run(publish(messages(), settings.kafka, rate=rate))
    console.print(f"published {count} items to {settings.kafka.broker}")


def _with_event_time(out):
    from dataclasses import replace
    from datetime import datetime

    try:
        ts = datetime.fromisoformat(json.loads(out.value)["published_at"].replace("Z", "+00:00"))
        return replace(out, timestamp_ms=int(ts.timestamp() * 1000))
    except (ValueError, KeyError, TypeError, AttributeError):
        return out
