"""Backtest the sentiment signal and the alerts against price bars.

Inputs
------
* Sentiment results of a run: the ``ticker_window`` and ``alerts`` measurements,
  read from InfluxDB with InfluxQL (``load_results_influx``) or from a JSONL
  file of the same rows (``load_results_jsonl``; ``--save-results`` writes one).
* Price bars, CSV or Parquet, one row per ticker and bar (docs/replay.md)::

      ticker,time,open,high,low,close,volume
      AAPL,2026-03-02T14:00:00Z,180.1,181.0,179.8,180.6,120000

  ``time`` is the bar's close time (UTC, ISO 8601); bars of one ticker must be
  regular (the same interval).

Definitions (all hand-checkable, see tests/test_backtest.py)
------------------------------------------------------------
* price at time *t*: the close of the last bar with ``time <= t`` (no look-ahead);
* forward return after *t* over horizon *h*: ``price(t + h) / price(t) - 1``,
  only when a bar exists at or after ``t + h``;
* an alert's *signed* return is the forward return for positive alerts and its
  negative for negative ones; a *hit* is a signed return > 0; the mean comes
  with a 95 % t-interval;
* information coefficient (IC): Spearman rank correlation, over all closed
  windows of all tickers, between the window's mean score and the forward return
  from the window's end;
* event study: mean cumulative return from ``price(t)`` at each bar offset
  -k..+k around the alerts, by polarity.
"""

from __future__ import annotations

import base64
import bisect
import html
import io
import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

from streams.aggregation.rules import polarity_of

import typer
from typing import Optional

from streams.contracts.settings import load_settings
from streams.tools.options import console

__all__ = ["Bars", "FiredAlert", "WindowRow", "load_prices", "load_results_influx", "load_results_jsonl",
           "forward_return", "alert_returns", "information_coefficient", "event_study", "run_backtest",
           "write_report", "spearman", "mean_ci"]



def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1e9 if value > 1e14 else value, tz=timezone.utc)
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@dataclass
class Bars:
    """Close prices of one ticker, by bar close time."""

    ticker: str
    times: list[datetime]
    closes: list[float]

    def price_at(self, t: datetime) -> float | None:
        i = bisect.bisect_right(self.times, t) - 1
        return self.closes[i] if i >= 0 else None

    def covers(self, t: datetime) -> bool:
        return bool(self.times) and self.times[-1] >= t

    @property
    def interval(self) -> timedelta:
        return min((b - a for a, b in zip(self.times, self.times[1:])), default=timedelta(hours=1))


@dataclass(frozen=True)
class FiredAlert:
    """An alert as a run stored it (InfluxDB ``alerts`` or a results file): when and what fired."""

    ticker: str
    time: datetime
    rule: str
    kind: str
    severity: str
    dedup_key: str

    @property
    def polarity(self) -> str:
        return polarity_of(self.kind)


@dataclass(frozen=True)
class WindowRow:
    ticker: str
    start: datetime
    window: str
    count: int
    mean_score: float

    @property
    def end(self) -> datetime:
        units = {"m": 60, "h": 3600, "s": 1}
        return self.start + timedelta(seconds=int(self.window[:-1]) * units[self.window[-1]])


def load_prices(path: Path) -> dict[str, Bars]:
    """Bars per ticker from CSV or Parquet (columns: ticker, time, close; others optional)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading Parquet needs pyarrow: pip install 'finsentry[parquet]'") from None

        rows = pq.read_table(path).to_pylist()
    else:
        import csv

        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(row for row in fh if not row.startswith("#")))
    missing = {"ticker", "time", "close"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: price file needs columns ticker, time, close; missing {sorted(missing)}")
    by_ticker: dict[str, list[tuple[datetime, float]]] = {}
    for i, row in enumerate(rows, start=2):
        try:
            by_ticker.setdefault(str(row["ticker"]).upper(), []).append((_ts(row["time"]), float(row["close"])))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: row {i}: {exc}") from None
    out = {}
    for ticker, bars in by_ticker.items():
        bars.sort()
        out[ticker] = Bars(ticker, [t for t, _ in bars], [c for _, c in bars])
    return out


def _rows_to_results(rows: list[dict]) -> tuple[list[WindowRow], list[FiredAlert]]:
    windows, alerts = [], []
    for r in rows:
        if r.get("measurement") == "ticker_window":
            windows.append(WindowRow(r["ticker"], _ts(r["time"]), r["window"], int(r["count"]), float(r["mean_score"])))
        elif r.get("measurement") == "alerts" and r.get("status") == "firing":
            alerts.append(FiredAlert(r["ticker"], _ts(r["time"]), r["rule"], r.get("kind", ""), r["severity"],
                                r["dedup_key"]))
    return windows, sorted(alerts, key=lambda a: (a.time, a.ticker))


def load_results_jsonl(path: Path) -> tuple[list[WindowRow], list[FiredAlert]]:
    return _rows_to_results([json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()])


def load_results_influx(url: str, db: str, window: str = "1h", token: str | None = None,
                        where: str = "") -> tuple[list[WindowRow], list[FiredAlert], list[dict]]:
    """Read one run's windows and firing alerts with InfluxQL (1.x /query; 2.x/3.x via DBRP + token)."""
    rows: list[dict] = []
    queries = {
        "ticker_window": f"SELECT \"count\", \"mean_score\" FROM \"ticker_window\" WHERE \"window\" = '{window}'{where}",
        "alerts": f"SELECT \"rule\", \"kind\", \"severity\", \"status\", \"dedup_key\" FROM \"alerts\" "
                  f"WHERE \"status\" = 'firing'{where}",
    }
    for measurement, query in queries.items():
        params = urllib.parse.urlencode({"db": db, "q": query + " GROUP BY \"ticker\", \"window\"", "epoch": "s"})
        request = urllib.request.Request(f"{url}/query?{params}")
        if token:
            request.add_header("Authorization", f"Token {token}")
        with urllib.request.urlopen(request, timeout=60) as resp:
            body = json.loads(resp.read())
        for result in body.get("results", []):
            if "error" in result:
                raise RuntimeError(f"InfluxDB: {result['error']}")
            for series in result.get("series", []):
                for values in series["values"]:
                    row = dict(zip(series["columns"], values), **series.get("tags", {}))
                    row["measurement"] = measurement
                    rows.append(row)
    windows, alerts = _rows_to_results(rows)
    return windows, alerts, rows


