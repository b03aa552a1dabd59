"""``finsentry`` command line: mounts each command from where it lives.

The worker and the small admin commands (topics, schema, rules) are here; the
tools mount their own commands (:mod:`streams.tools`); ``train`` and
``export`` come from ``models/`` and ``export/`` through the
``finsentry.commands`` entry points, so the serving side never imports the
training side.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Optional

import typer

from streams.contracts.settings import InfluxApi, load_settings
from streams.tools import backtest, demo, generator, publish, replay, samples
from streams.tools.options import BrokerOpt, console, fail, settings_with

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="finsentry: real-time financial sentiment (Kafka -> Faust -> ONNX Runtime -> InfluxDB).\n\n"
    "Settings come from FINSENTRY_* environment variables or the file named by FINSENTRY_SETTINGS_FILE; "
    "flags override them.",
)
topics_app = typer.Typer(no_args_is_help=True, help="Manage the pipeline's Kafka topics.")
app.add_typer(topics_app, name="topics")
rules_app = typer.Typer(no_args_is_help=True, help="Alert rules (YAML): validate before deploying.")
app.add_typer(rules_app, name="rules")

app.command("publish")(publish.command)
app.command("sample")(samples.command)
app.command("generate")(generator.command)
app.command("replay")(replay.command)
app.command("backtest")(backtest.command)
app.command("demo")(demo.command)


def _mount_plugins() -> None:
    """``train`` (models/) and ``export`` (export/), declared as entry points in pyproject.toml."""
    for ep in entry_points(group="finsentry.commands"):
        try:
            command = ep.load()
        except ImportError as exc:  # e.g. a serving-only install without the [train] extra
            missing = str(exc)

            def unavailable(_missing: str = missing) -> None:
                fail(f"this command needs the training extras: pip install 'finsentry[train]' ({_missing})")

            app.command(ep.name, help=f"(unavailable: {exc})")(unavailable)
            continue
        app.command(ep.name)(command)


_mount_plugins()


@app.command()
def worker(
    broker: Optional[str] = BrokerOpt,
    model_dir: Optional[Path] = typer.Option(None, help="model directory (env FINSENTRY_MODEL_DIR)"),
    influx_url: Optional[str] = typer.Option(None, help="InfluxDB URL (env FINSENTRY_INFLUX__URL)"),
    influx_api: Optional[InfluxApi] = typer.Option(None, help="v2 | v1 | file (env FINSENTRY_INFLUX__API)"),
    batch_size: Optional[int] = typer.Option(None, help="items per micro-batch (env FINSENTRY_BATCH__SIZE)"),
    batch_wait: Optional[float] = typer.Option(None, help="max seconds to fill a batch (env FINSENTRY_BATCH__WAIT)"),
    log_level: Optional[str] = typer.Option(None, help="debug | info | warning | error"),
) -> None:
    """Run the scoring worker until stopped (SIGTERM/Ctrl-C stop it cleanly)."""
    import faust

    from streams.app import create_app

    settings = settings_with(broker, model_dir, influx_url, influx_api)
    if batch_size:
        settings.batch.size = batch_size
    if batch_wait:
        settings.batch.wait = batch_wait
    if log_level:
        settings.log_level = log_level
    from streams.runtime import ManifestError, verify_directory

    try:
        verify_directory(settings.model_dir)
    except ManifestError as exc:
        fail(str(exc))
    from streams.aggregation.rules import RulesError

    if settings.alerts.enabled and settings.kafka.changelog_end_marker:
        from streams.aggregation.agent import changelog_topic
        from streams.kafka.changelog import mark_changelog_end

        asyncio.run(mark_changelog_end(settings.kafka, changelog_topic(settings)))
    try:
        faust_app = create_app(settings)
    except RulesError as exc:
        fail(str(exc))
    faust.Worker(faust_app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()




@topics_app.command("create")
def topics_create(broker: Optional[str] = BrokerOpt,
                  partitions: Optional[int] = typer.Option(None, help="partitions per topic")) -> None:
    """Create the input, scores and dead-letter topics if missing."""
    from streams.kafka.topics import create_topics, pipeline_topics

    settings = settings_with(broker)
    if partitions:
        settings.topics.partitions = partitions
    created = asyncio.run(create_topics(settings.kafka, pipeline_topics(settings.topics)))
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")


@app.command()
def schema(out: Optional[Path] = typer.Option(None, help="write to this file instead of stdout")) -> None:
    """Print the input item JSON Schema (v1)."""
    from streams.contracts.schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)




@rules_app.command("check")
def rules_check(
    path: Optional[Path] = typer.Argument(None, help="rules file (default: FINSENTRY_ALERTS__RULES_FILE or the shipped one)"),
) -> None:
    """Validate an alert rules file against the configured windows; print the rules."""
    from streams.aggregation.rules import RulesError, load_rules
    from streams.aggregation.windows import window_label

    settings = load_settings()
    path = path or settings.alerts.rules_file
    try:
        rules = load_rules(path, windows=settings.alerts.windows)
    except RulesError as exc:
        fail(str(exc))
    for rule in rules.rules:
        levels = ", ".join(f"{lv.severity} {lv.threshold:g}" for lv in rule.levels)
        state = "" if rule.enabled else " (disabled)"
        console.print(f"{rule.id}{state}: {rule.kind} on {window_label(rule.window)} windows, >= {rule.min_mentions} "
                      f"mentions; {levels}; clears at {rule.clear:g}; cooldown {rule.cooldown}s")
    console.print(f"ok: {len(rules.active)} active rules")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
