"""The one place that turns Kafka settings into client security options.

Both clients the project uses (Faust's for the worker, plain aiokafka for the
publisher, replay, topic admin and tooling) get the same TLS context and SASL
credentials from here, so a setting means the same thing everywhere.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.contracts.settings import KafkaSettings

__all__ = ["ssl_context", "client_kwargs", "faust_credentials"]


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """A verifying TLS context for ``SSL``/``SASL_SSL`` (client certificate if configured), else None."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    return context


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer/consumer/admin options for the configured broker and security."""
    kwargs: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers,
                              "security_protocol": kafka.security_protocol}
    if (context := ssl_context(kafka)) is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        )
    return kwargs


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust ``broker_credentials`` for the same settings (None for PLAINTEXT)."""
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
