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


EDGE_JSON = ['"\\ud800"', '"\\udc00x"', '"a\\u0000b"', '"\\uD83D\\uDE00"', '"x\u2028y"', 'NaN', 'Infinity', '1e400',
             '123456789012345678901234567890', '[1,]', '"tab\there"', '"\\x41"', '01', '.5', '"é"', '[' * 150 + ']' * 150,
             '[' * 600 + ']' * 600, '{"k": 1, "k": 2}', 'tru', '"ok"']


@pytest.mark.parametrize("fragment", EDGE_JSON)
@pytest.mark.parametrize("field", ["headline", "extra", "id", "schema_version"])
def test_an_item_is_accepted_only_if_both_json_parsers_accept_it(field, fragment):
    """parse_item reads a valid item with pydantic's parser only; that must never let through what
    Python's own parser refuses (the worker accepted exactly what both accept before), and a refusal
    still names the id when there is one."""
    from pydantic import ValidationError

    from streams.contracts.schema import ItemV1

    text = ('{"id": "e1", "source": "wire", "published_at": "2026-03-02T14:00:00Z", "headline": "Acme", '
            f'"{field}": {fragment}}}')
    try:
        json.loads(text)
        standard = True
    except (ValueError, RecursionError):
        standard = False
    try:
        ItemV1.model_validate_json(text, strict=True)
        strict = True
    except ValidationError:
        strict = False
    try:
        item = parse_item(text.encode("utf-8", "surrogatepass"), kind="news", max_text_chars=20_000)
    except BadInput as bad:
        assert not (standard and strict), bad.reason
        if standard and field != "id":
            assert bad.item_id == "e1"
    else:
        assert standard and strict
        assert item.id == ("e1" if field != "id" else json.loads(text)["id"])
