"""Output delivery on a real broker: batched per partition, keyed as Faust would, too-large records isolated."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timezone

import faust
import pytest

from streams.contracts.records import DeadLetter, Score
from streams.contracts.settings import KafkaSettings
from streams.kafka.delivery import deliver
from streams.kafka.topics import create_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _score(i: int) -> Score:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    return Score(id=f"item-{i}", source="wire", published_at=now, tickers=["ACME"], label="neutral",
                 p_negative=0.1, p_neutral=0.8, p_positive=0.1, score=0.0, model_name="m", model_version="1",
                 scored_at=now, kind="news", headline=f"headline {i} é")


async def _read_all(kafka: KafkaSettings, topic: str, expected: int) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        while len(records) < expected:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for rows in batch.values():
                records += rows
    finally:
        await consumer.stop()
    return records


async def _scenario(broker_url: str):
    kafka = KafkaSettings(broker=broker_url)
    scores_name, letters_name = f"scores-{uuid.uuid4().hex[:6]}", f"letters-{uuid.uuid4().hex[:6]}"
    await create_topics(kafka, {scores_name: PARTITIONS, letters_name: 1})
    app = faust.App(f"delivery-{uuid.uuid4().hex[:6]}", broker=broker_url, producer_acks=-1,
                    producer_max_request_size=200_000)
    scores = app.topic(scores_name, key_type=bytes, value_type=Score, key_serializer="raw")
    letters = app.topic(letters_name, key_type=bytes, value_type=DeadLetter, key_serializer="raw")
    big = b"x" * 180_000  # base64 in the dead letter: 240 kB, more than the producer's 200 kB limit
    letter = DeadLetter.of(stage="validate", reason="too long", topic="news.items", partition=0, offset=7,
                           key=b"k", value=big, failed_at=datetime.now(timezone.utc))
    sent = [_score(i) for i in range(300)]
    await app.producer.start()
    try:
        await deliver([(scores, s.id.encode(), s) for s in sent] + [(letters, None, letter)], "test")
        partition_of = {s.id: app.producer.key_partition(scores_name, s.id.encode()).partition for s in sent}
    finally:
        await app.producer.stop()
    return (await _read_all(kafka, scores_name, len(sent)), await _read_all(kafka, letters_name, 1),
            sent, partition_of, big)


def test_deliver_sends_every_record_keyed_like_faust_and_isolates_one_too_large(broker):
    got, letters, sent, partition_of, big = asyncio.run(_scenario(broker.url))
    by_key = {r.key.decode(): r for r in got}
    assert len(got) == len(sent) and set(by_key) == {s.id for s in sent}  # all there, none twice
    for s in sent:
        record = by_key[s.id]
        assert record.partition == partition_of[s.id]  # the partition Faust's Topic.send would pick
        assert Score.loads(record.value) == s
    assert len({r.partition for r in got}) == PARTITIONS
    (letter,) = letters
    dead = DeadLetter.loads(letter.value)
    assert dead.value_b64 == "" and dead.value_truncated and "too large for the broker" in dead.reason
    assert dead.value_size == len(big) and dead.value_sha256 == hashlib.sha256(big).hexdigest()
