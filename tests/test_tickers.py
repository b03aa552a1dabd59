"""Ticker extraction: the forms people write, and the classic false positives."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from streams.scoring.tickers import SYMBOLS_FILE, default_extractor, evaluate, load_symbols

TEST_DATA = Path(__file__).resolve().parent / "data"

CASES = [
    ("Apple shares rise after iPhone launch", ["AAPL"]),
    ("$aapl and $MSFT both up premarket", ["AAPL", "MSFT"]),
    ("Berkshire's class B ($BRK.B) hits a record", ["BRK.B"]),
    ("Buying more NASDAQ:NVDA and (NYSE: KO) today", ["NVDA", "KO"]),
    ("$TSLA's delivery numbers beat", ["TSLA"]),
    ("Alphabet and Google Cloud lift results", ["GOOGL"]),
    ("JPMorgan raises its price target on Nike", ["JPM", "NKE"]),
    ("$QRTX squeezing hard today", ["QRTX"]),  # unlisted but clearly a cashtag
    ("Raised $5B in a bond sale", []),
    ("My grandmother's apple pie recipe", []),
    ("Apple pie sales soar at county fair", []),
    ("Deforestation in the Amazon rainforest accelerates", []),
    ("Analysts lift their price target to $240", []),
    ("Regulators probe a network of shell companies", []),
    ("Work visa applications hit a record", []),
    ("A meta-analysis of 40 studies", []),
    ("The Oracle of Omaha is buying again", []),
    ("IT spending is forecast to rise, ALL analysts agree, NOW is the time", []),
    ("ALL IN on $NVDA NOW 🚀", ["NVDA"]),
    ("A-list celebrities invest in a start-up", []),
    ("Target cuts outlook as shoppers pull back", ["TGT"]),
    ("Visa and Mastercard settle fee case", ["V", "MA"]),
    ("Ford recalls 40,000 F-150 trucks", ["F"]),
    ("Bitcoin tops $100,000 as $ETH lags", ["BTC", "ETH"]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:30] for c in CASES])
def test_extraction(text, expected):
    assert default_extractor().extract(text) == expected


def test_symbol_list_is_broad_and_clean():
    symbols = load_symbols()
    assert len(symbols) >= 600
    assert len({s.symbol for s in symbols}) == len(symbols)
    classes = {s.asset_class for s in symbols}
    assert classes == {"equity", "crypto"}
    assert sum(s.asset_class == "crypto" for s in symbols) >= 25
    assert sum(s.country not in ("US", "-") for s in symbols) >= 100
    with open(SYMBOLS_FILE, encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["symbol", "name", "aliases", "exchange", "asset_class", "country"]


def test_precision_and_recall_on_the_labelled_set():
    report = evaluate(TEST_DATA / "ticker_eval.jsonl")
    assert report["items"] >= 300 and report["hard_items"] >= 80
    assert report["all"]["precision"] >= 0.95, report["errors"][:10]
    assert report["all"]["recall"] >= 0.90, report["errors"][:10]


def test_held_out_set_written_independently_of_the_rules():

    report = evaluate(TEST_DATA / "ticker_eval_holdout.jsonl")
    assert report["items"] >= 150
    assert report["all"]["precision"] >= 0.90 and report["all"]["recall"] >= 0.95, report["errors"]
