"""Create the pipeline's topics explicitly (any Kafka-protocol broker).

Faust declares its own internal topics, but input/output topics are created
up front with a known partition count, since auto-creation differs between
brokers and production clusters usually disable it.
"""

from __future__ import annotations

from streams.kafka.security import client_kwargs
from streams.contracts.settings import KafkaSettings, TopicSettings

__all__ = ["pipeline_topics", "create_topics"]


def pipeline_topics(topics: TopicSettings) -> dict[str, int]:
    """Topic name -> partitions for everything the pipeline reads or writes."""
    names = (topics.news, topics.social, topics.scores, topics.dead_letter, topics.mentions, topics.alerts)
    return {name: topics.partitions for name in names}


async def create_topics(kafka: KafkaSettings, topics: dict[str, int], replication: int = 1,
                        timeout: float = 30) -> list[str]:
    """Create missing topics; return the names that were created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    kwargs = client_kwargs(kafka)
    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout * 1000), **kwargs)
    await admin.start()
    created = []
    try:
        existing = set(await admin.list_topics())
        for name, partitions in topics.items():
            if name in existing:
                continue
            try:
                await admin.create_topics([NewTopic(name, partitions, replication)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created
