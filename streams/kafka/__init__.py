"""Kafka plumbing for the worker and the tools: one security config, the consumer that never
commits past an unprocessed message, retrying delivery, topic creation, changelog end markers.

Broker-agnostic: the same code runs on Apache Kafka (docker-compose) and tansu (tests).
"""
