"""Real services for the tests: a Kafka-protocol broker, InfluxDB 1.6.7,
VictoriaMetrics (v2 write API), a tiny exported model and worker processes.

Every service runs on a free loopback port and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from streams.tools import services  # noqa: E402
from streams.contracts.settings import KafkaSettings, TopicSettings  # noqa: E402


@pytest.fixture(scope="session")
def broker():
    service = services.start_tansu()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def influxd():
    service = services.start_influxd()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def victoria():
    service = services.start_victoria_metrics()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from models.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    from export.onnx_export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    export_checkpoint(tiny_checkpoint, out, ExportOptions(name="tiny-test", version="1"))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir_v2(tmp_path_factory) -> Path:
    """A second model version (other weights), for hot-swap tests."""
    from export.onnx_export import ExportOptions, export_checkpoint
    from models.tiny import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-v2") / "checkpoint", seed=8)
    out = tmp_path_factory.mktemp("tiny-model-v2") / "model"
    export_checkpoint(checkpoint, out, ExportOptions(name="tiny-test", version="2"))
    return out


@pytest.fixture(scope="session")
def tiny_sentiment_model_dir(tmp_path_factory) -> Path:
    """A tiny model briefly trained on the corpus: its labels depend on the text."""
    from export.onnx_export import ExportOptions, export_checkpoint
    from models.tiny import train_tiny_sentiment

    checkpoint = train_tiny_sentiment(tmp_path_factory.mktemp("tiny-sentiment") / "checkpoint")
    out = tmp_path_factory.mktemp("tiny-sentiment-model") / "model"
    export_checkpoint(checkpoint, out, ExportOptions(name="tiny-sentiment", version="1", int8=False, fp16=False))
    return out


@pytest.fixture(scope="session")
def model_pool(tiny_sentiment_model_dir):
    """Corpus test texts grouped by the label the served (tiny) model gives them."""
    from streams.tools.generator import TextPool
    from streams.runtime import load_model

    model = load_model(tiny_sentiment_model_dir, warm_up=False)
    texts = [t for rows in TextPool.from_corpus().texts.values() for t, _ in rows]
    preds = model.predict(texts)
    pool = TextPool.from_labelled([(t, p.label) for t, p in zip(texts, preds)], style="headline")
    assert all(len(v) >= 50 for v in pool.texts.values()), {k: len(v) for k, v in pool.texts.items()}
    return pool


class Influx1:
    """Minimal InfluxQL client for assertions (the real server's HTTP API)."""

    def __init__(self, url: str, db: str) -> None:
        self.url, self.db = url, db

    def query(self, q: str, epoch: str = "ns") -> list[dict]:
        params = urllib.parse.urlencode({"db": self.db, "q": q, "epoch": epoch})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=30) as resp:
            body = json.loads(resp.read())
        result = body["results"][0]
        if "error" in result:
            raise AssertionError(f"InfluxQL error: {result['error']}")
        rows = []
        for series in result.get("series", []):
            for values in series["values"]:
                row = dict(zip(series["columns"], values))
                row.update(series.get("tags", {}))
                rows.append(row)
        return rows

    def execute(self, q: str) -> None:
        data = urllib.parse.urlencode({"q": q}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/query", data=data), timeout=30).read()

    def write(self, lines: str) -> None:
        req = urllib.request.Request(f"{self.url}/write?db={self.db}&precision=ns", data=lines.encode())
        urllib.request.urlopen(req, timeout=30).read()


@dataclass
class Pipeline:
    """Names and handles for one isolated pipeline (own topics, group, database)."""

    broker_url: str
    influx: Influx1
    topics: TopicSettings
    group: str
    model_dir: Path
    workdir: Path

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(broker=self.broker_url, session_timeout=2.0, heartbeat_interval=0.5,
                             consumer_group=self.group)

    def env(self, **extra: str) -> dict[str, str]:
        env = services.local_worker_env(self.broker_url, self.workdir / "faust-data", {
            "FINSENTRY_KAFKA__CONSUMER_GROUP": self.group,
            "FINSENTRY_TOPICS__NEWS": self.topics.news,
            "FINSENTRY_TOPICS__SOCIAL": self.topics.social,
            "FINSENTRY_TOPICS__SCORES": self.topics.scores,
            "FINSENTRY_TOPICS__DEAD_LETTER": self.topics.dead_letter,
            "FINSENTRY_TOPICS__MENTIONS": self.topics.mentions,
            "FINSENTRY_TOPICS__ALERTS": self.topics.alerts,
            "FINSENTRY_INFLUX__API": "v1",
            "FINSENTRY_INFLUX__URL": self.influx.url,
            "FINSENTRY_INFLUX__BUCKET": self.influx.db,
            "FINSENTRY_MODEL_DIR": str(self.model_dir),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def start_worker(self, name: str = "worker", **extra: str) -> "WorkerProcess":
        log = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--log-level", "info"],
            cwd=ROOT, env=self.env(**extra), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )
        return WorkerProcess(proc, log)

    def publish(self, payloads: list[bytes], timestamp_ms: int | None = None, rate: float | None = None) -> int:
        from streams.tools.publish import publish, route

        messages = [route(p, self.topics) for p in payloads]
        if timestamp_ms is not None:
            from dataclasses import replace

            messages = [replace(m, timestamp_ms=timestamp_ms) for m in messages]
        return asyncio.run(publish(messages, self.kafka, rate=rate))

    def read_topic(self, topic: str, expect: int, timeout: float = 60) -> list:
        """All messages of ``topic`` from the beginning (stops at ``expect`` or timeout)."""
        return asyncio.run(_read_topic(self.kafka, topic, expect, timeout))

    def wait_for_points(self, expected: int, timeout: float = 180, where: str = "") -> int:
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            rows = self.influx.query(f"SELECT count(score) FROM sentiment {where}")
            count = rows[0]["count"] if rows else 0
            if count >= expected:
                return count
            time.sleep(0.5)
        return count


async def _read_topic(kafka: KafkaSettings, topic: str, expect: int, timeout: float) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < expect:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        # drain anything beyond `expect` that is already there (duplicates would show up here)
        extra = await consumer.getmany(timeout_ms=1500)
        for records in extra.values():
            out.extend(records)
    finally:
        await consumer.stop()
    return out


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def new_pipeline(broker, influxd, model_dir: Path, workdir: Path) -> Pipeline:
    """A fresh pipeline namespace (topics, group, database) on the shared broker and InfluxDB."""
    from streams.kafka.topics import create_topics, pipeline_topics

    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(news=f"news-{tag}", social=f"social-{tag}", scores=f"scores-{tag}",
                           dead_letter=f"dead-{tag}", mentions=f"mentions-{tag}", alerts=f"alerts-{tag}")
    pipe = Pipeline(broker.url, Influx1(influxd.url, f"db_{tag}"), topics, f"group-{tag}", model_dir, workdir)
    asyncio.run(create_topics(pipe.kafka, pipeline_topics(topics)))
    pipe.influx.execute(f'CREATE DATABASE "{pipe.influx.db}"')
    workers: list[WorkerProcess] = []
    original = pipe.start_worker

    def tracked(*args, **kwargs):
        worker = original(*args, **kwargs)
        workers.append(worker)
        return worker

    pipe.start_worker = tracked  # type: ignore[method-assign]
    pipe.workers = workers  # type: ignore[attr-defined]
    return pipe


def stop_workers(pipe: Pipeline) -> None:
    for worker in pipe.workers:  # type: ignore[attr-defined]
        worker.stop()


@pytest.fixture
def pipeline(broker, influxd, tiny_model_dir, tmp_path):
    """A fresh pipeline namespace on the shared broker and InfluxDB."""
    pipe = new_pipeline(broker, influxd, tiny_model_dir, tmp_path)
    yield pipe
    stop_workers(pipe)
