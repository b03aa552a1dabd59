"""The worker's Faust monitor updates exactly the series Faust's own Prometheus monitor does."""

from __future__ import annotations

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from streams.kafka.observe import SeriesCachingMonitor


class _Owner:
    pass


class _Stream:
    def __init__(self, label: str) -> None:
        self.shortlabel = f"Stream: Topic: {label}"
        self.task_owner = _Owner()


class _Message:
    time_in = None


def _drive(monitor_type: type) -> str:
    registry = CollectorRegistry()
    monitor = monitor_type(metrics=FaustMetrics.create(registry, "faust"))
    streams = [_Stream("news.items|social.posts"), _Stream("sentiment.mentions")]
    tps = [TP("news.items", p) for p in range(3)] + [TP("sentiment.mentions", 0)]
    for round_ in range(3):
        for i in range(40):
            tp = tps[(i * 7 + round_) % len(tps)]
            monitor.track_tp_end_offset(tp, 1000 * round_ + i + 5)
            monitor.on_message_in(tp, 1000 * round_ + i, _Message())
            monitor.on_stream_event_in(tp, 1000 * round_ + i, streams[tp.topic == "sentiment.mentions"], None)
        if round_ < 2:
            monitor._clear_partition_related_metrics()  # what a rebalance does; later rounds add series again
    return "\n".join(line for line in generate_latest(registry).decode().splitlines()
                     if "_created" not in line)  # creation times differ between the two runs


def test_the_caching_monitor_exposes_what_fausts_monitor_exposes():
    ours, fausts = _drive(SeriesCachingMonitor), _drive(PrometheusMonitor)
    assert 'faust_messages_received_per_topic_total{topic="news.items"}' in fausts
    assert ours == fausts
