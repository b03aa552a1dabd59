"""Deliver a worker's output records to Kafka, whatever the broker is going through.

The worker acks its input only after its outputs (scores, mentions, alerts,
dead letters) were taken by the broker with ``acks=all``, so delivery retries
transient broker trouble for as long as it takes, and isolates a record the
broker refuses for what it is (its size) instead of failing the batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Iterator, Sequence

from streams.contracts import metrics
from streams.contracts.records import DeadLetter

__all__ = ["deliver", "partitions_of", "UndeliverableRecord"]

log = logging.getLogger(__name__)


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

    delays = _backoff()
    while records:
        try:
            await _send_batches(records)
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
            await _wait_retry(delays, f"sending {what}", exc)


async def partitions_of(topic: Any, keys: Iterable[bytes]) -> dict[bytes, int]:
    """The partition of ``topic`` (a Faust topic) each key goes to, as :func:`deliver` would send it."""
    from aiokafka.errors import KafkaError

    producer = _producer(topic.app)
    name = topic.get_topic_name()
    delays = _backoff()
    while True:
        try:
            await producer.partitions_for(name)  # cached after the first call; waits for the broker before it
            break
        except KafkaError as exc:
            await _wait_retry(delays, f"partitions of {name}", exc)
    return {key: producer._partition(name, None, None, None, key, None) for key in keys}


def _backoff() -> Iterator[float]:
    """Seconds between retries: 0.5, 1, 2, … capped at 30."""
    delay = 0.5
    while True:
        yield delay
        delay = min(delay * 2, 30.0)


async def _wait_retry(delays: Iterator[float], what: str, exc: Exception) -> None:
    delay = next(delays)
    metrics.DELIVERY_RETRIES.inc()
    log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
    await asyncio.sleep(delay)


def _producer(app: Any) -> Any:
    """The aiokafka producer under Faust's (its private ``_producer``: faust-streaming 0.15 pins it)."""
    producer = getattr(app.producer, "_producer", None)
    if producer is None or not hasattr(producer, "send_batch"):
        raise RuntimeError("Faust's producer is not an aiokafka producer, or has not started")
    return producer


async def _send_batches(records: Sequence[tuple[Any, bytes | None, Any]]) -> None:
    """Send records grouped into one produce batch per topic partition and wait for all of them.

    What Faust's ``Topic.send`` does record by record (a future, callbacks and a sensor call each),
    at a fraction of the event-loop work: this is most of the worker's output. Records are
    serialized as Faust would (``Record.dumps``) and partitioned by aiokafka's own partitioner,
    so a key lands in the same partition as before.
    """
    from aiokafka.errors import MessageSizeTooLargeError

    producer = _producer(records[0][0].app)
    builders: dict[tuple[str, int], list[Any]] = {}
    known: set[str] = set()
    for topic, key, value in records:
        name = topic.get_topic_name()
        payload = value if value is None or isinstance(value, bytes) else value.dumps()
        if len(payload or b"") + len(key or b"") > producer._max_request_size:
            raise MessageSizeTooLargeError(f"{len(payload or b'')} bytes, more than max_request_size")
        if name not in known:
            await producer.partitions_for(name)
            known.add(name)
        partition = producer._partition(name, None, None, None, key, payload)
        batches = builders.setdefault((name, partition), [producer.create_batch()])
        if batches[-1].append(key=key, value=payload, timestamp=None) is None:  # full: start another
            batches.append(producer.create_batch())
            batches[-1].append(key=key, value=payload, timestamp=None)
    sent = [await producer.send_batch(batch, name, partition=partition)
            for (name, partition), batches in builders.items() for batch in batches]
    await asyncio.gather(*sent)
