"""What an operator scrapes and probes on the worker's web port (``FINSENTRY_WEB_PORT``).

* ``/metrics`` — Prometheus text format: the product metrics of
  :mod:`streams.contracts.metrics`, Faust's own monitor (messages, events,
  commit and send latency, rebalances, per-partition offsets) and the consumer
  lag per input partition (``finsentry_consumer_lag``: end offset minus committed
  offset, read at scrape time);
* ``/healthz`` — liveness: 200 while the event loop answers;
* ``/readyz`` — readiness: 200 once the model is loaded and the tables are
  recovered (``finsentry_ready`` is 1), else 503.
"""

from __future__ import annotations

from typing import Any, Iterator

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily

from streams.contracts import metrics

__all__ = ["serve_operations", "ConsumerLag"]


class ConsumerLag:
    """Prometheus collector: end offset − committed offset of every partition the worker consumes.

    On tansu (the local broker) end offsets are wrong after multi-record batches (docs/kafka.md), so the
    lag reads low there; Apache Kafka reports them right.
    """

    def __init__(self) -> None:
        self.app: faust.App | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("finsentry_consumer_lag", "Messages not yet committed per input partition",
                                   labels=["topic", "partition"])
        try:
            consumer = self.app.consumer
            assignment = consumer.assignment()
        except Exception:  # noqa: BLE001 - no app, not started or rebalancing: no samples
            assignment = set()
        for tp in sorted(assignment):
            if tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
                continue
            end = consumer.highwater(tp)
            if end is None or end < 0:
                continue
            committed = consumer.committed_offset(tp)
            family.add_metric([tp.topic, str(tp.partition)], max(0, end - (committed or 0)))
        yield family


_LAG = ConsumerLag()
_FAUST_METRICS: list[FaustMetrics] = []  # created once per process: a registry refuses duplicate names


def serve_operations(app: faust.App) -> None:
    """Add ``/metrics``, ``/healthz`` and ``/readyz`` to the worker's web server."""
    if not _FAUST_METRICS:
        _FAUST_METRICS.append(FaustMetrics.create(metrics.REGISTRY, "faust"))
        metrics.REGISTRY.register(_LAG)
    app.monitor = PrometheusMonitor(metrics=_FAUST_METRICS[0])
    _LAG.app = app

    @app.page("/metrics")
    async def prometheus(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        return self.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        ready = metrics.REGISTRY.get_sample_value("finsentry_ready") == 1
        return self.json({"ready": ready}, status=200 if ready else 503)
