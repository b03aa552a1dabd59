"""Probe a Kafka-protocol broker for the APIs the finsentry worker relies on.

    python -m scripts.probe_broker                       # starts a local tansu
    python -m scripts.probe_broker kafka://host:9092     # any other broker

Prints one line per capability with what was observed. The findings for
tansu 0.6.0 are written up in docs/kafka.md.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.contracts.settings import KafkaSettings
from streams.kafka.topics import create_topics


async def probe(kafka: KafkaSettings) -> list[tuple[str, bool, str]]:
    servers = kafka.bootstrap_servers
    tag = uuid.uuid4().hex[:6]
    single, multi = f"probe-single-{tag}", f"probe-multi-{tag}"
    results: list[tuple[str, bool, str]] = []

    created = await create_topics(kafka, {single: 1, multi: 1})
    results.append(("CreateTopics (admin)", set(created) == {single, multi}, f"created {len(created)}/2"))

    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=50)
    await producer.start()
    for i in range(3):
        await producer.send_and_wait(single, b"x", key=b"k%d" % i, timestamp_ms=1_700_000_000_000 + i)
    futures = [await producer.send(multi, b"v%d" % i) for i in range(10)]
    await asyncio.gather(*futures)
    await producer.stop()
    results.append(("Produce acks=all", True, "13 records"))

    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await consumer.start()
    tp_single, tp_multi = TopicPartition(single, 0), TopicPartition(multi, 0)
    ends = await consumer.end_offsets([tp_single, tp_multi])
    results.append(("ListOffsets end, single-record batches", ends[tp_single] == 3, f"{ends[tp_single]} (expect 3)"))
    results.append(("ListOffsets end, multi-record batch", ends[tp_multi] == 10, f"{ends[tp_multi]} (expect 10)"))
    consumer.assign([tp_multi])
    await consumer.seek_to_beginning(tp_multi)
    batch = await consumer.getmany(timeout_ms=3000)
    offsets = [m.offset for records in batch.values() for m in records]
    results.append(("Fetch from offset 0", offsets == list(range(10)), f"offsets {offsets}"))
    await consumer.stop()

    group = f"probe-group-{tag}"
    consumer = AIOKafkaConsumer(single, bootstrap_servers=servers, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500)
    await consumer.start()
    got = await consumer.getmany(timeout_ms=5000)
    n = sum(len(v) for v in got.values())
    await consumer.commit({tp_single: 2})
    committed = await consumer.committed(tp_single)
    timestamps = [m.timestamp for records in got.values() for m in records]
    await consumer.stop()
    results.append(("Consumer group join/sync + fetch", n == 3, f"{n} records"))
    results.append(("OffsetCommit / OffsetFetch", committed == 2, f"committed {committed}"))
    results.append(("Producer timestamps kept", timestamps[:1] == [1_700_000_000_000], f"{timestamps[:3]}"))

    try:
        producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(single, b"i")
            results.append(("Idempotent producer (InitProducerId)", True, "ok"))
        finally:
            await producer.stop()
    except Exception as exc:  # broker-specific error types
        results.append(("Idempotent producer (InitProducerId)", False, f"{type(exc).__name__}: {exc}"))
    return results


def main() -> None:
    from streams.tools import services

    service = None
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        service = services.start_tansu()
        url = service.url
    try:
        for name, ok, detail in asyncio.run(probe(KafkaSettings(broker=url))):
            print(f"{'OK ' if ok else 'NO '} {name:42s} {detail}")
    finally:
        if service:
            service.stop()


if __name__ == "__main__":
    main()
