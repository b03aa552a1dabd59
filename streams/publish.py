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
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from streams.records import DeadLetter
from streams.settings import KafkaSettings, TopicSettings

__all__ = ["Outgoing", "read_items", "route", "publish", "producer_kwargs", "deliver", "UndeliverableRecord"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


def producer_kwargs(kafka: KafkaSettings) -> dict:
    """aiokafka client options for the configured broker and security."""
    kwargs: dict = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
        if kafka.ssl_certfile:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        )
    return kwargs


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
                  on_sent=None) -> int:
    """Send every message and wait for the broker's acks (acks=all)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(acks="all", linger_ms=5, **producer_kwargs(kafka))
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


class UndeliverableRecord(RuntimeError):
    """The broker refuses the record itself (too large); retrying cannot help."""


async def deliver(records: Sequence[tuple[Any, bytes | None, Any]], what: str) -> None:
    """Send ``(faust topic, key, value)`` records from a worker (acks=all), retrying with capped
    backoff until the broker has taken all of them. A retry may send a record twice: every
    consumer of these topics keys on ids.

    A record the broker refuses for its size is isolated from its batch; a dead letter is then
    sent again without the original bytes (their size and sha256 stay), anything else raises
    :class:`UndeliverableRecord`.
    """
    from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

    delay = 0.5
    while records:
        try:
            sends = [await topic.send(key=key, value=value, force=True) for topic, key, value in records]
            await asyncio.gather(*sends)
            return
        except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
            if len(records) > 1:
                for record in records:
                    await deliver([record], what)
                return
            topic, key, value = records[0]
            if isinstance(value, DeadLetter) and value.value_b64:
                log.error("dead letter for %s[%d]@%d too large for the broker (%s); sending it without the "
                          "original bytes", value.topic, value.partition, value.offset, exc)
                records = [(topic, key, value.without_payload())]
                continue
            raise UndeliverableRecord(f"{what}: the broker refuses the record: {exc}") from exc
        except KafkaError as exc:
            log.warning("sending %s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
