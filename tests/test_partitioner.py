"""The worker's key partitioner puts every key where aiokafka's (and the Java client's) puts it."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from streams.kafka.partitioner import key_partition


def test_every_key_lands_in_the_partition_aiokafka_picks():
    rng = random.Random(11)
    reference = DefaultPartitioner()
    keys = [rng.randbytes(rng.randint(0, 120)) for _ in range(5000)]
    keys += [b"AAPL", b"BRK.B", b"NASDAQ:MSFT", "état".encode(), b"3f1c2a9e-8b7d-4c1e-9a0f-1b2c3d4e5f60"]
    for key in keys:
        for partitions in (1, 3, 4, 12, 100):
            all_partitions = list(range(partitions))
            assert key_partition(key, all_partitions, all_partitions) == reference(key, all_partitions, all_partitions)


def test_unkeyed_records_go_to_an_available_partition():
    assert {key_partition(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert key_partition(None, [0, 1, 2, 3], []) in {0, 1, 2, 3}


def test_the_worker_app_partitions_with_it():
    from streams.app import create_app
    from streams.contracts.settings import Settings

    app = create_app(Settings(alerts={"enabled": False}))
    assert app.conf.producer_partitioner is key_partition
