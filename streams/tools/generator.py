"""A stream generator with known events, for detection tests and evaluation.

Background traffic: every ticker gets mentions as a Poisson process with its
own rate (a few names are busy, most are quiet, as in real feeds), a mild
intraday rhythm, and a tone mix drawn per ticker around a market-wide mix.
Injected events, each with a known ticker, start and end:

* ``burst``: a sudden run of negative news on top of normal traffic;
* ``drift``: tone sliding from normal to mostly negative over an hour or two,
  volume unchanged;
* ``surge``: volume several times normal with the ticker's usual tone;
* ``positive_burst``: the mirror of ``burst``.

Texts come from a :class:`TextPool` (by default the held-out *test* split of
the project's financial corpus, which the model never trained on), so scores
are the real model's, errors included. Items carry explicit ``tickers`` so the
evaluation measures the signal, not extraction. Arrival order is event time
plus a delivery delay; a small share arrives late, some beyond the lateness.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Literal

from streams.contracts.labels import LABELS

import typer
from typing import Optional

from streams.tools.options import console

__all__ = ["TextPool", "TickerProfile", "InjectedEvent", "StreamSpec", "generate", "random_spec", "EVENT_KINDS"]

EventKind = Literal["burst", "drift", "surge", "positive_burst"]
EVENT_KINDS: tuple[str, ...] = ("burst", "drift", "surge", "positive_burst")
_CORPUS_TEST = Path(__file__).resolve().parents[2] / "models" / "corpus" / "splits" / "test.jsonl"


@dataclass(frozen=True)
class TextPool:
    """Texts by intended label, each with its style (headline/lede/social)."""

    texts: dict[str, tuple[tuple[str, str], ...]]

    @classmethod
    def from_corpus(cls, path: Path = _CORPUS_TEST) -> "TextPool":
        by_label: dict[str, list[tuple[str, str]]] = {label: [] for label in LABELS}
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            by_label[row["label"]].append((row["text"], row.get("style", "headline")))
        return cls({k: tuple(v) for k, v in by_label.items()})

    @classmethod
    def from_labelled(cls, rows: Iterable[tuple[str, str]], style: str = "headline") -> "TextPool":
        by_label: dict[str, list[tuple[str, str]]] = {label: [] for label in LABELS}
        for text, label in rows:
            by_label[label].append((text, style))
        return cls({k: tuple(v) for k, v in by_label.items()})

    def pick(self, rng: random.Random, label: str) -> tuple[str, str]:
        return rng.choice(self.texts[label])


@dataclass(frozen=True)
class TickerProfile:
    ticker: str
    rate_per_min: float
    mix: tuple[float, float, float]  # negative, neutral, positive


@dataclass(frozen=True)
class InjectedEvent:
    ticker: str
    kind: str  # EventKind
    start: datetime
    duration_s: int
    intensity: float  # burst/positive_burst: extra items per minute; surge: volume multiple; drift: final neg share

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


@dataclass(frozen=True)
class StreamSpec:
    start: datetime
    duration_s: int
    tickers: tuple[TickerProfile, ...]
    events: tuple[InjectedEvent, ...] = ()
    seed: int = 0
    late_share: float = 0.03  # items delivered 5-60 s after their event time
    very_late_share: float = 0.002  # items delivered minutes late (beyond any sensible lateness)
    burst_negative_share: float = 0.85
    id_prefix: str = "gen"


def _diurnal(t: datetime) -> float:
    """Mild intraday rhythm around 1.0 (busier in US trading hours)."""
    hour = t.hour + t.minute / 60
    return 1.0 + 0.6 * math.exp(-(((hour - 16.0) / 3.5) ** 2)) - 0.3 * math.exp(-(((hour - 4.0) / 3.0) ** 2))


def _mix_at(profile: TickerProfile, events: list[InjectedEvent], t: datetime) -> tuple[float, float, float]:
    neg, neu, pos = profile.mix
    for ev in events:
        if ev.kind == "drift" and ev.start <= t < ev.end:
            f = (t - ev.start).total_seconds() / ev.duration_s
            target = ev.intensity
            neg = neg + (target - neg) * f
            rest = 1 - neg
            share = (neu / (neu + pos)) if neu + pos else 0.5
            neu, pos = rest * share, rest * (1 - share)
    return neg, neu, pos


def _label(rng: random.Random, mix: tuple[float, float, float]) -> str:
    return rng.choices(LABELS, weights=mix)[0]


#: Turns a pool text into the item's text for a ticker (e.g. fills a company name into a template).
Render = Callable[[random.Random, str, str, datetime], str]


def generate(spec: StreamSpec, pool: TextPool, render: Render | None = None) -> list[dict]:
    """Items (schema v1 dicts) in *arrival* order; ``published_at`` is event time."""
    rng = random.Random(spec.seed)
    events_by_ticker: dict[str, list[InjectedEvent]] = {}
    for ev in spec.events:
        events_by_ticker.setdefault(ev.ticker, []).append(ev)
    stamped: list[tuple[float, datetime, dict]] = []
    counter = 0

    def emit(ticker: str, t: datetime, label: str, origin: str) -> None:
        nonlocal counter
        text, style = pool.pick(rng, label)
        if render is not None:
            text = render(rng, text, ticker, t)
        counter += 1
        item_id = f"{spec.id_prefix}-{spec.seed}-{counter:07d}"
        item = {"id": item_id, "source": "generator", "published_at": t.isoformat().replace("+00:00", "Z"),
                "tickers": [ticker], "lang": "en", "origin": origin}
        if style == "social":
            item["text"] = text
        else:
            item["headline"] = text
        r = rng.random()
        if r < spec.very_late_share:
            delay = rng.uniform(180, 900)
        elif r < spec.very_late_share + spec.late_share:
            delay = rng.uniform(5, 60)
        else:
            delay = rng.expovariate(1 / 1.5)
        stamped.append((t.timestamp() + delay, t, item))

    end = spec.start + timedelta(seconds=spec.duration_s)
    for profile in spec.tickers:
        evs = events_by_ticker.get(profile.ticker, [])
        # background (thinning of a Poisson process with the peak rate)
        peak = profile.rate_per_min / 60 * 1.6 * max([ev.intensity for ev in evs if ev.kind == "surge"] or [1.0])
        t = spec.start
        while True:
            t += timedelta(seconds=rng.expovariate(peak))
            if t >= end:
                break
            rate = profile.rate_per_min / 60 * _diurnal(t)
            origin = "background"
            for ev in evs:
                if ev.kind == "surge" and ev.start <= t < ev.end:
                    rate *= ev.intensity
                    origin = f"surge:{ev.start.isoformat()}"
            if rng.random() * peak > rate:
                continue
            if origin == "background" and any(ev.kind == "drift" and ev.start <= t < ev.end for ev in evs):
                origin = "drift"
            emit(profile.ticker, t, _label(rng, _mix_at(profile, evs, t)), origin)
        # bursts: extra items at the event's rate, mostly one tone
        for ev in evs:
            if ev.kind not in ("burst", "positive_burst"):
                continue
            tone = "negative" if ev.kind == "burst" else "positive"
            t = ev.start
            while True:
                t += timedelta(seconds=rng.expovariate(ev.intensity / 60))
                if t >= min(ev.end, end):
                    break
                label = tone if rng.random() < spec.burst_negative_share else "neutral"
                emit(profile.ticker, t, label, f"{ev.kind}:{ev.start.isoformat()}")
    stamped.sort(key=lambda row: (row[0], row[2]["id"]))
    return [item for _, _, item in stamped]


def random_spec(
    seed: int,
    *,
    tickers: int = 30,
    hours: float = 24.0,
    events: int = 0,
    warmup_hours: float = 3.0,
    start: datetime | None = None,
    kinds: tuple[str, ...] = EVENT_KINDS,
) -> StreamSpec:
    """A day of traffic for ``tickers`` names with ``events`` injected events after the warm-up.

    Rates are log-normal (median ~0.25 mentions/min, a few names above 2/min);
    tone mixes scatter around 25 % negative / 50 % neutral / 25 % positive.
    """
    rng = random.Random(seed)
    start = start or datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)
    symbols = [f"T{seed % 1000:03d}{i:02d}" for i in range(tickers)]
    profiles = []
    for sym in symbols:
        rate = min(4.0, math.exp(rng.gauss(math.log(0.25), 0.9)))
        neg = min(0.5, max(0.08, rng.gauss(0.25, 0.07)))
        pos = min(0.5, max(0.08, rng.gauss(0.25, 0.07)))
        profiles.append(TickerProfile(sym, rate, (neg, 1 - neg - pos, pos)))
    injected = []
    span = hours * 3600 - warmup_hours * 3600 - 3 * 3600
    used: dict[str, list[tuple[float, float]]] = {}
    for _ in range(events):
        kind = rng.choice(kinds)
        profile = rng.choice(profiles)
        duration = {"burst": rng.randint(8, 20) * 60, "positive_burst": rng.randint(8, 20) * 60,
                    "surge": rng.randint(10, 25) * 60, "drift": rng.randint(60, 120) * 60}[kind]
        for _attempt in range(20):  # events of one ticker never overlap (one truth per window)
            offset = warmup_hours * 3600 + rng.uniform(0, max(span, 1))
            if all(offset > e + 3600 or offset + duration + 3600 < s for s, e in used.get(profile.ticker, [])):
                break
        else:
            continue
        used.setdefault(profile.ticker, []).append((offset, offset + duration))
        intensity = {"burst": rng.uniform(1.0, 3.0), "positive_burst": rng.uniform(1.0, 3.0),
                     "surge": rng.uniform(5.0, 10.0), "drift": rng.uniform(0.6, 0.8)}[kind]
        injected.append(InjectedEvent(profile.ticker, kind, start + timedelta(seconds=offset), duration,
                                      round(intensity, 3)))
    return StreamSpec(start=start, duration_s=int(hours * 3600), tickers=tuple(profiles),
                      events=tuple(sorted(injected, key=lambda e: e.start)), seed=seed)


def command(
    out: Path = typer.Argument(..., help="JSONL file of items to write (in arrival order)"),
    truth: Optional[Path] = typer.Option(None, help="JSON file for the injected events (default: OUT.events.json)"),
    tickers: int = typer.Option(30, help="tickers in the stream"),
    hours: float = typer.Option(24.0, help="event-time span"),
    events: int = typer.Option(10, help="injected events (bursts, drifts, surges, positive bursts)"),
    seed: int = typer.Option(1),
) -> None:
    """Generate background traffic plus injected events with known start times (for tests and evaluation)."""
    spec = random_spec(seed, tickers=tickers, hours=hours, events=events)
    items = generate(spec, TextPool.from_corpus())
    with open(out, "w") as fh:
        for item in items:
            fh.write(json.dumps(item) + "\n")
    truth = truth or out.with_suffix(".events.json")
    truth.write_text(json.dumps({"seed": seed, "start": spec.start.isoformat(), "duration_s": spec.duration_s,
                                 "tickers": [p.__dict__ for p in spec.tickers],
                                 "events": [e.to_dict() for e in spec.events]}, indent=2) + "\n")
    console.print(f"wrote {len(items)} items to {out} and {len(spec.events)} events to {truth}")
