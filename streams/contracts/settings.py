"""Worker configuration from environment variables and an optional settings file.

Every setting has an environment variable ``FINSENTRY_<NAME>`` (nested groups use
``__``, e.g. ``FINSENTRY_INFLUX__URL``). A dotenv-style settings file can be named by
``FINSENTRY_SETTINGS_FILE``. Secrets are ``SecretStr`` so they never appear in
``repr``/logs, and each can be read from a file (``*_file`` settings) so that
Docker/Kubernetes secrets work without putting the value in the environment.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "InfluxApi",
    "InfluxSettings",
    "KafkaSettings",
    "TopicSettings",
    "BatchSettings",
    "RuntimeSettings",
    "AlertSettings",
    "Settings",
    "load_settings",
    "parse_duration",
]


def parse_duration(value: str | int | float) -> int:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"2h"`` or ``"1d"``.

    >>> [parse_duration(v) for v in (90, "90s", "5m", "2h", "1d")]
    [90, 90, 300, 7200, 86400]
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = int(value)
    else:
        text = str(value).strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        try:
            seconds = int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
        except ValueError:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 5m, 2h)") from None
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return seconds


def _read_secret_file(path: Path | None) -> SecretStr | None:
    if path is None:
        return None
    try:
        return SecretStr(Path(path).read_text().strip())
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc


class KafkaSettings(BaseModel):
    """Where the broker is and how to authenticate to it."""

    broker: str = Field("kafka://localhost:9092", description="Faust broker URL(s), ';'-separated")
    security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str = Field("PLAIN", pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    session_timeout: float = Field(10.0, gt=0, description="consumer group session timeout, seconds")
    heartbeat_interval: float = Field(3.0, gt=0)
    consumer_group: str = Field("finsentry-scorer", description="Faust app id = consumer group")
    producer_max_batch_bytes: int = Field(
        1_048_576, ge=1,
        description="producer batch size cap; 1 = one record per batch (tansu: its end offsets are wrong "
        "after multi-record batches, which breaks table recovery)",
    )
    max_poll_interval: float = Field(
        300.0, gt=0, description="longest a worker may go without fetching (e.g. while InfluxDB is down) before "
        "the group considers it gone and rebalances; its un-acked messages are then delivered again",
    )
    recovery_stall_timeout: float = Field(
        60.0, ge=0, description="seconds table recovery may read no changelog record before the worker exits "
        "with status 1 (0: wait forever)",
    )
    changelog_end_marker: bool = Field(
        False, description="append a single-record batch to the state changelog before recovery (tansu: its "
        "end offset is wrong after a multi-record batch)",
    )
    fetch_max_wait_ms: int = Field(
        500, ge=1, le=30_000,
        description="longest a fetch may wait on the broker; brokers that answer only at this deadline "
        "(tansu) add it as latency",
    )

    @model_validator(mode="after")
    def _password_from_file(self) -> "KafkaSettings":
        if self.sasl_password is None and self.sasl_password_file is not None:
            self.sasl_password = _read_secret_file(self.sasl_password_file)
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"{self.security_protocol} needs sasl_username and sasl_password")
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        return [part.split("://", 1)[-1] for part in self.broker.split(";") if part]


class TopicSettings(BaseModel):
    """Topic names. Defaults match docker-compose.yml and the docs."""

    news: str = "news.items"
    social: str = "social.posts"
    scores: str = "sentiment.scores"
    dead_letter: str = "finsentry.dead-letter"
    mentions: str = Field("sentiment.mentions",
                          description="mentions (one per item and ticker), batched per partition, key = a ticker")
    alerts: str = "finsentry.alerts"
    partitions: int = Field(1, ge=1, description="partitions used when the tooling creates topics")

    @property
    def kind_by_topic(self) -> dict[str, str]:
        """Input topic -> the kind of item it carries (``Item.kind``)."""
        return {self.news: "news", self.social: "social"}


class InfluxApi(str, Enum):
    v1 = "v1"  # InfluxDB 1.x /write (database + user/password)
    v2 = "v2"  # influxdb-client: InfluxDB 1.8+ compat, 2.x, 3.x, Cloud (bucket + token)
    file = "file"  # line protocol appended to a file (demo without a server)


class InfluxSettings(BaseModel):
    """Where scores are stored."""

    api: InfluxApi = InfluxApi.v2
    url: str = "http://localhost:8086"
    org: str = "finsentry"
    bucket: str = Field("finsentry", description="v2 bucket (v1: the database)")
    database: str | None = Field(None, description="v1 database; defaults to bucket")
    retention_policy: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    create_database: bool = Field(True, description="v1: CREATE DATABASE on start-up")
    line_protocol_file: Path = Path("finsentry-points.lp")
    timeout: float = Field(10.0, gt=0, description="HTTP timeout per write, seconds")
    retry_initial: float = Field(0.5, gt=0, description="first retry delay, seconds")
    retry_max: float = Field(30.0, gt=0, description="retry delay cap, seconds")

    @model_validator(mode="after")
    def _secrets_from_files(self) -> "InfluxSettings":
        if self.token is None and self.token_file is not None:
            self.token = _read_secret_file(self.token_file)
        if self.password is None and self.password_file is not None:
            self.password = _read_secret_file(self.password_file)
        return self

    @property
    def db(self) -> str:
        return self.database or self.bucket


class BatchSettings(BaseModel):
    """Micro-batching: a batch closes at ``size`` items or after ``wait`` seconds."""

    size: int = Field(32, ge=1, le=4096)
    # A backlog fills batches at once whatever the wait; the wait only holds back a partial batch (the tail
    # of a burst, or items arriving slower than a batch per wait). 3,000 items at once, 50 % load for
    # latency, alternating runs on the 2-core box: 0.2 s -> p50 139-162 ms, p99 229-281 ms; 0.05 s -> p50
    # 88-112 ms, p99 138-187 ms; items/s and CPU per item within the box's noise (bench/pipeline.py).
    wait: float = Field(0.05, gt=0, le=60)
    max_text_chars: int = Field(20_000, ge=16, description="longer items go to the dead-letter topic")
    in_flight: int = Field(
        1, ge=1, le=16,
        description="scored batches waiting to be stored and published while the next one is inferred")


class RuntimeSettings(BaseModel):
    """How the model runs (see streams/runtime/model.py for chunking and batching)."""

    providers: list[str] | None = Field(
        None, description="ONNX Runtime providers in order; default TensorRT, CUDA, CPU as available")
    intra_op_threads: int | None = Field(
        None, ge=0, description="ONNX Runtime intra-op threads per run; default 1 on CPU, ORT's own on GPU; 0 = ORT's")
    max_batch: int | None = Field(
        None, ge=1, le=4096, description="windows per inference call (length-sorted); default 4 on CPU, 256 on GPU")
    parallel: int | None = Field(
        None, ge=1, le=256,
        description="inference calls run at once; default: usable cores (cgroup quota included) on CPU, 1 on GPU")
    batches_at_once: int = Field(
        2, ge=1, le=16,
        description="micro-batches inferred at once: the next batch's calls keep every core busy while a batch's "
                    "last (longest) call finishes")
    chunk_overlap: int = Field(32, ge=0, description="tokens shared by consecutive windows of a long text")
    max_chunks: int = Field(8, ge=1, le=256, description="windows scored per text; the rest is ignored")
    warm_up: bool = True
    reload_interval: float = Field(
        5.0, ge=0, description="seconds between checks of the model directory for a new version; 0 = never")


class AlertSettings(BaseModel):
    """Per-ticker aggregation windows, baselines, alert rules and the webhook."""

    enabled: bool = Field(True, description="aggregate per ticker and evaluate alert rules")
    rules_file: Path | None = Field(None, description="alert rules YAML; default: the shipped streams/aggregation/alert_rules.yaml")
    windows: list[int] = Field([60, 300, 3600], description="tumbling window sizes in seconds, JSON: [60, 300, 3600]")
    lateness: int = Field(30, ge=0, description="seconds a window stays open after its end for late items")
    baseline_half_life: float = Field(6 * 3600.0, gt=0, description="baseline memory in event-time seconds")
    between_window_std: float = Field(0.05, ge=0, description="floor on window-to-window drift in z-scores")
    rate_floor_per_minute: float = Field(0.2, gt=0, description="normal volume is never taken below this")
    top_items: int = Field(5, ge=1, le=50, description="items cited as evidence per alert")
    batch_size: int = Field(256, ge=1, le=10_000, description="mention records (MentionBatch) aggregated per batch")
    batch_wait: float = Field(0.2, gt=0, le=10, description="longest a batch waits to fill, seconds")
    webhook_url: SecretStr | None = Field(None, description="Slack-compatible incoming webhook (a secret)")
    webhook_url_file: Path | None = None
    webhook_timeout: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1, description="then the alert goes to the dead-letter topic")
    webhook_retry_initial: float = Field(1.0, gt=0)
    webhook_retry_max: float = Field(60.0, gt=0)

    @field_validator("webhook_url", "webhook_url_file", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # compose passes unset variables as "": that means "no webhook", not a URL
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: Any) -> Any:
        if isinstance(value, str):  # "60,300" or "1m,5m" from the environment
            value = [parse_duration(part) for part in value.replace(" ", "").split(",") if part]
        return value

    @model_validator(mode="after")
    def _check(self) -> "AlertSettings":
        if not self.windows or any(w < 1 for w in self.windows) or len(set(self.windows)) != len(self.windows):
            raise ValueError("windows must be distinct positive sizes in seconds")
        self.windows = sorted(self.windows)
        if self.webhook_url is None and self.webhook_url_file is not None:
            self.webhook_url = _read_secret_file(self.webhook_url_file)
        return self


class Settings(BaseSettings):
    """All worker settings. ``repr`` never shows secret values."""

    model_config = SettingsConfigDict(
        env_prefix="FINSENTRY_",
        env_nested_delimiter="__",
        env_file=os.environ.get("FINSENTRY_SETTINGS_FILE"),
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    influx: InfluxSettings = InfluxSettings()
    batch: BatchSettings = BatchSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    alerts: AlertSettings = AlertSettings()
    model_dir: Path = Field(Path("models/default"), description="model directory made by `finsentry export` "
                            "(default: the shipped default model)")
    model_variant: str | None = Field(None, description="fp32 | int8 | fp16; default: fp16 on GPU, int8 on CPU")
    extract_tickers: bool = Field(True, description="find tickers in the text of items that carry none")
    web_port: int = Field(6066, ge=0, le=65535,
                          description="worker web port: /metrics, /healthz, /readyz (and Faust's pages); 0 disables")
    web_bind: str = Field("127.0.0.1", description="address the web port listens on (0.0.0.0 in a container)")
    data_dir: Path = Field(Path(".finsentry-data"), description="Faust local state directory")
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    def redacted(self) -> dict[str, Any]:
        """A dict safe to log: secrets show as '**********'."""
        return self.model_dump(mode="json")


def load_settings(**overrides: Any) -> Settings:
    """Build settings from env/file, then apply explicit overrides (CLI flags)."""
    return Settings(**overrides)
