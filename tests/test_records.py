"""``trusted`` builds the same records as Faust's constructor, and decoding mentions with it changes nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import faust
import orjson
import pytest

from streams.contracts.records import Item, Mention, MentionBatch, Score, decode_mentions, trusted

AT = datetime(2026, 12, 3, 9, 30, 15, 123456, tzinfo=timezone.utc)

SCORE = dict(id="n-1", source="wire", published_at=AT, tickers=["ACME", "BOLT"], label="negative", p_negative=0.7,
             p_neutral=0.2, p_positive=0.1, score=-0.6, model_name="finsentry-sentiment", model_version="2.0.0",
             scored_at=AT, kind="news", headline="ACME cuts guidance")
MENTION = dict(id="n-1", ticker="ACME", published_at=AT, score=-0.6, label="negative", source="wire", kind="news",
               headline="ACME cuts guidance", model_version="2.0.0", source_partition="news.items:3",
               source_watermark=1796290215.5)


@pytest.mark.parametrize("cls, values", [
    (Score, SCORE),
    (Score, {k: v for k, v in SCORE.items() if k not in ("kind", "headline")}),  # defaults filled
    (Mention, MENTION),
    (Mention, {k: v for k, v in MENTION.items() if k in ("id", "ticker", "published_at", "score", "label", "source")}),
    (Mention, {**MENTION, "headline": None, "kind": None}),  # None means the default, as in Faust
    (Item, dict(id="i", source="x", published_at=AT, kind="social", headline=None, text="t", body=None, url=None,
                author=None, tickers=["A"], lang=None)),
    (Item, dict(id="i", source="x", published_at=AT, text="t")),
])
def test_trusted_builds_the_record_the_constructor_builds(cls, values):
    fast, slow = trusted(cls, dict(values)), cls(**values)
    assert type(fast) is cls
    assert fast == slow
    assert vars(fast) == vars(slow)
    assert fast.asdict() == slow.asdict()
    assert fast.dumps() == slow.dumps()


def test_trusted_leaves_anything_unusual_to_the_constructor():
    with pytest.raises(TypeError):  # unknown field
        trusted(Mention, {**MENTION, "extra": 1})
    with pytest.raises(TypeError):  # missing required field
        trusted(Mention, {k: v for k, v in MENTION.items() if k != "ticker"})


class Coerced(faust.Record, coerce=True):
    n: int
    at: datetime


class Tagless(faust.Record):
    n: int
    note: str = "x"


def test_trusted_falls_back_for_a_record_whose_descriptors_change_values():
    record = trusted(Coerced, {"n": "3", "at": "2026-12-03T09:30:15+00:00"})
    assert record.n == 3 and record.at == datetime(2026, 12, 3, 9, 30, 15, tzinfo=timezone.utc)
    assert trusted(Tagless, {"n": 3}) == Tagless(n=3)


ROWS = [
    {**MENTION, "published_at": "2026-12-03T09:30:15.123456Z"},
    {**MENTION, "published_at": "2026-12-03T09:30:15Z", "extra": "kept by Faust"},
    {**MENTION, "published_at": "2026-12-03T09:30:15+02:00", "headline": None},
    {k: v for k, v in MENTION.items() if k not in ("kind", "headline", "source_partition")}
    | {"published_at": "2026-12-03T09:30:15Z"},
    {**MENTION, "published_at": "2026-12-03T09:30:15Z", "score": 1},
    {**MENTION, "published_at": "2026-12-03T09:30:15Z", "score": "not a number"},
    {**MENTION, "published_at": "2026-12-03T09:30:15"},  # naive
    {**MENTION, "published_at": "yesterday"},
    {**MENTION, "published_at": "20261203T093015Z"},  # basic format: Faust's parser reads it, Python 3.11's too
    {**MENTION, "published_at": 1796290215},
    {k: v for k, v in MENTION.items() if k != "ticker"} | {"published_at": "2026-12-03T09:30:15Z"},
    ["not", "a", "row"],
]


def _faust_only(value: bytes) -> list[Mention] | str:
    """What decode_mentions gave before ``trusted``: every row through ``Mention.from_data``."""
    try:
        data = orjson.loads(value)
        rows = data["mentions"] if isinstance(data, dict) and "mentions" in data else [data]
        for row in rows:
            if isinstance(row.get("published_at"), str):
                try:
                    row["published_at"] = datetime.fromisoformat(row["published_at"])
                except ValueError:
                    pass
        mentions = [Mention.from_data(row) for row in rows]
        for m in mentions:
            if not isinstance(m.published_at, datetime) or m.published_at.tzinfo is None:
                raise ValueError("naive")
            float(m.score)
        return mentions
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return "rejected"


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
@pytest.mark.parametrize("batched", [True, False], ids=["MentionBatch", "one Mention"])
def test_mentions_decode_exactly_as_faust_decodes_them(row, batched):
    value = orjson.dumps({"mentions": [row]} if batched else row)
    try:
        got: list[Mention] | str = decode_mentions(value)
    except ValueError:
        got = "rejected"
    expected = _faust_only(value)
    assert got == expected
    if isinstance(got, list):
        assert [vars(m) for m in got] == [vars(m) for m in expected]


def test_a_mention_batch_round_trips():
    mentions = [trusted(Mention, {**MENTION, "ticker": t, "score": s}) for t, s in (("A", 0.25), ("B", -1.0))]
    assert decode_mentions(MentionBatch(mentions=mentions).dumps()) == mentions
