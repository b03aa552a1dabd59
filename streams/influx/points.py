"""Scores -> InfluxDB points (line protocol), shaped for idempotent writes.

InfluxDB identifies a point by measurement + tag set + timestamp; writing the
same identity again overwrites it. So every part of that identity comes from
the item alone: the tags are the ticker and the item's source, never anything
the model or the delivery decided (label, model, input topic are fields: a
re-scored item whose int8 label flipped with its batch neighbours, a replay
into another topic, or a new model version overwrites the point instead of
adding one in another series). The timestamp is the item's event time
(``published_at``) truncated to the second, plus a deterministic sub-second
offset derived from the item id (a 64-bit hash modulo 10^9 ns): the same item
always lands on the same point (re-processing after a crash adds nothing),
while two different items with the same ticker, source and second get
different timestamps and both survive (collision odds for k items in one
second of one series: about k²/2·10⁹). Most feeds publish whole seconds, so
a millisecond-based offset would collide far more often. The id itself is a
field, not a tag, to keep series cardinality bounded.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from influxdb_client import Point, WritePrecision

from streams.contracts.records import Score

__all__ = [
    "SENTIMENT_MEASUREMENT",
    "PIPELINE_MEASUREMENT",
    "NO_TICKER",
    "event_time_ns",
    "score_points",
    "pipeline_point",
    "WINDOW_MEASUREMENT",
    "ALERT_MEASUREMENT",
    "window_point",
    "alert_point",
]

SENTIMENT_MEASUREMENT = "sentiment"
PIPELINE_MEASUREMENT = "pipeline"
WINDOW_MEASUREMENT = "ticker_window"
ALERT_MEASUREMENT = "alerts"
#: Tag value for items that name no ticker, so they are stored and queryable.
NO_TICKER = "_none"
_OFFSET_RANGE = 1_000_000_000  # ns: the offset never moves a point across a second


def _id_offset_ns(item_id: str) -> int:
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _OFFSET_RANGE


def event_time_ns(published_at: datetime, item_id: str) -> int:
    """Nanosecond timestamp of an item's points: event time truncated to the
    second plus the id-derived offset.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    >>> event_time_ns(t, "a") == event_time_ns(t, "a")
    True
    >>> event_time_ns(t, "a") // 10**9 == event_time_ns(t, "b") // 10**9 == int(t.timestamp())
    True
    """
    if published_at.tzinfo is None:
        raise ValueError("published_at must be timezone-aware")
    delta = published_at - datetime(1970, 1, 1, tzinfo=timezone.utc)
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * 1_000_000_000 + _id_offset_ns(item_id)


def score_points(score: Score, headline_chars: int = 200) -> list[str]:
    """One line per ticker (or one tagged ``ticker=_none``), same timestamp.

    Series key: ``ticker`` + ``source`` (both from the item); everything else is a field.
    """
    ts = event_time_ns(score.published_at, score.id)
    lines = []
    for ticker in score.tickers or [NO_TICKER]:
        point = (
            Point(SENTIMENT_MEASUREMENT)
            .tag("ticker", ticker)
            .tag("source", score.source)
            .field("label", score.label)
            .field("kind", score.kind)
            .field("model", score.model_name)
            .field("score", float(score.score))
            .field("p_negative", float(score.p_negative))
            .field("p_neutral", float(score.p_neutral))
            .field("p_positive", float(score.p_positive))
            .field("id", score.id)
            .field("headline", score.headline[:headline_chars])
            .field("model_version", score.model_version)
            .time(ts, WritePrecision.NS)
        )
        lines.append(point.to_line_protocol())
    return lines


def pipeline_point(
    *,
    worker: str,
    at: datetime,
    items: int,
    scored: int,
    dead_letters: int,
    batch_ms: float,
    inference_ms: float,
    latency_p50_ms: float,
    latency_max_ms: float,
) -> str:
    """Processing-time health metrics for one batch (measurement ``pipeline``)."""
    return (
        Point(PIPELINE_MEASUREMENT)
        .tag("worker", worker)
        .field("items", int(items))
        .field("scored", int(scored))
        .field("dead_letters", int(dead_letters))
        .field("batch_ms", float(batch_ms))
        .field("inference_ms", float(inference_ms))
        .field("latency_p50_ms", float(latency_p50_ms))
        .field("latency_max_ms", float(latency_max_ms))
        .time(at, WritePrecision.NS)
        .to_line_protocol()
    )


def window_point(
    *,
    ticker: str,
    window: str,
    start: int,
    count: int,
    mean_score: float,
    negative_share: float,
    positive_share: float,
    z_score: float,
    volume_ratio: float,
    baseline_mean: float,
    baseline_std: float,
    baseline_rate: float,
) -> str:
    """A closed window of one ticker, stamped at the window start (its identity:
    writing it again after a replay overwrites it)."""
    return (
        Point(WINDOW_MEASUREMENT)
        .tag("ticker", ticker)
        .tag("window", window)
        .field("count", int(count))
        .field("mean_score", float(mean_score))
        .field("negative_share", float(negative_share))
        .field("positive_share", float(positive_share))
        .field("z_score", float(z_score))
        .field("volume_ratio", float(volume_ratio))
        .field("baseline_mean", float(baseline_mean))
        .field("baseline_std", float(baseline_std))
        .field("baseline_rate", float(baseline_rate))
        .time(int(start) * 1_000_000_000, WritePrecision.NS)
        .to_line_protocol()
    )


def alert_point(alert) -> str:  # alert: streams.contracts.records.Alert
    """An alert status change, for Grafana annotations and tables.

    Stamped at the alert's event time plus an offset from (dedup key, status),
    so a re-delivered alert overwrites itself and the firing and resolved
    points of one incident never collide.
    """
    ts = event_time_ns(alert.event_time, f"{alert.dedup_key}|{alert.status}")
    evidence = "; ".join(f"{t.headline} ({t.score:+.2f})" for t in alert.top_items[:3])
    text = f"{alert.suggestion}" + (f" Evidence: {evidence}" if evidence and alert.status != "resolved" else "")
    return (
        Point(ALERT_MEASUREMENT)
        .tag("ticker", alert.ticker)
        .tag("rule", alert.rule)
        .tag("kind", alert.kind)
        .tag("severity", alert.severity)
        .tag("status", alert.status)
        .tag("window", alert.window)
        .field("title", alert.title)
        .field("text", text[:2000])
        .field("dedup_key", alert.dedup_key)
        .field("value", float(alert.value))
        .field("threshold", float(alert.threshold))
        .field("count", int(alert.count))
        .field("mean_score", float(alert.mean_score))
        .field("z_score", float(alert.z_score))
        .field("volume_ratio", float(alert.volume_ratio))
        .field("top_ids", ",".join(t.id for t in alert.top_items))
        .time(ts, WritePrecision.NS)
        .to_line_protocol()
    )
