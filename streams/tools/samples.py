"""A realistic sample stream written by this project (no third-party text).

Deterministic for a seed: wire headlines with ledes, and social posts with
cashtags, across earnings, guidance, M&A, analyst actions, legal/regulatory,
management, product, macro, credit and crypto, some naming several tickers.
``bad_payloads`` gives the malformed inputs the worker must dead-letter.
All company facts are invented; tickers are real symbols used as labels only.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Iterator

import typer
from pathlib import Path

from streams.tools.options import console

__all__ = ["hostile_payloads", "special_items", "INJECTIONS", "COMPANIES", "sample_items", "bad_payloads", "write_jsonl"]

COMPANIES: dict[str, str] = {
    "AAPL": "Apple", "MSFT": "Microsoft", "NVDA": "Nvidia", "AMZN": "Amazon", "GOOGL": "Alphabet",
    "META": "Meta Platforms", "TSLA": "Tesla", "JPM": "JPMorgan Chase", "BAC": "Bank of America",
    "XOM": "Exxon Mobil", "CVX": "Chevron", "PFE": "Pfizer", "JNJ": "Johnson & Johnson",
    "WMT": "Walmart", "KO": "Coca-Cola", "DIS": "Disney", "BA": "Boeing", "INTC": "Intel",
    "AMD": "AMD", "NFLX": "Netflix", "GS": "Goldman Sachs", "CAT": "Caterpillar", "NKE": "Nike",
    "SBUX": "Starbucks", "UBER": "Uber", "COIN": "Coinbase", "BTC-USD": "Bitcoin", "ETH-USD": "Ether",
}

_WIRES = ["reuters-like", "newswire", "bizwire", "dowjones-like", "pr-feed"]
_SOCIAL = ["x", "stocktwits", "reddit"]

# (template, sentiment hint) — hints document intent; the model decides the label.
_HEADLINES: list[tuple[str, str]] = [
    ("{co} cuts full-year revenue outlook as demand softens; shares fall {pct}% premarket", "negative"),
    ("{co} posts surprise quarterly loss, suspends buyback", "negative"),
    ("{co} recalls {n},000 vehicles over brake defect", "negative"),
    ("Regulators open investigation into {co} sales practices", "negative"),
    ("{co} CFO resigns effective immediately; company delays annual filing", "negative"),
    ("{co} downgraded to underweight at a major broker on margin pressure", "negative"),
    ("{co} to lay off {n}00 workers as restructuring deepens", "negative"),
    ("Moody's cuts {co} credit rating one notch, outlook negative", "negative"),
    ("{co} shares slump after guidance misses consensus by a wide margin", "negative"),
    ("Data breach at {co} exposes customer records, company says", "negative"),
    ("{co} beats earnings estimates and raises full-year guidance", "positive"),
    ("{co} announces ${n} billion share repurchase and dividend increase", "positive"),
    ("{co} wins multi-year supply contract worth ${n} billion", "positive"),
    ("{co} upgraded to buy, price target lifted to ${px}", "positive"),
    ("{co} quarterly revenue jumps {pct}% on record cloud demand", "positive"),
    ("Regulators approve {co}'s new drug ahead of schedule", "positive"),
    ("{co} shares rally {pct}% after strong holiday sales update", "positive"),
    ("{co} agrees to acquire rival for ${n} billion in cash, shares rise", "positive"),
    ("{co} to present at investor conference on {day}", "neutral"),
    ("{co} schedules quarterly earnings release for {day}", "neutral"),
    ("{co} names new head of European operations", "neutral"),
    ("{co} files annual report with securities regulator", "neutral"),
    ("{co} to relocate regional office, no change to headcount", "neutral"),
    ("{co} completes previously announced debt offering", "neutral"),
    ("{co} and {co2} shares diverge after mixed sector data", "neutral"),
    ("{co} sues {co2} over patent infringement claims", "negative"),
    ("{co} and {co2} announce strategic partnership on AI chips", "positive"),
    ("{co} loses key contract to {co2}", "negative"),
]

_LEDES = [
    "The company said conditions in its largest markets were weaker than expected.",
    "Executives told analysts on a call that the second half should look different.",
    "The announcement came after the market closed on {day}.",
    "Analysts had expected a figure closer to ${px} million, according to a poll.",
    "A spokesperson declined to comment beyond the statement.",
    "Shares have moved {pct}% since the start of the year.",
]

_POSTS: list[tuple[str, str]] = [
    ("${t} absolutely ripping today 🚀🚀 added more on the dip", "positive"),
    ("${t} earnings tonight, holding my calls, wish me luck", "neutral"),
    ("Sold all my ${t}. Guidance was a joke. Done with this name.", "negative"),
    ("${t} chart looks ugly, breaking below the 200 day", "negative"),
    ("Great quarter from ${t}, margins way up, long and strong", "positive"),
    ("anyone else watching ${t} today? volume is weird", "neutral"),
    ("${t} bagholders, how we feeling 😂📉", "negative"),
    ("Oh great, another 'transformational' acquisition from ${t}. Can't wait to see the writedown.", "negative"),
    ("${t} and ${t2} both green, rotation into quality is real", "positive"),
    ("${t} dividend hike is nice, boring but I like boring", "positive"),
    ("Trimming ${t} into strength, still like it long term", "neutral"),
    ("${t} halted?? what is going on", "neutral"),
    ("${t} down {pct}% on the open... not touching it until the lawsuit clears", "negative"),
    ("Just bought my first share of ${t}, small start", "neutral"),
]


def _fill(rng: random.Random, template: str, ticker: str, other: str, published: datetime) -> str:
    day = (published + timedelta(days=rng.randint(2, 20))).strftime("%B %d").replace(" 0", " ")
    return template.format(
        co=COMPANIES[ticker], co2=COMPANIES[other], t=ticker.split("-")[0], t2=other.split("-")[0],
        pct=rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 17, 21]), n=rng.randint(2, 60),
        px=rng.randint(20, 900), day=day,
    )


def sample_items(n: int = 600, seed: int = 42, start: datetime | None = None) -> Iterator[dict]:
    """``n`` valid items (news and social, ~20% multi-ticker), in event-time order."""
    rng = random.Random(seed)
    t = start or datetime(2026, 3, 2, 13, 30, tzinfo=timezone.utc)
    tickers = list(COMPANIES)
    for i in range(n):
        t += timedelta(seconds=rng.choice([0, 0, 1, 2, 3, 5, 8, 13, 30]), milliseconds=rng.randint(0, 999))
        ticker = rng.choice(tickers)
        other = rng.choice([x for x in tickers if x != ticker])
        if rng.random() < 0.6:
            template, _ = rng.choice(_HEADLINES)
            multi = "{co2}" in template or rng.random() < 0.1
            item = {
                "id": f"news-{seed}-{i:06d}",
                "source": rng.choice(_WIRES),
                "published_at": t.isoformat().replace("+00:00", "Z"),
                "headline": _fill(rng, template, ticker, other, t),
                "body": _fill(rng, rng.choice(_LEDES), ticker, other, t) if rng.random() < 0.7 else None,
                "url": f"https://news.example.com/{seed}/{i}",
                "author": rng.choice([None, "Markets desk", "J. Doe", "Staff"]),
                "tickers": [ticker, other] if multi else [ticker],
                "lang": "en",
            }
        else:
            template, _ = rng.choice(_POSTS)
            multi = "{t2}" in template
            item = {
                "id": f"post-{seed}-{i:06d}",
                "source": rng.choice(_SOCIAL),
                "published_at": t.isoformat().replace("+00:00", "Z"),
                "text": _fill(rng, template, ticker, other, t),
                "author": f"@trader{rng.randint(1, 400)}",
                "tickers": [ticker, other] if multi else [ticker],
                "lang": "en",
            }
        yield {k: v for k, v in item.items() if v is not None}


def bad_payloads(seed: int = 42, max_text_chars: int = 20_000) -> list[tuple[str, bytes, str]]:
    """(id hint, raw bytes, expected reason fragment) for inputs the worker must reject."""
    ok = {"source": "newswire", "published_at": "2026-03-02T14:00:00Z", "headline": "Acme beats estimates"}

    def item(i: int, **changes) -> bytes:
        data = {"id": f"bad-{seed}-{i:03d}", **ok, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()

    bad = [
        ("malformed-1", b'{"id": "bad-x", "headline": "unterminated', "malformed JSON"),
        ("malformed-2", b"not json at all", "malformed JSON"),
        ("malformed-3", b"[1, 2, 3]", "expected a JSON object"),
        ("malformed-4", b"", "malformed JSON"),
        ("undecodable-1", b"\xff\xfe\x00bad bytes", "not UTF-8"),
        ("undecodable-2", b'{"id": "\xc3\x28"}', "not UTF-8"),
        ("type-1", item(1, published_at=1700000000), "published_at"),
        ("type-2", item(2, tickers="AAPL"), "tickers"),
        ("type-3", item(3, headline=42), "headline"),
        ("type-4", item(4, id=12345), "id"),
        ("type-5", item(5, published_at="yesterday"), "published_at"),
        ("type-6", item(6, published_at="2026-03-02T14:00:00"), "published_at"),  # no offset
        ("missing-1", item(7, id=...), "id: required"),
        ("missing-2", item(8, source=...), "source: required"),
        ("missing-3", item(9, published_at=...), "published_at: required"),
        ("missing-text-1", item(10, headline=...), "empty text"),
        ("empty-text-1", item(11, headline="   "), "empty text"),
        ("empty-text-2", item(12, headline="", body=""), "empty text"),
        ("too-long-1", item(13, body="x" * (max_text_chars + 1)), "text too long"),
        ("too-long-2", item(14, headline="word " * (max_text_chars // 4)), "text too long"),
        ("ticker-1", item(15, tickers=["not a ticker!"]), "tickers"),
        ("version-1", item(16, schema_version=2), "schema_version"),
        ("null-1", b"null", "expected a JSON object"),
        ("empty-id", item(17, id=""), "id"),
    ]
    return bad


#: Strings an attacker may put wherever a value becomes an InfluxDB tag, measurement or field.
INJECTIONS = (
    "x\nsentiment,ticker=EVIL score=1", "x\rinjected", "x\tinjected", "trailing\\", "back\\slash,ticker=EVIL",
    "nul\x00byte", "esc\x1b[31m", "del\x7f", "x\n\nDROP DATABASE finsentry",
)


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def hostile_payloads(n: int, seed: int = 7, big: int = 3) -> list[tuple[str, bytes]]:
    """``n`` inputs (kind, raw bytes) that must each end on the dead-letter topic with a reason: random
    and invalid UTF-8 bytes, truncated and deeply nested JSON, ``big`` multi-MB texts, NUL bytes, wrong
    types, line-protocol injections in every string that becomes a tag, hundreds of tickers, absurd dates."""
    rng = random.Random(seed)
    base = {"source": "newswire", "published_at": "2026-03-02T14:00:00Z", "headline": "Acme beats estimates",
            "tickers": ["ACME"]}

    def item(i: int, **changes) -> bytes:
        data = {"id": f"hostile-{seed}-{i:05d}", **base, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()

    makers = [
        ("random-bytes", lambda i: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))),
        ("invalid-utf8", lambda i: item(i)[:-20] + b"\xc3\x28\xa0\xa1" + b'"}'),
        ("truncated-json", lambda i: item(i)[: rng.randint(1, len(item(i)) - 2)]),
        ("nested-json", lambda i: b"[" * rng.randint(2_000, 20_000) + b"]" * rng.randint(0, 3)),
        ("nested-object", lambda i: b'{"id": "n", "a": ' * rng.randint(2_000, 6_000) + b"1"),
        ("nul-bytes", lambda i: item(i).replace(b"Acme", b"Ac\x00me") + b"\x00"),
        ("wrong-type", lambda i: item(i, **rng.choice([{"id": 7}, {"tickers": "ACME"}, {"published_at": 17e8},
                                                        {"headline": ["a"]}, {"source": None}, {"tickers": [1]}]))),
        ("not-an-object", lambda i: rng.choice([b"null", b"42", b'"text"', b"[1,2]", b"true", b"{}"])),
        ("tag-injection-source", lambda i: item(i, source=rng.choice(INJECTIONS))),
        ("tag-injection-ticker", lambda i: item(i, tickers=[rng.choice(INJECTIONS + ("ß", "ﬀ", "$€UR", "A B", "\u2028x"))])),
        ("control-chars-in-id", lambda i: item(i, id=rng.choice([x for x in INJECTIONS if _has_control(x)]))),
        ("many-tickers", lambda i: item(i, tickers=[f"T{k}" for k in range(rng.randint(21, 400))])),
        ("absurd-date", lambda i: item(i, published_at=rng.choice(
            ["9999-12-31T23:59:59Z", "2300-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "1677-01-01T00:00:00Z",
             "2026-13-45T99:99:99Z", "+275760-09-13T00:00:00Z"]))),
        ("empty-text", lambda i: item(i, headline=rng.choice(["", "   ", "\n\t"]))),
        ("too-long-text", lambda i: item(i, headline="sell " * rng.randint(4_001, 6_000))),
        ("bad-version", lambda i: item(i, schema_version=rng.choice([0, 2, "1", None]))),
    ]
    out = [("huge-text", item(i, body="x" * (3_000_000 + i))) for i in range(big)]
    while len(out) < n:
        kind, make = makers[len(out) % len(makers)]
        out.append((kind, make(len(out))))
    rng.shuffle(out)
    return out


def special_items(n: int, seed: int = 7) -> list[dict]:
    """Valid items whose strings carry every line-protocol special character that can be stored as sent
    (commas, spaces, equals signs, quotes, ``#``, Unicode; newlines and backslashes in fields)."""
    rng = random.Random(seed)
    sources = ("Dow, Jones & Co", "wire = x", 'the "tape"', "#hashtag feed", "Börsen Zeitung", "a b c", "x=1,y=2")
    heads = ("Acme beats\nestimates", 'Acme "beats" estimates', "Acme \\ Co up 5%", "Acme, Inc. = strong",
             "Åkerfeldt ökar vinsten 12 %", "emoji 🚀 rally")
    return [{"id": f"special-{seed}-{i:04d}", "source": rng.choice(sources), "tickers": ["SPCL"],
             "published_at": f"2026-03-02T15:{i // 60 % 60:02d}:{i % 60:02d}Z", "headline": rng.choice(heads)}
            for i in range(n)]


def write_jsonl(path, items) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
            count += 1
    return count


def command(
    out: Path = typer.Argument(..., help="JSONL file to write"),
    n: int = typer.Option(600, help="number of valid items"),
    seed: int = typer.Option(42),
    with_bad: bool = typer.Option(False, help="append the malformed inputs the worker must dead-letter"),
) -> None:
    """Write the project's sample stream (realistic, invented items) as JSONL."""
    count = write_jsonl(out, sample_items(n, seed))
    if with_bad:
        with open(out, "ab") as fh:
            for _, payload, _ in bad_payloads(seed):
                if payload and b"\n" not in payload:
                    fh.write(payload + b"\n")
                    count += 1
    console.print(f"wrote {count} lines to {out}")