def forward_return(bars: Bars, t: datetime, horizon: timedelta) -> float | None:
    """``price(t + h) / price(t) - 1``; None without a bar at t or at/after t + h."""
    p0 = bars.price_at(t)
    if p0 is None or not bars.covers(t + horizon):
        return None
    p1 = bars.price_at(t + horizon)
    return None if p1 is None else p1 / p0 - 1


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a t-interval (normal when scipy is missing); (mean, low, high).

    >>> [round(v, 4) for v in mean_ci([0.01, 0.03, 0.02])]
    [0.02, -0.0048, 0.0448]
    """
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return (mean, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    try:
        from scipy.stats import t as student

        q = float(student.ppf(0.5 + level / 2, n - 1))
    except ImportError:  # pragma: no cover
        q = 1.959964
    half = q * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 6)
    0.8
    """
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else math.nan


def alert_returns(alerts: list[FiredAlert], prices: dict[str, Bars], horizon: timedelta) -> list[dict]:
    out = []
    for a in alerts:
        bars = prices.get(a.ticker)
        r = forward_return(bars, a.time, horizon) if bars else None
        if r is None or a.polarity == "volume":
            continue
        signed = -r if a.polarity == "negative" else r
        out.append({"dedup_key": a.dedup_key, "ticker": a.ticker, "time": a.time.isoformat(), "polarity": a.polarity,
                    "return": r, "signed_return": signed, "hit": signed > 0})
    return out


def information_coefficient(windows: list[WindowRow], prices: dict[str, Bars], horizon: timedelta,
                            min_count: int = 1) -> dict:
    pairs = []
    for w in windows:
        bars = prices.get(w.ticker)
        if bars is None or w.count < min_count:
            continue
        r = forward_return(bars, w.end, horizon)
        if r is not None:
            pairs.append((w.mean_score, r))
    return {"n": len(pairs), "ic": spearman([p[0] for p in pairs], [p[1] for p in pairs])}


def event_study(alerts: list[FiredAlert], prices: dict[str, Bars], bars_before: int = 24, bars_after: int = 48) -> dict:
    """Mean cumulative return around alerts, by polarity, at each bar offset."""
    out: dict[str, dict] = {}
    for polarity in ("negative", "positive"):
        paths = []
        for a in alerts:
            bars = prices.get(a.ticker)
            if a.polarity != polarity or bars is None:
                continue
            p0 = bars.price_at(a.time)
            step = bars.interval
            if p0 is None or not bars.covers(a.time + step * bars_after) or bars.price_at(a.time - step * bars_before) is None:
                continue
            paths.append([bars.price_at(a.time + step * k) / p0 - 1 for k in range(-bars_before, bars_after + 1)])
        offsets = list(range(-bars_before, bars_after + 1))
        mean = [sum(p[i] for p in paths) / len(paths) for i in range(len(offsets))] if paths else []
        out[polarity] = {"n": len(paths), "offsets": offsets, "mean_cumulative_return": mean}
    return out


