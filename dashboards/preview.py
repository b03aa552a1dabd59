"""Static PNG previews of the dashboards, drawn from the dashboards' own queries.

    .venv/bin/python -m dashboards.preview --url http://127.0.0.1:8086 --db finsentry --out dashboards/previews

No Grafana server can run on the build machines, so this stands in for
screenshots: each panel's InfluxQL (macros expanded like Grafana does) is run
against InfluxDB and drawn with matplotlib, time series as lines, tables as
text, in the dashboard's own grid layout.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from dashboards.queries import expand, load_dashboards

__all__ = ["influxql", "render_dashboard", "main"]


def influxql(url: str, db: str, query: str, epoch: str = "ms") -> list[dict]:
    """Run one InfluxQL query (1.x ``/query``, also answered by 2.x/3.x with DBRP); raise on errors."""
    params = urllib.parse.urlencode({"db": db, "q": query, "epoch": epoch})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as resp:
        body = json.loads(resp.read())
    results = body.get("results", [{}])
    if "error" in body:
        raise RuntimeError(body["error"])
    for result in results:
        if "error" in result:
            raise RuntimeError(f"{result['error']} in: {query}")
    return [s for result in results for s in result.get("series", [])]


def _label(series: dict, alias: str | None, column: str) -> str:
    tags = series.get("tags") or {}
    if alias:
        text = alias
        for key, value in tags.items():
            text = text.replace(f"$tag_{key}", value)
        return text if len(series["columns"]) <= 2 else f"{text} {column}"
    return " ".join([*tags.values(), column]) if tags else column


def render_dashboard(board: dict, url: str, db: str, out: Path, *, time_from: str, time_to: str,
                     variables: dict[str, str], interval: str = "5m") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = board.get("panels", [])
    marks = []  # alert annotations, drawn as red lines like Grafana does
    for ann in board.get("annotations", {}).get("list", []):
        if ann.get("query"):
            query = expand(ann["query"], time_from=time_from, time_to=time_to, interval=interval, variables=variables)
            marks += [datetime.fromtimestamp(v[0] / 1000, tz=timezone.utc) for s in influxql(url, db, query)
                      for v in s["values"]]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, rows * 0.42 + 1), dpi=80)
    used = {v["name"] for v in board.get("templating", {}).get("list", [])}
    shown = ", ".join(f"{k}={v}" for k, v in variables.items() if k in used)
    fig.suptitle(f"{board['title']}  (preview drawn from InfluxDB{'; ' + shown if shown else ''})",
                 fontsize=13, x=0.01, ha="left")
    grid = fig.add_gridspec(rows, 24, hspace=2.2, wspace=1.2)
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        ax.set_title(panel["title"], fontsize=10, loc="left")
        drawn = 0
        promql = [t for t in panel.get("targets", []) if "expr" in t]
        for target in panel.get("targets", []):
            if target in promql:  # the workers' live /metrics: nothing to draw them from here
                continue
            query = expand(target["query"], time_from=time_from, time_to=time_to, interval=interval,
                           variables=variables)
            series = influxql(url, db, query)
            if target.get("resultFormat") == "table" or panel["type"] in ("table", "stat"):
                _draw_table(ax, series, panel["type"], panel.get("transformations", []))
                drawn += 1
                continue
            for s in series:
                times = [datetime.fromtimestamp(v[0] / 1000, tz=timezone.utc) for v in s["values"]]
                for col in range(1, len(s["columns"])):
                    values = [v[col] for v in s["values"]]
                    if any(v is not None for v in values):
                        ax.plot(times, [float("nan") if v is None else v for v in values], lw=1,
                                marker="o" if len(values) <= 12 else None, ms=3,
                                label=_label(s, target.get("alias"), s["columns"][col]))
                        drawn += 1
        if drawn == 0 and promql:
            ax.axis("off")
            ax.text(0.5, 0.5, "Prometheus panel (live /metrics): not drawn in this preview", ha="center",
                    va="center", transform=ax.transAxes, color="grey", fontsize=8)
        elif drawn == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        if ax.lines:
            for mark in marks:
                ax.axvline(mark, color="red", ls="--", lw=0.8, alpha=0.7)
            ax.tick_params(labelsize=7)
            if len(ax.lines) <= 12:
                ax.legend(fontsize=6, loc="upper left", ncol=2)
            for label in ax.get_xticklabels():
                label.set_rotation(20)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def _draw_table(ax, series: list[dict], panel_type: str, transformations: list[dict]) -> None:
    ax.axis("off")
    if not series:
        return
    columns = [c for c in series[0]["columns"] if c != "time"]
    tag_keys = sorted({k for s in series for k in (s.get("tags") or {})})
    rows = []
    for s in series:
        for values in s["values"]:
            row = dict(zip(s["columns"], values))
            rows.append([*(s.get("tags") or {}).values(), *[row.get(c) for c in columns]])
    header = [*tag_keys, *columns]
    if panel_type == "stat":
        value = rows[0][-1] if rows else None
        ax.text(0.5, 0.4, "–" if value is None else f"{value:.1f}", ha="center", va="center", fontsize=28,
                transform=ax.transAxes)
        return

    def fmt(v):
        if isinstance(v, float):
            return f"{v:+.2f}" if abs(v) < 10 else f"{v:.0f}"
        if v is None:
            return ""
        text = "".join(ch for ch in str(v) if ord(ch) < 0x2000)[:60]  # no emoji glyphs in the default font
        return text.replace("$", r"\$")  # not matplotlib mathtext

    limit = 10
    for t in transformations:  # the panel's own sortBy/limit, as Grafana applies them
        if t.get("id") == "sortBy":
            spec = t["options"]["sort"][0]
            if spec["field"] in header:
                i = header.index(spec["field"])
                present = [r for r in rows if r[i] is not None]
                rows = sorted(present, key=lambda r: r[i], reverse=spec.get("desc", False)) + \
                    [r for r in rows if r[i] is None]
        elif t.get("id") == "limit":
            limit = min(limit, int(t["options"].get("limitField", limit)))
    cells = [[fmt(v) for v in r] for r in rows[:limit]]
    if cells:
        tbl = ax.table(cellText=cells, colLabels=header, loc="upper left", cellLoc="left")
        tbl.auto_set_font_size(False)
        tbl.set_fontsize(7)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8086")
    ap.add_argument("--db", default="finsentry")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "previews")
    ap.add_argument("--from", dest="time_from", default="now() - 6h", help="InfluxQL time expression")
    ap.add_argument("--to", dest="time_to", default="now()")
    ap.add_argument("--ticker", default=None, help="value of $ticker (default: first ticker found)")
    args = ap.parse_args(argv)
    ticker = args.ticker
    if ticker is None:
        found = influxql(args.url, args.db, 'SHOW TAG VALUES FROM "ticker_window" WITH KEY = "ticker"')
        ticker = found[0]["values"][0][1] if found else "AAPL"
    for name, board in load_dashboards().items():
        path = render_dashboard(board, args.url, args.db, args.out / name.replace(".json", ".png"),
                                time_from=args.time_from, time_to=args.time_to, variables={"ticker": ticker})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
