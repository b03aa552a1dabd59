"""Build the shipped backtest sample: a historical stream, synthetic prices, and the pipeline's results.

    .venv/bin/python -m scripts.backtest_sample               # items + prices (seconds)
    .venv/bin/python -m scripts.backtest_sample --pipeline    # also replay them through a real local
                                                              # pipeline (tansu + InfluxDB 1.6.7 + worker)
                                                              # with models/default -> results.jsonl

Writes ``docs/samples/backtest/``:

* ``items.jsonl.gz``: 10 days of news and posts for 6 large US tickers, written by
  this project's templates (``streams/samples.py``) with invented facts, plus
  injected negative and positive news bursts and volume surges
  (``events.json`` lists them);
* ``prices.csv``: **synthetic** hourly bars (clearly labelled in the ``source``
  column): a random walk with 0.35 % hourly volatility, plus, after each
  injected burst, a move in the burst's direction (2-5 % over six hours, then a
  slower 1-2 % drift over two days). The model is not told any of this: the
  backtest has to find the relation from the scored stream;
* ``results.jsonl``: the ``ticker_window`` (1h) and firing ``alerts`` rows that
  the real worker wrote to InfluxDB when the items were replayed (``--pipeline``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from streams.tools.generator import InjectedEvent, StreamSpec, TextPool, TickerProfile, generate
from streams.tools.samples import _HEADLINES, _POSTS, COMPANIES, _fill  # noqa: PLC2701 - the project's own templates

OUT = Path(__file__).resolve().parents[1] / "docs" / "samples" / "backtest"
START = datetime(2026, 2, 2, 0, 0, tzinfo=timezone.utc)
TICKERS = {"AAPL": 0.25, "MSFT": 0.2, "TSLA": 0.3, "JPM": 0.12, "XOM": 0.1, "NVDA": 0.25}  # mentions per minute
SEED = 7
SOURCE = "synthetic (scripts/backtest_sample.py, seed 7)"


def template_pool() -> TextPool:
    rows = [(t, label, "headline") for t, label in _HEADLINES] + [(t, label, "social") for t, label in _POSTS]
    by_label: dict[str, list[tuple[str, str]]] = {"negative": [], "neutral": [], "positive": []}
    for text, label, style in rows:
        by_label[label].append((text, style))
    return TextPool({k: tuple(v) for k, v in by_label.items()})


def render(rng: random.Random, template: str, ticker: str, t: datetime) -> str:
    other = rng.choice([x for x in COMPANIES if x != ticker])
    return _fill(rng, template, ticker, other, t)


def spec() -> StreamSpec:
    rng = random.Random(SEED)
    events = []
    for day in range(2, 10):  # one or two events a day after a two-day warm-up
        for _ in range(rng.choice([1, 1, 2])):
            kind = rng.choice(["burst", "burst", "positive_burst", "positive_burst", "surge"])
            ticker = rng.choice(list(TICKERS))
            start = START + timedelta(days=day, hours=rng.uniform(12, 20))
            intensity = {"burst": 3.0, "positive_burst": 3.0, "surge": 6.0}[kind]
            events.append(InjectedEvent(ticker, kind, start, rng.randint(10, 20) * 60, intensity))
    profiles = tuple(TickerProfile(t, rate, (0.25, 0.5, 0.25)) for t, rate in TICKERS.items())
    return StreamSpec(start=START, duration_s=10 * 86400, tickers=profiles, events=tuple(sorted(events,
                      key=lambda e: e.start)), seed=SEED, id_prefix="hist")


def prices(events: list[InjectedEvent], seed: int = SEED) -> list[dict]:
    rng = random.Random(seed + 1)
    rows = []
    hours = 10 * 24 + 6 * 24  # bars run five days past the stream so 5-day horizons exist
    for ticker in TICKERS:
        price = rng.uniform(80, 400)
        evs = [e for e in events if e.ticker == ticker and e.kind != "surge"]
        shocks = {e: (-1 if e.kind == "burst" else 1) * rng.uniform(0.02, 0.05) for e in evs}
        drifts = {e: (-1 if e.kind == "burst" else 1) * rng.uniform(0.01, 0.02) for e in evs}
        for h in range(hours + 1):
            t = START + timedelta(hours=h)
            r = rng.gauss(0, 0.0035)
            for e in evs:
                since = (t - e.start).total_seconds() / 3600
                if 0 < since <= 6:
                    r += shocks[e] / 6
                elif 6 < since <= 54:
                    r += drifts[e] / 48
            price *= math.exp(r)
            rows.append({"ticker": ticker, "time": t.isoformat().replace("+00:00", "Z"), "open": round(price, 4),
                         "high": round(price * 1.002, 4), "low": round(price * 0.998, 4), "close": round(price, 4),
                         "volume": rng.randint(50_000, 500_000), "source": SOURCE})
    return rows


def write_inputs(out: Path = OUT) -> tuple[Path, list[dict], list[InjectedEvent]]:
    out.mkdir(parents=True, exist_ok=True)
    s = spec()
    items = generate(s, template_pool(), render)
    for item in items:
        item["source"] = "newswire" if "headline" in item else "social"
        item.pop("origin", None)
    import gzip

    with gzip.open(out / "items.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write("".join(json.dumps(i) + "\n" for i in items))
    (out / "events.json").write_text(json.dumps([e.to_dict() for e in s.events], indent=2) + "\n")
    bars = prices(list(s.events))
    header = list(bars[0])
    (out / "prices.csv").write_text(",".join(header) + "\n" + "".join(
        ",".join(str(b[k]) for k in header) + "\n" for b in bars))
    return out / "items.jsonl.gz", items, list(s.events)


def run_pipeline(items_path: Path, n_items: int, model_dir: Path, out: Path = OUT) -> dict:
    """Replay the items through tansu + a worker into InfluxDB 1.6.7, then save the results rows."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from streams.tools import services
    from streams.tools.backtest import load_results_influx

    root = Path(__file__).resolve().parents[1]
    scratch = Path(tempfile.mkdtemp(prefix="finsentry-sample-"))  # fresh broker: fresh replay state
    settings = {"FINSENTRY_INFLUX__BUCKET": "backtest", "FINSENTRY_KAFKA__CONSUMER_GROUP": "backtest-sample"}
    try:
        with services.local_pipeline(model_dir, scratch, settings) as stack:
            env, influx_url = stack.env, stack.influx_url
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "streams.cli", "replay", str(items_path), "--quiet", "--speed", "max",
                            "--state", str(scratch / "replay-state.json"), "--run-id", "backtest-sample"],
                           cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
            # a last item a day later closes every window
            flush = json.dumps({"id": "flush", "source": "sample", "tickers": ["ZZZZ"], "headline": "End of sample",
                                "published_at": (START + timedelta(days=11)).isoformat()})
            (scratch / "flush.jsonl").write_text(flush + "\n")
            subprocess.run([sys.executable, "-m", "streams.cli", "publish", str(scratch / "flush.jsonl")], cwd=root,
                           env=env, check=True, stdout=subprocess.DEVNULL)
            # done when the hourly windows stop changing (very late items are left out of them by design)
            deadline, last, stable = time.monotonic() + 1800, -1, 0
            while time.monotonic() < deadline and stable < 15:
                try:
                    windows, _, _ = load_results_influx(influx_url, "backtest", window="1h")
                except RuntimeError:  # the worker has not created the database yet
                    windows = []
                total = sum(w.count for w in windows if w.ticker != "ZZZZ")
                stable = stable + 1 if total == last and total > 0 else 0
                last = total
                time.sleep(2)
            elapsed = time.monotonic() - started
            windows, alerts, rows = load_results_influx(influx_url, "backtest", window="1h")
        rows = [r for r in rows if r.get("ticker") != "ZZZZ"]
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"items": n_items, "windows": len(windows), "alerts": len(alerts), "seconds": round(elapsed, 1)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", action="store_true", help="also run the items through a local pipeline")
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    args = ap.parse_args()
    path, items, events = write_inputs()
    print(f"wrote {len(items)} items, {len(events)} events and synthetic prices to {path.parent}")
    if args.pipeline:
        print(json.dumps(run_pipeline(path, len(items), args.model_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
