"""``finsentry`` command line: worker, publish, demo, topics, rules, generate, schema, train, export."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from export.cli import export as export_command
from streams.settings import InfluxApi, Settings, load_settings

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
app.command("export", help="Export a fine-tuned checkpoint to a verified ONNX model directory.")(export_command)
console = Console(stderr=True)


def _settings(broker: str | None = None, model_dir: Path | None = None, influx_url: str | None = None,
              influx_api: InfluxApi | None = None) -> Settings:
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


BrokerOpt = typer.Option(None, "--broker", "-b", help="Kafka URL, e.g. kafka://localhost:9092 (env FINSENTRY_KAFKA__BROKER)")


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

    settings = _settings(broker, model_dir, influx_url, influx_api)
    if batch_size:
        settings.batch.size = batch_size
    if batch_wait:
        settings.batch.wait = batch_wait
    if log_level:
        settings.log_level = log_level
    from export.manifest import ManifestError, verify_directory

    try:
        verify_directory(settings.model_dir)
    except ManifestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from streams.rules import RulesError

    if settings.alerts.enabled and settings.kafka.changelog_end_marker:
        from streams.aggregate import mark_changelog_end

        asyncio.run(mark_changelog_end(settings))
    try:
        faust_app = create_app(settings)
    except RulesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    faust.Worker(faust_app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()


@app.command()
def publish(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help=".jsonl or .csv files of items"),
    broker: Optional[str] = BrokerOpt,
    topic: Optional[str] = typer.Option(None, help="send everything to this topic instead of routing"),
    rate: Optional[float] = typer.Option(None, help="items per second (default: as fast as possible)"),
    event_time: bool = typer.Option(False, help="use published_at as the Kafka message timestamp"),
) -> None:
    """Publish items to the input topics, key = item id. Lines are sent as written."""
    from streams.publish import publish as send, read_items, route

    settings = _settings(broker)

    def messages():
        for path in files:
            for payload in read_items(path):
                out = route(payload, settings.topics, topic)
                if event_time:
                    out = _with_event_time(out)
                yield out

    count = asyncio.run(send(messages(), settings.kafka, rate=rate))
    console.print(f"published {count} items to {settings.kafka.broker}")


def _with_event_time(out):
    from dataclasses import replace
    from datetime import datetime

    try:
        ts = datetime.fromisoformat(json.loads(out.value)["published_at"].replace("Z", "+00:00"))
        return replace(out, timestamp_ms=int(ts.timestamp() * 1000))
    except (ValueError, KeyError, TypeError, AttributeError):
        return out


@topics_app.command("create")
def topics_create(broker: Optional[str] = BrokerOpt,
                  partitions: Optional[int] = typer.Option(None, help="partitions per topic")) -> None:
    """Create the input, scores and dead-letter topics if missing."""
    from streams.topics import create_topics, pipeline_topics

    settings = _settings(broker)
    if partitions:
        settings.topics.partitions = partitions
    created = asyncio.run(create_topics(settings.kafka, pipeline_topics(settings.topics)))
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")


@app.command()
def schema(out: Optional[Path] = typer.Option(None, help="write to this file instead of stdout")) -> None:
    """Print the input item JSON Schema (v1)."""
    from streams.schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def sample(
    out: Path = typer.Argument(..., help="JSONL file to write"),
    n: int = typer.Option(600, help="number of valid items"),
    seed: int = typer.Option(42),
    with_bad: bool = typer.Option(False, help="append the malformed inputs the worker must dead-letter"),
) -> None:
    """Write the project's sample stream (realistic, invented items) as JSONL."""
    from streams.samples import bad_payloads, sample_items, write_jsonl

    count = write_jsonl(out, sample_items(n, seed))
    if with_bad:
        with open(out, "ab") as fh:
            for _, payload, _ in bad_payloads(seed):
                if payload and b"\n" not in payload:
                    fh.write(payload + b"\n")
                    count += 1
    console.print(f"wrote {count} lines to {out}")


@rules_app.command("check")
def rules_check(
    path: Optional[Path] = typer.Argument(None, help="rules file (default: FINSENTRY_ALERTS__RULES_FILE or the shipped one)"),
) -> None:
    """Validate an alert rules file against the configured windows; print the rules."""
    from streams.rules import RulesError, load_rules
    from streams.windows import window_label

    settings = load_settings()
    path = path or settings.alerts.rules_file
    try:
        rules = load_rules(path, windows=settings.alerts.windows)
    except RulesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for rule in rules.rules:
        levels = ", ".join(f"{lv.severity} {lv.threshold:g}" for lv in rule.levels)
        state = "" if rule.enabled else " (disabled)"
        console.print(f"{rule.id}{state}: {rule.kind} on {window_label(rule.window)} windows, >= {rule.min_mentions} "
                      f"mentions; {levels}; clears at {rule.clear:g}; cooldown {rule.cooldown}s")
    console.print(f"ok: {len(rules.active)} active rules")


