"""Point identity: idempotent for one item, distinct for different items."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streams.influx.points import event_time_ns, score_points
from streams.contracts.records import Score

T = datetime(2026, 3, 2, 14, 0, 0, 123456, tzinfo=timezone.utc)


def _score(item_id: str, tickers: list[str], published=T, headline="Acme \"beats\", shares up") -> Score:
    return Score(id=item_id, source="news wire", published_at=published, tickers=tickers, label="positive",
                 p_negative=0.1, p_neutral=0.2, p_positive=0.7, score=0.6, model_name="m", model_version="1",
                 scored_at=datetime.now(timezone.utc), headline=headline)


def test_same_item_same_points_regardless_of_processing_time():
    assert score_points(_score("a", ["AAPL"])) == score_points(_score("a", ["AAPL"]))


def test_one_point_per_ticker_sharing_the_event_timestamp():
    lines = score_points(_score("a", ["AAPL", "MSFT"]))
    assert len(lines) == 2
    assert {line.rsplit(" ", 1)[1] for line in lines} == {str(event_time_ns(T, "a"))}
    assert "ticker=AAPL" in lines[0] and "ticker=MSFT" in lines[1]
    assert "source=news\\ wire" in lines[0]  # tag escaping by influxdb-client
    assert 'id="a"' in lines[0] and "id=" not in lines[0].split(" ")[0]  # id is a field, not a tag


def test_items_in_the_same_second_do_not_collide_and_stay_in_their_second():
    stamps = {event_time_ns(T, f"item-{i}") for i in range(5000)}
    assert len(stamps) == 5000
    base = int(T.timestamp()) * 1_000_000_000
    assert all(base <= s < base + 1_000_000_000 for s in stamps)


def test_timezone_offsets_are_respected():
    other = T.astimezone(timezone(timedelta(hours=9)))
    assert event_time_ns(other, "x") == event_time_ns(T, "x")


def _tricky_texts(rng) -> list[str]:
    alphabet = ['a', 'Z', '0', ' ', ',', '=', '"', '\\', '\n', '\t', '\r', 'é', '✓', '#', "'"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(200)]


def test_line_protocol_is_byte_for_byte_what_influxdb_client_writes():
    """The hand-built encoder must agree with influxdb-client's Point on every escaping rule it has."""
    import math
    import random

    from influxdb_client import Point, WritePrecision

    from streams.influx.points import line_protocol

    rng = random.Random(7)
    texts = _tricky_texts(rng)
    numbers = [0.0, 1.0, -2.5, 1e-7, 1e21, 0.1 + 0.2, math.nan, math.inf, -math.inf, 3, 0, -7, True, False]
    for i in range(400):
        tags = {rng.choice(texts) or "k": rng.choice(texts) for _ in range(rng.randint(0, 3))}
        fields = {rng.choice(texts) or "f": rng.choice(texts + numbers) for _ in range(rng.randint(1, 4))}
        measurement = rng.choice(texts).lstrip("#") or "m"
        point = Point(measurement)
        for k, v in tags.items():
            point.tag(k, v)
        for k, v in fields.items():
            point.field(k, v)
        ts = rng.randrange(0, 2**62)
        expected = point.time(ts, WritePrecision.NS).to_line_protocol()
        assert line_protocol(measurement, tags, fields, ts) == expected, (measurement, tags, fields)
    # every field dropped (non-finite floats, None): no line at all, as Point writes it
    empty = Point("m").tag("t", "x").field("a", math.nan).field("b", math.inf).time(1, WritePrecision.NS)
    assert empty.to_line_protocol() == ""
    assert line_protocol("m", {"t": "x"}, {"a": math.nan, "b": math.inf, "c": None}, 1) == ""


def test_every_point_builder_matches_influxdb_client():
    """score, window, alert and pipeline points, with awkward text, against the same points built by Point."""
    from influxdb_client import Point, WritePrecision

    from streams.contracts.records import Alert, AlertItem
    from streams.influx.points import alert_point, pipeline_point, window_point

    score = _score('id "1", x=2', ["AB C", "D,E", "F\\"], headline='Acme\\ "beats",\nshares = up ✓')
    ts = event_time_ns(score.published_at, score.id)
    for ticker, line in zip(score.tickers, score_points(score)):
        expected = (Point("sentiment").tag("ticker", ticker).tag("source", score.source)
                    .field("label", score.label).field("kind", score.kind).field("model", score.model_name)
                    .field("score", score.score).field("p_negative", score.p_negative)
                    .field("p_neutral", score.p_neutral).field("p_positive", score.p_positive)
                    .field("id", score.id).field("headline", score.headline[:200])
                    .field("model_version", score.model_version).time(ts, WritePrecision.NS))
        assert line == expected.to_line_protocol()

    numbers = dict(count=3, mean_score=-0.25, negative_share=1.0, positive_share=0.0, z_score=float("nan"),
                   volume_ratio=2.0, baseline_mean=0.1, baseline_std=0.3, baseline_rate=1.5)
    expected = Point("ticker_window").tag("ticker", "A B").tag("window", "5m")
    for k, v in numbers.items():
        expected.field(k, v)
    assert window_point(ticker="A B", window="5m", start=1_700_000_000, **numbers) == \
        expected.time(1_700_000_000 * 10**9, WritePrecision.NS).to_line_protocol()

    at = datetime(2026, 3, 2, 14, 0, 0, 123456, tzinfo=timezone.utc)
    health = dict(items=32, scored=30, dead_letters=2, batch_ms=12.5, inference_ms=8.0, latency_p50_ms=100.0,
                  latency_max_ms=250.25)
    expected = Point("pipeline").tag("worker", "host 1")
    for k, v in health.items():
        expected.field(k, v)
    assert pipeline_point(worker="host 1", at=at, **health) == \
        expected.time(at, WritePrecision.NS).to_line_protocol()

    alert = Alert(dedup_key="ACME|neg", status="firing", ticker="ACME", rule="sharp drop", kind="negative_shift",
                  severity="warning", window="5m", window_start=at, window_end=at, event_time=at, detected_at=at,
                  value=-2.5, threshold=-2.0, count=7, mean_score=-0.4, negative_share=0.7, z_score=-3.1,
                  volume_ratio=1.2, baseline_mean=0.0, baseline_std=0.2, baseline_rate=1.0,
                  top_items=[AlertItem(id="i1", score=-0.9, headline='bad, "worse"', published_at=1.0)],
                  suggestion="Check, now.", title='ACME "down"')
    expected = Point("alerts")
    for k in ("ticker", "rule", "kind", "severity", "status", "window"):
        expected.tag(k, getattr(alert, k))
    text = 'Check, now. Evidence: bad, "worse" (-0.90)'
    for k, v in dict(title=alert.title, text=text, dedup_key=alert.dedup_key, value=alert.value,
                     threshold=alert.threshold, count=alert.count, mean_score=alert.mean_score,
                     z_score=alert.z_score, volume_ratio=alert.volume_ratio, top_ids="i1").items():
        expected.field(k, v)
    ts = event_time_ns(at, "ACME|neg|firing")
    assert alert_point(alert) == expected.time(ts, WritePrecision.NS).to_line_protocol()
