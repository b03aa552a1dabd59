"""InfluxDB sinks: the v2 API (influxdb-client), the 1.x ``/write`` API, or a file.

Contract of :meth:`InfluxSink.write`: it returns only once the server has
accepted every point it will ever accept. Transient failures (connection
errors, timeouts, 5xx, auth or missing-database errors that an operator can
fix) are logged with the server's message, counted, and retried with capped
exponential backoff, for as long as it takes: the caller does not ack Kafka
offsets until then. Points the server rejects for what they are (HTTP 400/422,
e.g. a field type conflict) are isolated one by one and returned, so the
worker can dead-letter exactly those items.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import aiohttp

from streams.contracts import metrics
from streams.contracts.settings import InfluxApi, InfluxSettings

__all__ = [
    "Rejected",
    "SinkStats",
    "InfluxSink",
    "InfluxV1Sink",
    "InfluxV2Sink",
    "LineProtocolFileSink",
    "TransientWriteError",
    "RejectedWriteError",
    "make_sink",
]

log = logging.getLogger(__name__)

#: Statuses that say "these points are bad"; anything else is retried.
_POINT_REJECTIONS = {400, 422}


class TransientWriteError(RuntimeError):
    """The write may succeed later (network, 5xx, auth/config an operator can fix)."""


class RejectedWriteError(RuntimeError):
    """The server refused the points themselves (e.g. field type conflict)."""


@dataclass(frozen=True)
class Rejected:
    """A line the server will never accept, and why."""

    index: int
    line: str
    reason: str


@dataclass
class SinkStats:
    """Counters exposed to logs, metrics and tests."""

    writes: int = 0
    points: int = 0
    retries: int = 0
    rejected_points: int = 0
    last_error: str | None = None
    errors_by_status: dict[str, int] = field(default_factory=dict)

    def record_error(self, status: str, message: str) -> None:
        self.errors_by_status[status] = self.errors_by_status.get(status, 0) + 1
        metrics.SINK_ERRORS.labels(status=status).inc()
        self.last_error = message


class InfluxSink(abc.ABC):
    """Write line-protocol batches with retries; see the module docstring."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self._closed = False

    async def start(self) -> None:
        """Open connections / create the database (again after a stop: agents restart)."""
        self._closed = False
        await self._open()

    async def _open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def stop(self) -> None:
        self._closed = True

    @abc.abstractmethod
    async def _send(self, body: str) -> None:
        """One HTTP write. Raise TransientWriteError or RejectedWriteError."""

    async def _send_with_retry(self, body: str) -> None:
        delay = self.settings.retry_initial
        attempt = 0
        while True:
            try:
                await self._send(body)
                return
            except TransientWriteError as exc:
                if self._closed:
                    raise
                attempt += 1
                self.stats.retries += 1
                metrics.SINK_RETRIES.inc()
                wait = min(delay, self.settings.retry_max) * random.uniform(0.8, 1.2)
                log.warning("InfluxDB write failed (attempt %d), retrying in %.1fs: %s", attempt, wait, exc)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.settings.retry_max)

    async def write(self, lines: Sequence[str]) -> list[Rejected]:
        """Write all lines; return the ones the server rejected for good."""
        if not lines:
            return []
        try:
            await self._send_with_retry("\n".join(lines))
        except RejectedWriteError as exc:
            log.warning("InfluxDB rejected a batch of %d points (%s); isolating bad points", len(lines), exc)
            rejected = await self._isolate(lines)
        else:
            rejected = []
        self.stats.writes += 1
        self.stats.points += len(lines) - len(rejected)
        self.stats.rejected_points += len(rejected)
        metrics.SINK_REJECTED.inc(len(rejected))
        return rejected

    async def _isolate(self, lines: Sequence[str]) -> list[Rejected]:
        # Re-writing accepted points is harmless: writes are idempotent.
        rejected = []
        for index, line in enumerate(lines):
            try:
                await self._send_with_retry(line)
            except RejectedWriteError as exc:
                log.error("InfluxDB rejected point %d: %s", index, exc)
                rejected.append(Rejected(index, line, str(exc)))
        return rejected