@app.command()
def generate(
    out: Path = typer.Argument(..., help="JSONL file of items to write (in arrival order)"),
    truth: Optional[Path] = typer.Option(None, help="JSON file for the injected events (default: OUT.events.json)"),
    tickers: int = typer.Option(30, help="tickers in the stream"),
    hours: float = typer.Option(24.0, help="event-time span"),
    events: int = typer.Option(10, help="injected events (bursts, drifts, surges, positive bursts)"),
    seed: int = typer.Option(1),
) -> None:
    """Generate background traffic plus injected events with known start times (for tests and evaluation)."""
    from streams.generator import TextPool, generate as make, random_spec

    spec = random_spec(seed, tickers=tickers, hours=hours, events=events)
    items = make(spec, TextPool.from_corpus())
    with open(out, "w") as fh:
        for item in items:
            fh.write(json.dumps(item) + "\n")
    truth = truth or out.with_suffix(".events.json")
    truth.write_text(json.dumps({"seed": seed, "start": spec.start.isoformat(), "duration_s": spec.duration_s,
                                 "tickers": [p.__dict__ for p in spec.tickers],
                                 "events": [e.to_dict() for e in spec.events]}, indent=2) + "\n")
    console.print(f"wrote {len(items)} items to {out} and {len(spec.events)} events to {truth}")


@app.command()
def replay(
    files: list[Path] = typer.Argument(None, help="JSONL, CSV or Parquet files of items, replayed in order"),
    speed: str = typer.Option("max", help="real | max | a multiple like 10x"),
    state: Path = typer.Option(Path("replay-state.json"), help="checkpoint file: resume by running the same command"),
    run_id: Optional[str] = typer.Option(None, help="run id (default: replay-<time>-<random>); kept in the state file"),
    from_topic: Optional[str] = typer.Option(None, help="replay a time range of this Kafka topic instead of files"),
    start: Optional[datetime] = typer.Option(None, help="with --from-topic: first message timestamp (UTC)"),
    end: Optional[datetime] = typer.Option(None, help="with --from-topic: end of the range (exclusive)"),
    max_lag: int = typer.Option(5000, help="at max speed: most messages the scoring group may lag behind"),
    batch: int = typer.Option(500, help="messages per acknowledged batch (and checkpoint)"),
    topic: Optional[str] = typer.Option(None, help="send everything to this topic (default: news/social by item)"),
    broker: Optional[str] = BrokerOpt,
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Replay historical items into the input topics in event time (resumable; see docs/replay.md)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.replay import Checkpoint, ReplayOptions, parse_speed, read_sources, replay as run, topic_range

    settings = _settings(broker)
    if not files and not from_topic:
        typer.echo("error: give files to replay or --from-topic", err=True)
        raise typer.Exit(2)
    try:
        speed_value = parse_speed(speed)
        sources = [str(f) for f in files] if files else [f"kafka:{from_topic}:{start}:{end}"]
        checkpoint = Checkpoint.load_or_new(state, run_id, sources)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if checkpoint.finished:
        console.print(f"run {checkpoint.run_id} already finished ({checkpoint.next_seq} items); nothing to do")
        return
    if files:
        missing = [f for f in files if not f.exists()]
        if missing:
            typer.echo(f"error: no such file: {', '.join(map(str, missing))}", err=True)
            raise typer.Exit(2)
        payloads = read_sources(files)
    else:
        payloads = topic_range(settings.kafka, from_topic, _utc(start), _utc(end))
    options = ReplayOptions(speed=speed_value, batch_size=batch, max_lag=max_lag,
                            lag_group=settings.kafka.consumer_group, force_topic=topic)
    console.print(f"run {checkpoint.run_id}: replaying {', '.join(sources)} at {speed} "
                  f"(resuming at item {checkpoint.next_seq})" if checkpoint.next_seq else
                  f"run {checkpoint.run_id}: replaying {', '.join(sources)} at {speed}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} items"),
                  TextColumn("{task.fields[rate]:.0f} items/s"), TextColumn("event time {task.fields[event]}"),
                  TimeElapsedColumn(), console=console, disable=quiet) as bar:
        task = bar.add_task(checkpoint.run_id, total=None, rate=0.0, event="-")

        def progress(stats) -> None:
            event = stats.last_event.strftime("%Y-%m-%d %H:%M:%S") if stats.last_event else "-"
            bar.update(task, completed=stats.sent, rate=stats.items_per_s, event=event)

        stats = asyncio.run(run(payloads, settings.kafka, settings.topics, checkpoint, options, progress))
    typer.echo(json.dumps({
        "run_id": stats.run_id, "sent": stats.sent, "skipped_already_published": stats.skipped,
        "items_per_s": round(stats.items_per_s, 1), "elapsed_s": round(stats.elapsed_s, 2),
        "waited_for_lag_s": round(stats.waited_for_lag_s, 2),
        "first_event": stats.first_event.isoformat() if stats.first_event else None,
        "last_event": stats.last_event.isoformat() if stats.last_event else None, "state": str(state)}, indent=2))


