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

Lines are encoded here (:func:`line_protocol`) with influxdb-client's rules
(sorted keys, its escaping, non-finite floats dropped, ``1.0`` written ``1``),
byte for byte (tests compare with its ``Point``): its builder costs about as
much per point as everything else the scorer does per item, and an item's
fields are the same for each of its tickers, so they are encoded once.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from functools import lru_cache
from typing import Mapping

from streams.contracts.records import Score

__all__ = [
    "line_protocol",
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


_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r'\"', "\\": r"\\"})

FieldValue = float | int | str | bool | None


@lru_cache(maxsize=1024)
def _key(key: str) -> str:
    """A tag or field key, escaped (the same few keys on every point: cached)."""
    return str(key).translate(_ESCAPE_KEY)


def _tag_value(value: str) -> str:
    escaped = str(value).translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped


def _tags(tags: Mapping[str, str | None]) -> str:
    """``,k=v,...`` (sorted), or ``""``; empty keys/values and None are left out."""
    out = []
    for key, value in sorted(tags.items()):
        if value is None:
            continue
        k, v = _key(key), _tag_value(value)
        if k and v:
            out.append(f"{k}={v}")
    return "," + ",".join(out) if out else ""


def _fields(fields: Mapping[str, FieldValue]) -> str:
    out = []
    for key, value in sorted(fields.items()):
        k = _key(key)
        if isinstance(value, float):
            if not math.isfinite(value):
                continue
            text = str(value)
            out.append(f"{k}={text[:-2] if text.endswith('.0') else text}")
        elif value is None:
            continue
        elif isinstance(value, bool):
            out.append(f"{k}={'true' if value else 'false'}")
        elif isinstance(value, int):
            out.append(f"{k}={value}i")
        elif isinstance(value, str):
            out.append(f'{k}="{value.translate(_ESCAPE_STRING)}"')
        else:
            raise ValueError(f'Type: "{type(value)}" of field: "{key}" is not supported.')
    return ",".join(out)


def line_protocol(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue],
                  time_ns: int) -> str:
    r"""One point in line protocol, as influxdb-client's ``Point(...).to_line_protocol()`` writes it
    (``""`` when no field is left).

    >>> print(line_protocol("m", {"t": "a b", "s": "x"}, {"v": 1.0, "n": 2, "txt": 'say "hi"'}, 5))
    m,s=x,t=a\ b n=2i,txt="say \"hi\"",v=1 5
    """
    return _line(measurement, _tags(tags), _fields(fields), time_ns)


def _line(measurement: str, tags: str, fields: str, time_ns: int) -> str:
    """A line from encoded tags and fields (``""`` without fields, as influxdb-client does)."""
    return f"{measurement.translate(_ESCAPE_MEASUREMENT)}{tags} {fields} {int(time_ns)}" if fields else ""


def _ns(at: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding); ``at`` must be timezone-aware."""
    delta = at - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


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
    return _ns(published_at) // _OFFSET_RANGE * _OFFSET_RANGE + _id_offset_ns(item_id)


def score_points(score: Score, headline_chars: int = 200) -> list[str]:
    """One line per ticker (or one tagged ``ticker=_none``), same timestamp.

    Series key: ``ticker`` + ``source`` (both from the item); everything else is a field.
    """
    ts = event_time_ns(score.published_at, score.id)
    fields = _fields({
        "label": score.label, "kind": score.kind, "model": score.model_name, "score": float(score.score),
        "p_negative": float(score.p_negative), "p_neutral": float(score.p_neutral),
        "p_positive": float(score.p_positive), "id": score.id, "headline": score.headline[:headline_chars],
        "model_version": score.model_version,
    })
    return [_line(SENTIMENT_MEASUREMENT, _tags({"ticker": ticker, "source": score.source}), fields, ts)
            for ticker in score.tickers or [NO_TICKER]]


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
    return line_protocol(PIPELINE_MEASUREMENT, {"worker": worker}, {
        "items": int(items), "scored": int(scored), "dead_letters": int(dead_letters),
        "batch_ms": float(batch_ms), "inference_ms": float(inference_ms),
        "latency_p50_ms": float(latency_p50_ms), "latency_max_ms": float(latency_max_ms),
    }, _ns(at))


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
    return line_protocol(WINDOW_MEASUREMENT, {"ticker": ticker, "window": window}, {
        "count": int(count), "mean_score": float(mean_score), "negative_share": float(negative_share),
        "positive_share": float(positive_share), "z_score": float(z_score), "volume_ratio": float(volume_ratio),
        "baseline_mean": float(baseline_mean), "baseline_std": float(baseline_std),
        "baseline_rate": float(baseline_rate),
    }, int(start) * 1_000_000_000)


def alert_point(alert) -> str:  # alert: streams.contracts.records.Alert
    """An alert status change, for Grafana annotations and tables.

    Stamped at the alert's event time plus an offset from (dedup key, status),
    so a re-delivered alert overwrites itself and the firing and resolved
    points of one incident never collide.
    """
    ts = event_time_ns(alert.event_time, f"{alert.dedup_key}|{alert.status}")
    evidence = "; ".join(f"{t.headline} ({t.score:+.2f})" for t in alert.top_items[:3])
    text = f"{alert.suggestion}" + (f" Evidence: {evidence}" if evidence and alert.status != "resolved" else "")
    return line_protocol(ALERT_MEASUREMENT, {
        "ticker": alert.ticker, "rule": alert.rule, "kind": alert.kind, "severity": alert.severity,
        "status": alert.status, "window": alert.window,
    }, {
        "title": alert.title, "text": text[:2000], "dedup_key": alert.dedup_key, "value": float(alert.value),
        "threshold": float(alert.threshold), "count": int(alert.count), "mean_score": float(alert.mean_score),
        "z_score": float(alert.z_score), "volume_ratio": float(alert.volume_ratio),
        "top_ids": ",".join(t.id for t in alert.top_items),
    }, ts)