@dataclass
class BacktestResult:
    horizons: dict[str, dict] = field(default_factory=dict)
    ic: dict[str, dict] = field(default_factory=dict)
    event_study: dict = field(default_factory=dict)
    alerts: int = 0
    windows: int = 0
    tickers: list[str] = field(default_factory=list)
    per_alert: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"alerts": self.alerts, "windows": self.windows, "tickers": self.tickers, "horizons": self.horizons,
                "information_coefficient": self.ic, "event_study": self.event_study, "per_alert": self.per_alert}


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: undefined numbers (no alerts, one alert's interval) become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _horizon_label(h: timedelta) -> str:
    s = int(h.total_seconds())
    return f"{s // 86400}d" if s % 86400 == 0 else f"{s // 3600}h" if s % 3600 == 0 else f"{s // 60}m"


def run_backtest(windows: list[WindowRow], alerts: list[FiredAlert], prices: dict[str, Bars],
                 horizons: Sequence[timedelta] = (timedelta(hours=1), timedelta(days=1), timedelta(days=5)),
                 bars_before: int = 24, bars_after: int = 48) -> BacktestResult:
    result = BacktestResult(alerts=len(alerts), windows=len(windows),
                            tickers=sorted({w.ticker for w in windows} & set(prices)))
    for h in horizons:
        label = _horizon_label(h)
        rows = alert_returns(alerts, prices, h)
        by_polarity = {}
        for polarity in ("negative", "positive", "all"):
            subset = [r for r in rows if polarity == "all" or r["polarity"] == polarity]
            mean, low, high = mean_ci([r["signed_return"] for r in subset])
            raw_mean = mean_ci([r["return"] for r in subset])[0]
            by_polarity[polarity] = {
                "n": len(subset), "mean_return": raw_mean, "mean_signed_return": mean, "ci95": [low, high],
                "hit_rate": (sum(r["hit"] for r in subset) / len(subset)) if subset else math.nan,
            }
        result.horizons[label] = by_polarity
        result.ic[label] = information_coefficient(windows, prices, h)
        if label == _horizon_label(horizons[-1]):
            result.per_alert = rows
    result.event_study = event_study(alerts, prices, bars_before, bars_after)
    return result


# -- report --------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(result: BacktestResult, windows: list[WindowRow], alerts: list[FiredAlert], prices: dict[str, Bars],
           max_tickers: int = 6) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(9, 4))
    for polarity, color in (("negative", "tab:red"), ("positive", "tab:green")):
        es = result.event_study.get(polarity, {})
        if es.get("n"):
            ax.plot(es["offsets"], [100 * v for v in es["mean_cumulative_return"]], color=color,
                    label=f"{polarity} alerts (n={es['n']})")
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("bars from the alert")
    ax.set_ylabel("mean cumulative return, %")
    ax.set_title("Event study: price around alerts")
    ax.legend()
    plots["event_study"] = _png(fig)

    labels = list(result.horizons)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for j, (polarity, color) in enumerate((("negative", "tab:red"), ("positive", "tab:green"))):
        means = [100 * result.horizons[h][polarity]["mean_return"] for h in labels]
        cis = [result.horizons[h][polarity]["ci95"] for h in labels]
        # the t-interval is symmetric, so its half-width serves for the raw mean too
        err = [0 if math.isnan(c[0]) else 100 * (c[1] - c[0]) / 2 for c in cis]
        xs = [i + (j - 0.5) * 0.35 for i in range(len(labels))]
        ax.bar(xs, [0 if math.isnan(m) else m for m in means], width=0.35, color=color, yerr=err, capsize=3,
               label=f"after {polarity} alerts")
    ax.set_xticks(range(len(labels)), labels)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("mean forward return, % (95 % CI)")
    ax.set_title("Forward returns after alerts")
    ax.legend()
    plots["forward_returns"] = _png(fig)

    busiest = sorted(result.tickers, key=lambda t: -sum(a.ticker == t for a in alerts))[:max_tickers]
    for ticker in busiest:
        bars = prices[ticker]
        fig, ax = plt.subplots(figsize=(10, 3.4))
        ax.plot(bars.times, bars.closes, color="black", lw=1, label="close")
        ax.set_ylabel("price")
        ax2 = ax.twinx()
        ws = sorted((w for w in windows if w.ticker == ticker), key=lambda w: w.start)
        ax2.plot([w.end for w in ws], [w.mean_score for w in ws], color="tab:blue", lw=0.8, alpha=0.7,
                 label="window mean sentiment")
        ax2.set_ylim(-1, 1)
        ax2.set_ylabel("sentiment")
        for a in alerts:
            if a.ticker == ticker and a.polarity != "volume":
                ax.axvline(a.time, color="tab:red" if a.polarity == "negative" else "tab:green", ls="--", lw=1)
        ax.set_title(f"{ticker}: price, sentiment and alerts (dashed: red negative, green positive)")
        plots[f"ticker_{ticker}"] = _png(fig)
    return plots


