"""Which tickers is an item about? Cashtags, exchange-prefixed symbols, and
company names/aliases from the shipped symbol list (``streams/scoring/data/symbols.csv``).

Explicit ``tickers`` on a record always win; extraction fills in items that
name none. The rules aim at precision first, because a wrong ticker feeds a
wrong per-ticker signal:

* ``$AAPL``, ``$brk.b``, ``$TSLA's``: a cashtag of a listed symbol in any case,
  or an unlisted one written in capitals (``$QRTX``: the writer meant a ticker);
  ``$5B`` is money, not a ticker.
* ``NASDAQ:AAPL``, ``(NYSE: KO)``: exchange-prefixed symbols.
* Bare upper-case symbols of 3+ letters (``NVDA``) unless they are English
  words (``ALL``, ``NOW``, ``KEY``…); 1–2-letter symbols (``A``, ``IT``, ``F``)
  never count bare.
* Names and aliases, case-sensitive (``Apple`` but not ``apple``), not in a
  known non-company phrase (``Apple pie``, ``Amazon rainforest``, ``price
  target``, ``shell companies``, ``visa applications``, ``Oracle of Omaha``,
  ``Meta-analysis``, ``Nikola Tesla``, ``Citi Bike``…).
* A few products that name their maker (``F-150`` → Ford).

``python -m streams.scoring.tickers evaluate tests/data/ticker_eval.jsonl`` measures precision and recall on the
labelled set ``tests/data/ticker_eval.jsonl``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

__all__ = ["Symbol", "TickerExtractor", "load_symbols", "default_extractor", "evaluate", "SYMBOLS_FILE"]

DATA = Path(__file__).resolve().parent / "data"
SYMBOLS_FILE = DATA / "symbols.csv"

_US = {"NYSE", "NASDAQ", "NYSEARCA", "AMEX", "CBOE", "BATS"}
_EXCHANGES = r"NASDAQ|NYSE|NYSEARCA|NYSEAMERICAN|AMEX|LSE|LON|TSX|ASX|HKEX|HKG|XETRA|ETR|TSE|TYO|EURONEXT|EPA|SIX|KRX|NSE|BSE"
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:[.\-][A-Za-z]{1,3})?)(?![A-Za-z0-9])")
_PREFIXED = re.compile(rf"\b(?:{_EXCHANGES})\s*:\s*\$?([A-Z0-9]{{1,6}}(?:\.[A-Z]{{1,2}})?)\b")
_BARE = re.compile(r"(?<![\w$.:])([A-Z]{3,5}(?:\.[A-Z])?)(?![\w-])")
#: Upper-case English words that are also symbols: never tickers when written bare.
_ENGLISH = frozenset("""ALL NOW KEY HAS ARE FOR ONE NEW BIG LOW CAN DAY TOP AIR NET SEE BEST FAST PLAY LOVE REAL TRUE
WELL OPEN PEAK GOOD CAR CATS CAT EAT BUY SELL HOLD LONG SHORT MOON PUMP DUMP HODL YOLO FOMO WAGMI NGMI RIP LOL
IPO CEO CFO COO CTO EPS GDP CPI PPI PMI FED ECB BOE BOJ USD EUR GBP JPY SEC FTC DOJ FDA EPA IRS ETF ESG AI API
DD ATH ATL EOD AH PM AM IMO FYI TBH USA NYSE NASDAQ OTC YOY QOQ EBIT EBITDA CAGR CRM ERP SAAS B2B HR""".split())
#: Phrases that contain a company name or symbol but are about something else.
_NOT_COMPANY = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in (
    "Apple Bank", "Berkshire County", "Berkshire Hills", "Citi Bike", "ETH Zurich", "Merck KGaA", "Ford Foundation",
    "Harrison Ford", "Nikola Tesla", "Chevron deference", "Chevron doctrine", "Alphabet soup", "DOGE agency",
    "DOGE cuts", "DOGE staff", "Department of Government Efficiency", "Target Field", "Amazon Prime Day sales tax",
)) + r")\b")
#: "<Name>-free", "<Name>-style": an English compound, not the company.
_ADJECTIVE_COMPOUND = re.compile(r"-(?:rich|poor|free|date|dated|lowering|raising|style|like|sized|size|shaped|"
                                 r"branded|list|analysis|analyses|friendly|proof)\b")
#: Products that name their maker.
_PRODUCTS = {re.compile(r"\bF-1[5-9]0\b"): "F"}
#: Phrases in which a company name is not the company (name, regex on the text right after / before it).
_NOT_AFTER = {
    "Apple": r"\s+(?:pie|pies|cider|orchards?|juice|trees?|season|harvest|picking|crumble)\b",
    "Amazon": r"\s+(?:rainforest|river|basin|jungle|forest|region|delta)\b",
    "Target": r"\s+(?:prices?|rates?|ranges?|dates?|levels?|audience|market|zone|of)\b",
    "Shell": r"\s+(?:compan(?:y|ies)|corporations?|game|shock(?:ed)?|out|entities)\b",
    "Oracle": r"\s+of\s+Omaha\b",
    "Visa": r"\s+(?:applications?|applicants?|rules?|requirements?|holders?|programs?|waivers?|bans?|"
            r"restrictions?|processing|policy|fees?|sponsorship|lottery|overstays?)\b",
    "Meta": r"(?:-|\s+)(?:analys[ie]s|data|tags?|description|verse)\b",
    "Chevron": r"\s+(?:deference|doctrine)\b",
    "Nike": r",?\s+(?:the\s+)?goddess\b",
    "BP": r"\s+(?:readings?|levels?|medications?|cuffs?|monitors?)\b",
    "GM": r"\s+(?:crops?|foods?|seeds?|mosquito\w*|organisms?|wheat|soy\w*|corn|maize|salmon)\b",
    "Caterpillar": r"\s+(?:on|in|eats?|crawl\w*|larvae?)\b",
    "General Electric": r"\s+(?:bills?)\b",
}
_NOT_BEFORE = {
    "Target": r"(?:\bprice|\bprofit|\bsales|\binflation|\bearnings|\brevenue|\bmargin|\bits|\ba|\bthe|\bour|\bnew|\bkey)\s+$",
    "Visa": r"(?:\bwork|\bstudent|\btravel|\btourist|\bgolden|\bH-1B|\bimmigrant|\bentry|\bbusiness)\s+$",
    "Amazon": r"(?:\bthe|\bBrazilian|\bPeruvian)\s+$",
    "Shell": r"(?:\ba|\bthe|\banonymous|\boffshore)\s+$",
    "Apple": r"(?:\bBig|\bthe|\ban|\bcandy|\btoffee|\bcaramel)\s+$",
}


@dataclass(frozen=True)
class Symbol:
    symbol: str
    name: str
    aliases: tuple[str, ...]
    exchange: str
    asset_class: str
    country: str


def load_symbols(path: Path = SYMBOLS_FILE) -> list[Symbol]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [Symbol(r["symbol"].strip().upper(), r["name"].strip(),
                       tuple(a.strip() for a in (r.get("aliases") or "").split(";") if a.strip()),
                       r.get("exchange", "").strip(), r.get("asset_class", "equity").strip(), r.get("country", "").strip())
                for r in csv.DictReader(fh) if r.get("symbol")]


class TickerExtractor:
    """Extract tickers from text with the rules in the module docstring."""

    def __init__(self, symbols: Iterable[Symbol]) -> None:
        self.symbols = {s.symbol: s for s in symbols}
        names: dict[str, str] = {}
        # When several listings share a name, prefer a US alphabetic symbol (the one headlines cashtag).
        ranked = sorted(self.symbols.values(), key=lambda s: (s.exchange not in _US and s.asset_class != "crypto",
                                                             not s.symbol.replace(".", "").isalpha(), len(s.symbol)))
        for s in ranked:
            for name in (s.name, *s.aliases):
                if len(name) >= 2 and name not in names:
                    names[name] = s.symbol
        if "GOOGL" in self.symbols:  # class A is what "Alphabet"/"Google" means in news
            for name in ("Alphabet", "Google"):
                names[name] = "GOOGL"
        self.by_name = names
        alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        self._names = re.compile(rf"(?<![\w$&@#])({alternation})(?![\w&])")
        self._not_after = {k: re.compile(v, re.I) for k, v in _NOT_AFTER.items()}
        self._not_before = {k: re.compile(v, re.I) for k, v in _NOT_BEFORE.items()}

    def _name_is_company(self, text: str, match: re.Match) -> bool:
        name = match.group(1)
        if _ADJECTIVE_COMPOUND.match(text, match.end()):  # "Uber-rich", "Visa-free", "Target-date"
            return False
        after = self._not_after.get(name)
        if after and after.match(text, match.end()):
            return False
        before = self._not_before.get(name)
        if before and before.search(text[max(0, match.start() - 30) : match.start()]):
            return False
        return True

    def extract(self, text: str) -> list[str]:
        """Tickers in order of first mention, de-duplicated."""
        found: dict[str, int] = {}
        text = _NOT_COMPANY.sub(lambda m: " " * len(m.group(0)), text)

        def add(symbol: str, at: int) -> None:
            found.setdefault(symbol, at)

        for pattern, symbol in _PRODUCTS.items():
            for m in pattern.finditer(text):
                if symbol in self.symbols:
                    add(symbol, m.start())
        for m in _CASHTAG.finditer(text):
            raw = m.group(1)
            symbol = raw.upper().replace("-", ".") if "." in raw or "-" in raw else raw.upper()
            if symbol in self.symbols or (raw.isupper() and 2 <= len(raw) <= 6 and raw.isalpha()):
                add(symbol, m.start())
        for m in _PREFIXED.finditer(text):
            add(m.group(1), m.start())
        for m in _BARE.finditer(text):
            word = m.group(1)
            if word in self.symbols and word not in _ENGLISH and not _shouting(text):
                add(word, m.start())
        for m in self._names.finditer(text):
            if self._name_is_company(text, m):
                add(self.by_name[m.group(1)], m.start())
        return [s for s, _ in sorted(found.items(), key=lambda kv: kv[1])]


def _shouting(text: str) -> bool:
    """Mostly upper-case text: bare capitals are emphasis, not symbols."""
    letters = [c for c in text if c.isalpha()]
    return len(letters) > 12 and sum(c.isupper() for c in letters) / len(letters) > 0.6


@lru_cache(maxsize=1)
def default_extractor() -> TickerExtractor:
    return TickerExtractor(load_symbols())


def evaluate(path: Path, extractor: TickerExtractor | None = None) -> dict:
    """Micro precision/recall/F1 of extraction on a labelled JSONL set (text, tickers, note)."""
    extractor = extractor or default_extractor()
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    totals = {"all": [0, 0, 0], "hard": [0, 0, 0]}
    errors = []
    for row in rows:
        gold, pred = set(row["tickers"]), set(extractor.extract(row["text"]))
        counts = (len(gold & pred), len(pred - gold), len(gold - pred))
        for key in ("all", "hard") if row.get("note") else ("all",):
            totals[key] = [a + b for a, b in zip(totals[key], counts)]
        if gold != pred:
            errors.append({"id": row["id"], "text": row["text"], "gold": sorted(gold), "predicted": sorted(pred)})

    def prf(tp: int, fp: int, fn: int) -> dict:
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}

    return {"items": len(rows), "hard_items": sum(1 for r in rows if r.get("note")),
            "exact_item_match": 1 - len(errors) / max(1, len(rows)),
            "all": prf(*totals["all"]), "hard": prf(*totals["hard"]), "errors": errors}


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["evaluate"] and len(sys.argv) == 3:
        report = evaluate(Path(sys.argv[2]))
        print(json.dumps({k: v for k, v in report.items() if k != "errors"}, indent=2))
        for e in report["errors"][:40]:
            print(f"  {e['id']}: gold {e['gold']} got {e['predicted']} :: {e['text']}")
    else:
        for line in sys.stdin:
            print(default_extractor().extract(line.strip()))
