"""Changelog end markers: table recovery on brokers that misreport end offsets.

Faust recovers a table by reading its changelog up to the partition's end
offset. tansu 0.6 (the local broker, docs/kafka.md) reports a wrong end offset
when the last write to a partition was a multi-record batch, so recovery would
stop short and lose state. After a single-record batch the end offset is right,
so with ``FINSENTRY_KAFKA__CHANGELOG_END_MARKER`` the worker appends one
marker record before it starts (:func:`mark_changelog_end`) and after every
batch of state writes (:func:`end_changelog_batches`). Apache Kafka needs
neither.
"""

from __future__ import annotations

import json
from typing import Any

import faust

from streams.contracts.settings import KafkaSettings
from streams.kafka.security import client_kwargs

__all__ = ["CHANGELOG_END_KEY", "mark_changelog_end", "end_changelog_batches"]

#: Key of the marker record (value JSON null); table readers skip it.
CHANGELOG_END_KEY = "__changelog_end__"


async def mark_changelog_end(kafka: KafkaSettings, topic: str) -> int:
    """Append one single-record batch to every partition of ``topic``; return how many were written
    (0 when the topic does not exist yet: nothing to recover)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(group_id=None, **client_kwargs(kafka))
    await consumer.start()
    try:
        existing = await consumer.topics()  # refreshes metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or []) if topic in existing else []
    finally:
        await consumer.stop()
    if not partitions:
        return 0
    producer = AIOKafkaProducer(acks="all", linger_ms=0, **client_kwargs(kafka))
    await producer.start()
    try:
        for partition in partitions:
            await producer.send_and_wait(topic, b"null", key=json.dumps(CHANGELOG_END_KEY).encode(),
                                         partition=partition)
    finally:
        await producer.stop()
    return len(partitions)


async def end_changelog_batches(app: faust.App, table: Any, partitions: set[int]) -> None:
    """Close each written changelog partition of ``table`` with a single-record batch, so that a
    worker taking a partition over after a rebalance recovers all of it, not only a restarted one."""
    await app.producer.flush()
    for partition in sorted(partitions):
        sent = await table.changelog_topic.send(key=CHANGELOG_END_KEY, value=None, partition=partition)
        await sent
