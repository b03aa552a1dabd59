"""Deliver a worker's output records to Kafka, whatever the broker is going through.

The worker acks its input only after its outputs (scores, mentions, alerts,
dead letters) were taken by the broker with ``acks=all``, so delivery retries
transient broker trouble for as long as it takes, and isolates a record the
broker refuses for what it is (its size) instead of failing the batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

from streams.contracts import metrics
from streams.contracts.records import DeadLetter

__all__ = ["deliver", "UndeliverableRecord"]

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
            metrics.DELIVERY_RETRIES.inc()
            log.warning("sending %s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
