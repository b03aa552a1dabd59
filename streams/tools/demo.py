"""``finsentry demo``: the whole pipeline on this machine, with a live view.

Starts a local Kafka-protocol broker (tansu, see streams/tools/services.py), picks an
InfluxDB (the configured one if it answers, else a local ``influxd`` if
installed, else a line-protocol file), runs a real worker process, streams
the shipped sample items (plus a few bad ones) and shows per-ticker sentiment
as scores arrive.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.contracts.records import DeadLetter, Score
from streams.contracts.settings import InfluxApi, Settings

import typer
from typing import Optional

from streams.tools.options import settings_with

__all__ = ["run_demo"]


@dataclass
class _Board:
    """Running per-ticker statistics for the live table."""

    mentions: dict[str, int] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)
    last: dict[str, Score] = field(default_factory=dict)
    scored: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, score: Score) -> None:
        self.scored += 1
        for ticker in score.tickers or ["(none)"]:
            self.mentions[ticker] = self.mentions.get(ticker, 0) + 1
            self.total[ticker] = self.total.get(ticker, 0.0) + score.score
            self.last[ticker] = score

    def render(self, expected: int, expected_dead: int, sink: str) -> Group:
        table = Table(title="finsentry — live per-ticker sentiment", expand=True)
        for col, kw in (("ticker", {}), ("mentions", {"justify": "right"}), ("mean score", {"justify": "right"}),
                        ("last label", {}), ("last item", {"ratio": 1, "overflow": "ellipsis", "no_wrap": True})):
            table.add_column(col, **kw)
        ranked = sorted(self.mentions, key=lambda t: self.total[t] / self.mentions[t])
        shown = ranked[:8] + ["…"] + ranked[-8:] if len(ranked) > 16 else ranked  # most negative, most positive
        for ticker in shown:
            if ticker == "…":
                table.add_row("…", "", "", "", "")
                continue
            mean = self.total[ticker] / self.mentions[ticker]
            colour = "red" if mean < -0.15 else "green" if mean > 0.15 else "yellow"
            last = self.last[ticker]
            table.add_row(ticker, str(self.mentions[ticker]), Text(f"{mean:+.2f}", style=colour),
                          last.label, last.headline)
        rate = self.scored / max(1e-6, time.monotonic() - self.started)
        status = Text(f"scored {self.scored}/{expected} items ({rate:.0f}/s) · dead-lettered "
                      f"{len(self.dead)}/{expected_dead} · points → {sink}")
        return Group(table, status)


def _influx_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=2) as resp:
            return resp.status in (200, 204)
    except OSError:
        return False


async def _watch(settings: Settings, board: _Board, expected: int, expected_dead: int, live: Live,
                 sink: str, timeout: float) -> None:
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.security import client_kwargs

    consumer = AIOKafkaConsumer(settings.topics.scores, settings.topics.dead_letter, group_id=None,
                                auto_offset_reset="earliest", **client_kwargs(settings.kafka))
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while (board.scored < expected or len(board.dead) < expected_dead) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            for tp, records in batch.items():
                for record in records:
                    if tp.topic == settings.topics.scores:
                        board.add(Score.loads(record.value))
                    else:
                        board.dead.append(DeadLetter.loads(record.value))
            live.update(board.render(expected, expected_dead, sink))
    finally:
        await consumer.stop()


def run_demo(settings: Settings, *, n: int, rate: float, influx_mode: str, console: Console,
             timeout: float = 600) -> int:
    from streams.runtime import ManifestError, verify_directory
    from streams.tools import services
    from streams.tools.publish import publish, route
    from streams.tools.samples import bad_payloads, sample_items
    from streams.kafka.topics import create_topics, pipeline_topics

    try:
        manifest = verify_directory(settings.model_dir)
    except ManifestError as exc:
        console.print(f"[red]{exc}[/red]\nBuild the model first: scripts/demo.sh does it (or finsentry train && finsentry export)")
        return 2

    started: list[services.Service] = []
    worker = None
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-demo-"))
    try:
        broker = services.start_tansu()
        started.append(broker)
        settings.kafka.broker = broker.url
        console.print(f"broker: tansu at {broker.url} (Kafka protocol, in memory)")
        asyncio.run(create_topics(settings.kafka, pipeline_topics(settings.topics)))

        configured = os.environ.get("FINSENTRY_INFLUX__URL")
        if influx_mode in ("auto", "configured") and configured and _influx_answers(configured):
            sink = f"InfluxDB {settings.influx.api.value} at {configured}"
        elif influx_mode in ("auto", "local") and services.which_influxd():
            influx = services.start_influxd()
            started.append(influx)
            settings.influx.api, settings.influx.url = InfluxApi.v1, influx.url
            sink = f"local InfluxDB 1.x at {influx.url}, database {settings.influx.db}"
        else:
            settings.influx.api = InfluxApi.file
            settings.influx.line_protocol_file = Path("out/demo-points.lp").resolve()
            sink = f"line protocol file {settings.influx.line_protocol_file}"
        console.print(f"points: {sink}")
        console.print(f"model: {manifest.name} {manifest.version} from {settings.model_dir}")

        env = services.local_worker_env(broker.url, workdir / "faust", {
            "FINSENTRY_INFLUX__API": settings.influx.api.value,
            "FINSENTRY_INFLUX__URL": settings.influx.url,
            "FINSENTRY_INFLUX__BUCKET": settings.influx.bucket,
            "FINSENTRY_INFLUX__LINE_PROTOCOL_FILE": str(settings.influx.line_protocol_file),
            "FINSENTRY_MODEL_DIR": str(Path(settings.model_dir).resolve()),
        })
        log_path = workdir / "worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                  stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        console.print(f"worker: pid {worker.pid}, log {log_path}")

        good = [json.dumps(item).encode() for item in sample_items(n)]
        bad = [raw for _, raw, _ in bad_payloads()[:6]]
        payloads = good[: n // 2] + bad + good[n // 2 :]
        messages = [route(p, settings.topics) for p in payloads]

        board = _Board()

        async def main() -> None:
            with Live(board.render(len(good), len(bad), sink), console=console, refresh_per_second=4) as live:
                publisher = asyncio.create_task(publish(messages, settings.kafka, rate=rate))
                await _watch(settings, board, len(good), len(bad), live, sink, timeout)
                await publisher

        asyncio.run(main())
        elapsed = time.monotonic() - board.started
        console.print(f"\n[bold]{board.scored}[/bold] items scored, [bold]{len(board.dead)}[/bold] dead-lettered "
                      f"in {elapsed:.1f}s.")
        for letter in board.dead:
            console.print(f"  dead letter ({letter.stage}): {letter.reason}")
        if settings.influx.api is InfluxApi.v1:
            query = "SELECT count(score), mean(score) FROM sentiment GROUP BY ticker"
            params = urllib.parse.urlencode({"db": settings.influx.db, "q": query})
            body = json.loads(urllib.request.urlopen(f"{settings.influx.url}/query?{params}").read())
            series = body["results"][0].get("series", [])
            points = sum(s["values"][0][1] for s in series)
            console.print(f"InfluxDB holds {points} sentiment points for {len(series)} tickers "
                          f"(query: {query}).")
        ok = board.scored == len(good) and len(board.dead) == len(bad)
        if not ok:
            console.print(f"[red]demo incomplete; worker log tail:[/red]\n{log_path.read_text()[-3000:]}")
        return 0 if ok else 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        for service in reversed(started):
            service.stop()


def command(
    n: int = typer.Option(300, help="sample items to stream"),
    rate: float = typer.Option(60.0, help="items per second"),
    model_dir: Optional[Path] = typer.Option(None, help="model directory (default: the shipped models/default)"),
    influx: str = typer.Option("auto", help="auto | local | file | configured"),
) -> None:
    """Stream the sample through a local broker and a real worker; show live per-ticker sentiment."""
    settings = settings_with(model_dir=model_dir)
    raise typer.Exit(run_demo(settings, n=n, rate=rate, influx_mode=influx, console=Console()))