@app.command()
def backtest(
    prices: Path = typer.Option(..., help="price bars, CSV or Parquet: ticker,time,open,high,low,close,volume"),
    results: Optional[Path] = typer.Option(None, help="JSONL of ticker_window/alerts rows (instead of InfluxDB)"),
    influx_url: Optional[str] = typer.Option(None, help="read the run from InfluxDB (InfluxQL; env FINSENTRY_INFLUX__URL)"),
    db: Optional[str] = typer.Option(None, help="database / DBRP-mapped bucket of the run (env FINSENTRY_INFLUX__BUCKET)"),
    window: str = typer.Option("1h", help="sentiment windows used for the IC: 1m | 5m | 1h"),
    horizons: str = typer.Option("1h,1d,5d", help="forward-return horizons"),
    out: Path = typer.Option(Path("reports/backtest"), help="folder for report.html and backtest.json"),
    save_results: Optional[Path] = typer.Option(None, help="also write the rows read from InfluxDB as JSONL"),
) -> None:
    """Join a run's sentiment windows and alerts with price bars: forward returns, hit rate, IC, event study."""
    from streams.backtest import load_prices, load_results_influx, load_results_jsonl, run_backtest, write_report
    from streams.windows import parse_duration

    settings = load_settings()
    try:
        bars = load_prices(prices)
        spans = [timedelta(seconds=parse_duration(h)) for h in horizons.split(",") if h.strip()]
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if results:
        windows, alerts = load_results_jsonl(results)
        windows = [w for w in windows if w.window == window]
        source = str(results)
    else:
        url = influx_url or settings.influx.url
        database = db or settings.influx.db
        token = settings.influx.token.get_secret_value() if settings.influx.token else None
        windows, alerts, rows = load_results_influx(url, database, window=window, token=token)
        if save_results:
            save_results.write_text("".join(json.dumps(r) + "\n" for r in rows))
        source = f"{url} database {database}"
    if not windows:
        typer.echo(f"error: no {window} sentiment windows in {source}", err=True)
        raise typer.Exit(2)
    result = run_backtest(windows, alerts, bars, spans)
    html_path, json_path = write_report(result, windows, alerts, bars, out,
                                        note=f"Sentiment from {source}; prices from {prices}.")
    for label, by_pol in result.horizons.items():
        r = by_pol["all"]
        console.print(f"{label}: {r['n']} alerts, mean signed return {100 * r['mean_signed_return']:+.2f} %, "
                      f"hit rate {100 * r['hit_rate']:.0f} %; IC {result.ic[label]['ic']:+.3f} "
                      f"over {result.ic[label]['n']} windows")
    console.print(f"wrote {html_path} and {json_path}")


def _utc(value: Optional[datetime]) -> Optional[datetime]:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@app.command()
def train(
    out: Path = typer.Option(Path("artifacts/checkpoint"), help="checkpoint directory"),
    quick: bool = typer.Option(False, help="smoke recipe (< 3 minutes)"),
    lora: bool = typer.Option(False, help="LoRA adapters instead of full fine-tuning (merged on save)"),
    teacher: Optional[Path] = typer.Option(None, help="distil from this fine-tuned checkpoint (docs/training.md)"),
    keep_layers: Optional[str] = typer.Option(
        None, help="encoder layers to keep (a student with --teacher), e.g. 0,2,4"),
    epochs: Optional[int] = typer.Option(None, help="override the recipe's epochs"),
) -> None:
    """Fine-tune the packaged MiniLM encoder on the financial corpus plus packaged tweets."""
    from models.train import recipe_from_options, train as run

    record = run(out, recipe_from_options(quick=quick, lora=lora, epochs=epochs, teacher=teacher,
                                          keep_layers=keep_layers))
    console.print_json(json.dumps({"out": str(out), **record["metrics"], "train_seconds": record["train_seconds"]}))


@app.command()
def demo(
    n: int = typer.Option(300, help="sample items to stream"),
    rate: float = typer.Option(60.0, help="items per second"),
    model_dir: Optional[Path] = typer.Option(None, help="model directory (default: artifacts/model)"),
    influx: str = typer.Option("auto", help="auto | local | file | configured"),
) -> None:
    """Stream the sample through a local broker and a real worker; show live per-ticker sentiment."""
    from streams.demo import run_demo

    settings = _settings(model_dir=model_dir)
    raise typer.Exit(run_demo(settings, n=n, rate=rate, influx_mode=influx, console=Console()))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