def _fmt(v: Any, pct: bool = False) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{100 * v:+.2f} %" if pct else f"{v:+.3f}"
    return html.escape(str(v))


def write_report(result: BacktestResult, windows: list[WindowRow], alerts: list[FiredAlert], prices: dict[str, Bars],
                 out_dir: Path, title: str = "finsentry backtest", note: str = "") -> tuple[Path, Path]:
    """``report.html`` (plots embedded) and ``backtest.json`` (every number)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _no_nan(result.to_dict())
    json_path = out_dir / "backtest.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    plots = _plots(result, windows, alerts, prices)
    rows = []
    for label, by_pol in result.horizons.items():
        for polarity in ("negative", "positive", "all"):
            r = by_pol[polarity]
            rows.append(f"<tr><td>{label}</td><td>{polarity}</td><td>{r['n']}</td><td>{_fmt(r['mean_return'], True)}</td>"
                        f"<td>{_fmt(r['mean_signed_return'], True)}</td><td>{_fmt(r['ci95'][0], True)} … "
                        f"{_fmt(r['ci95'][1], True)}</td><td>{_fmt(r['hit_rate'], True).lstrip('+')}</td></tr>")
    ic_rows = "".join(f"<tr><td>{h}</td><td>{v['n']}</td><td>{_fmt(v['ic'])}</td></tr>" for h, v in result.ic.items())
    images = "".join(f"<h3>{html.escape(name.replace('_', ' '))}</h3><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{b64}'/>" for name, b64 in plots.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>
<p>{result.alerts} firing alerts, {result.windows} sentiment windows, tickers with prices: {', '.join(result.tickers)}.</p>
<h2>Forward returns after alerts</h2>
<p>Signed return: the return in the alert's direction (negated for negative alerts). Hit: signed return &gt; 0.</p>
<table><tr><th>horizon</th><th>alerts</th><th>n</th><th>mean return</th><th>mean signed return</th>
<th>95 % CI (signed)</th><th>hit rate</th></tr>{''.join(rows)}</table>
<h2>Information coefficient</h2><p>Spearman rank correlation of each window's mean score with the forward return
from the window's end.</p><table><tr><th>horizon</th><th>windows</th><th>IC</th></tr>{ic_rows}</table>
<h2>Plots</h2>{images}
</body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return html_path, json_path


def command(
    prices: Path = typer.Option(..., help="price bars, CSV or Parquet: ticker,time,open,high,low,close,volume"),
    results: Optional[Path] = typer.Option(None, help="JSONL of ticker_window/alerts rows (instead of InfluxDB)"),
    influx_url: Optional[str] = typer.Option(None, help="read the run from InfluxDB (InfluxQL; env FINSENTRY_INFLUX__URL)"),
    db: Optional[str] = typer.Option(None, help="database / DBRP-mapped bucket of the run (env FINSENTRY_INFLUX__BUCKET)"),
    window: str = typer.Option("1h", help="sentiment windows used for the IC: 1m | 5m | 1h"),
    horizons: str = typer.Option("1h,1d,5d", help="forward-return horizons"),
    out: Path = typer.Option(Path("reports/backtest"), help="folder for report.html and backtest.json"),
    save_results: Optional[Path] = typer.Option(None, help="also write the rows read from InfluxDB as JSONL"),
) -> None:
    """Join a run's sentiment windows and alerts with price bars: forward returns, hit rate, IC, event study."""
    from streams.contracts.settings import parse_duration

    settings = load_settings()
    try:
        bars = load_prices(prices)
        spans = [timedelta(seconds=parse_duration(h)) for h in horizons.split(",") if h.strip()]
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if results:
        windows, alerts = load_results_jsonl(results)
        windows = [w for w in windows if w.window == window]
        source = str(results)
    else:
        url = influx_url or settings.influx.url
        database = db or settings.influx.db
        token = settings.influx.token.get_secret_value() if settings.influx.token else None
        windows, alerts, rows = load_results_influx(url, database, window=window, token=token)
        if save_results:
            save_results.write_text("".join(json.dumps(r) + "\n" for r in rows))
        source = f"{url} database {database}"
    if not windows:
        typer.echo(f"error: no {window} sentiment windows in {source}", err=True)
        raise typer.Exit(2)
    result = run_backtest(windows, alerts, bars, spans)
    html_path, json_path = write_report(result, windows, alerts, bars, out,
                                        note=f"Sentiment from {source}; prices from {prices}.")
    for label, by_pol in result.horizons.items():
        r = by_pol["all"]
        console.print(f"{label}: {r['n']} alerts, mean signed return {100 * r['mean_signed_return']:+.2f} %, "
                      f"hit rate {100 * r['hit_rate']:.0f} %; IC {result.ic[label]['ic']:+.3f} "
                      f"over {result.ic[label]['n']} windows")
    console.print(f"wrote {html_path} and {json_path}")
