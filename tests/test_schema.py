"""Input validation: every kind of bad input has a clear reason; good ones parse."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import pytest

from streams.contracts.records import Item
from streams.tools.samples import bad_payloads, sample_items
from streams.contracts.schema import BadInput, json_schema, parse_item

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,raw,fragment", bad_payloads(seed=3), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_inputs_are_rejected_with_a_readable_reason(name, raw, fragment):
    with pytest.raises(BadInput) as info:
        parse_item(raw, kind="news", max_text_chars=20_000)
    assert fragment in info.value.reason
    assert info.value.stage in ("decode", "validate")
    assert len(info.value.reason) < 600


def test_null_value_is_rejected():
    with pytest.raises(BadInput, match="tombstone"):
        parse_item(None, kind="news", max_text_chars=100)


def test_good_item_parses_into_typed_record():
    raw = json.dumps({
        "id": "n1", "source": "newswire", "published_at": "2026-03-02T14:00:00.250-05:00",
        "headline": "Acme beats estimates", "body": "Shares rose.", "tickers": ["$aapl", "NASDAQ:MSFT", "AAPL", "BRK.B"],
        "lang": "en", "unknown_field": "ignored",
    }).encode()
    item = parse_item(raw, kind="news", max_text_chars=1000)
    assert isinstance(item, Item)
    assert item.tickers == ["AAPL", "NASDAQ:MSFT", "BRK.B"]  # normalised, de-duplicated
    assert item.published_at.utcoffset().total_seconds() == -5 * 3600
    assert item.published_at.astimezone(timezone.utc).hour == 19
    assert item.scoring_text == "Acme beats estimates\nShares rose."


def test_social_post_uses_text_and_sample_items_all_parse():
    for sample in sample_items(200, seed=5):
        item = parse_item(json.dumps(sample).encode(), kind="social", max_text_chars=20_000)
        assert item.scoring_text
        assert item.tickers


def test_published_schema_document_matches_the_code():
    committed = json.loads((ROOT / "streams" / "contracts" / "schemas" / "item-v1.json").read_text())
    assert committed == json_schema(), "run: finsentry schema --out streams/contracts/schemas/item-v1.json"
    assert set(committed["required"]) == {"id", "source", "published_at"}
