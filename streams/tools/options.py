"""Options and helpers shared by the ``finsentry`` commands (CLI only)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from streams.contracts.settings import InfluxApi, Settings, load_settings

__all__ = ["BrokerOpt", "console", "fail", "settings_with"]

#: Progress and results go to stderr; data a command prints (JSON) goes to stdout.
console = Console(stderr=True)

BrokerOpt = typer.Option(None, "--broker", "-b",
                         help="Kafka URL, e.g. kafka://localhost:9092 (env FINSENTRY_KAFKA__BROKER)")


def settings_with(broker: str | None = None, model_dir: Path | None = None, influx_url: str | None = None,
                  influx_api: InfluxApi | None = None) -> Settings:
    """Settings from the environment / settings file, with the command's flags on top."""
    settings = load_settings()
    if broker:
        settings.kafka.broker = broker
    if model_dir:
        settings.model_dir = model_dir
    if influx_url:
        settings.influx.url = influx_url
    if influx_api:
        settings.influx.api = influx_api
    return settings


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` and exit with ``code`` (2: bad input or configuration)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
