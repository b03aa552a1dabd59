"""tansu's end offset after a multi-record batch, and the marker that makes table recovery read to the end."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streams.aggregation.agent import changelog_topic
from streams.kafka.changelog import mark_changelog_end
from streams.contracts.settings import KafkaSettings, Settings
from streams.kafka.topics import create_topics

pytestmark = pytest.mark.integration


async def _end_offset(kafka: KafkaSettings, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def _scenario(broker_url: str) -> tuple[int, int, int]:
    from aiokafka import AIOKafkaProducer

    settings = Settings(kafka=KafkaSettings(broker=broker_url, consumer_group=f"g-{uuid.uuid4().hex[:6]}"))
    topic = changelog_topic(settings)
    assert await mark_changelog_end(settings.kafka, topic) == 0  # no changelog yet: nothing to do
    await create_topics(settings.kafka, {topic: 1})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=50)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, b"{}", key=b'"T%d"' % i, partition=0) for i in range(10)])
    finally:
        await producer.stop()
    before = await _end_offset(settings.kafka, topic)
    written = await mark_changelog_end(settings.kafka, topic)
    after = await _end_offset(settings.kafka, topic)
    return before, written, after


def test_marker_makes_the_changelog_end_offset_right(broker):
    before, written, after = asyncio.run(_scenario(broker.url))
    assert written == 1
    # tansu reports base offset + 1 after the 10-record batch (if this fails, the broker reports end
    # offsets right and the marker is no longer needed); after the marker it reports all 11 records
    assert before == 1
    assert after == 11
