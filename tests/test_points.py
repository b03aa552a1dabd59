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