class _HttpSink(InfluxSink):
    _session: aiohttp.ClientSession | None = None

    async def _open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        await self._prepare()

    async def _prepare(self) -> None:  # noqa: B027 - optional hook
        pass

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _raise_for(self, status: int, text: str) -> None:
        message = f"HTTP {status} from {self.settings.url}: {text.strip()[:500]}"
        self.stats.record_error(str(status), message)
        if status in _POINT_REJECTIONS:
            raise RejectedWriteError(message)
        raise TransientWriteError(message)

    async def _post(self, path: str, params: dict[str, str], body: str, headers: dict[str, str],
                    auth: aiohttp.BasicAuth | None = None) -> None:
        assert self._session is not None, "sink not started"
        url = self.settings.url.rstrip("/") + path
        try:
            async with self._session.post(url, params=params, data=body.encode("utf-8"),
                                          headers=headers, auth=auth) as resp:
                if resp.status in (200, 204):
                    return
                self._raise_for(resp.status, await resp.text())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            message = f"cannot reach {self.settings.url}: {type(exc).__name__}: {exc}"
            self.stats.record_error("connection", message)
            raise TransientWriteError(message) from exc


class InfluxV1Sink(_HttpSink):
    """InfluxDB 1.x ``POST /write?db=…&precision=ns`` with optional user/password."""

    def _auth(self) -> aiohttp.BasicAuth | None:
        s = self.settings
        if s.username:
            return aiohttp.BasicAuth(s.username, s.password.get_secret_value() if s.password else "")
        return None

    async def _prepare(self) -> None:
        if not self.settings.create_database:
            return
        assert self._session is not None
        url = self.settings.url.rstrip("/") + "/query"
        query = f'CREATE DATABASE "{self.settings.db}"'
        delay = self.settings.retry_initial
        while True:
            try:
                async with self._session.post(url, data={"q": query}, auth=self._auth()) as resp:
                    if resp.status == 200:
                        return
                    log.warning("CREATE DATABASE returned HTTP %d: %s", resp.status, (await resp.text())[:300])
                    if resp.status in (401, 403):
                        return  # no admin rights: the database must already exist
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("InfluxDB %s not reachable yet: %s", self.settings.url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max)

    async def _send(self, body: str) -> None:
        params = {"db": self.settings.db, "precision": "ns"}
        if self.settings.retention_policy:
            params["rp"] = self.settings.retention_policy
        await self._post("/write", params, body, {"Content-Type": "text/plain; charset=utf-8"}, self._auth())


class InfluxV2Sink(InfluxSink):
    """The v2 write API through ``influxdb-client`` (InfluxDB 1.8+, 2.x, 3.x, Cloud).

    Uses the client's async API, which raises on failure, rather than its
    batching WriteApi, which reports failures only through a callback and would
    let the worker ack offsets for points that never landed.
    """

    _client = None

    async def _open(self) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        s = self.settings
        token = s.token.get_secret_value() if s.token else None
        if token is None and s.username:  # InfluxDB 1.8 compatibility: "user:password" token
            token = f"{s.username}:{s.password.get_secret_value() if s.password else ''}"
        self._client = InfluxDBClientAsync(
            url=s.url, token=token or "", org=s.org, timeout=int(s.timeout * 1000), enable_gzip=False
        )
        self._write_api = self._client.write_api()

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _send(self, body: str) -> None:
        from influxdb_client.rest import ApiException

        s = self.settings
        try:
            await self._write_api.write(bucket=s.bucket, org=s.org, record=body, precision="ns")
        except ApiException as exc:
            text = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
            message = f"HTTP {exc.status} from {s.url}: {text.strip()[:500]}"
            self.stats.record_error(str(exc.status), message)
            if exc.status in _POINT_REJECTIONS:
                raise RejectedWriteError(message) from None
            raise TransientWriteError(message) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            message = f"cannot reach {s.url}: {type(exc).__name__}: {exc}"
            self.stats.record_error("connection", message)
            raise TransientWriteError(message) from exc


class LineProtocolFileSink(InfluxSink):
    """Append line protocol to a file, for the demo when no InfluxDB is around.

    The file loads into any InfluxDB later (``influx write``/``curl /write``).
    """

    async def _open(self) -> None:
        path = Path(self.settings.line_protocol_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    async def stop(self) -> None:
        await super().stop()
        if getattr(self, "_fh", None):
            self._fh.close()

    async def _send(self, body: str) -> None:
        self._fh.write(body + "\n")
        self._fh.flush()


def make_sink(settings: InfluxSettings) -> InfluxSink:
    return {
        InfluxApi.v1: InfluxV1Sink,
        InfluxApi.v2: InfluxV2Sink,
        InfluxApi.file: LineProtocolFileSink,
    }[settings.api](settings)
