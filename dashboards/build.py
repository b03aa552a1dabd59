"""Grafana dashboards as code (grafana-foundation-sdk, Grafana 11.6 types).

    .venv/bin/python -m dashboards.build          # rewrite dashboards/json/*.json
    .venv/bin/python -m dashboards.build --check  # fail if the JSON files are stale

Every query is raw InfluxQL in the subset InfluxDB 1.x, 2.x (DBRP) and 3.x all
answer: SELECT with mean/sum/count/min/max/last, GROUP BY time and tags,
``fill``, ORDER BY time DESC + LIMIT and SHOW TAG VALUES; no Flux, SQL,
subqueries, SLIMIT/SOFFSET or continuous queries. Grafana expands
``$timeFilter``, ``$__interval`` and ``$ticker`` before sending them;
``tests/test_dashboards.py`` runs every one of them against InfluxDB 1.6.7
filled by the real pipeline.

The pipeline dashboard also has PromQL panels on the workers' ``/metrics``
(consumer lag, inference and sink latency, outcomes by stage): what only the
live process knows. ``tests/test_metrics.py`` runs each of them against a real
Prometheus scraping a real worker.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

__all__ = ["DATASOURCE_UID", "PROMETHEUS_UID", "InfluxQL", "PromQL", "dashboards", "render", "main"]

JSON_DIR = Path(__file__).resolve().parent / "json"
DATASOURCE_UID = "finsentry-influxdb"
DS = model.DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)
PROMETHEUS_UID = "finsentry-prometheus"
PROM = model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
TICKER = "\"ticker\" =~ /^$ticker$/"


@dataclass
class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target (the SDK ships no InfluxDB query type)."""

    ref_id: str
    query: str
    result_format: str = "time_series"  # or "table"
    alias: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id, "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
            "rawQuery": True, "query": self.query, "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        return out


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    def __init__(self, query: str, ref_id: str = "A", table_format: bool = False, alias: str | None = None) -> None:
        self._internal = InfluxQLQuery(ref_id, " ".join(query.split()), "table" if table_format else "time_series",
                                       alias)

    def build(self) -> InfluxQLQuery:
        return self._internal


def PromQL(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    """A PromQL target on the Prometheus data source (range query, legend from labels)."""
    return (prometheus.Dataquery().expr(" ".join(expr.split())).legend_format(legend).ref_id(ref_id).range()
            .datasource(PROM))


def _sort(field: str, desc: bool) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val="sortBy", options={"sort": [{"field": field, "desc": desc}]})


def _limit(n: int) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val="limit", options={"limitField": n})


def _hide_time() -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})


def _series(title: str, *queries: InfluxQL | prometheus.Dataquery, unit: str = "none", lo: float | None = None,
            hi: float | None = None, w: int = 12, h: int = 8, points: bool = False, description: str = "",
            datasource: model.DataSourceRef = DS) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(datasource).unit(unit).span(w).height(h).description(description)
    for q in queries:
        panel = panel.with_target(q)
    if lo is not None:
        panel = panel.min(lo)
    if hi is not None:
        panel = panel.max(hi)
    if points:
        panel = panel.draw_style(common.GraphDrawStyle.POINTS).point_size(4)
    return panel


def _table(title: str, query: InfluxQL, *transformations: model.DataTransformerConfig, w: int = 12, h: int = 8,
           description: str = "") -> table.Panel:
    panel = table.Panel().title(title).datasource(DS).with_target(query).span(w).height(h).description(description)
    for t in transformations:
        panel = panel.with_transformation(t)
    return panel


def _alert_annotation() -> db.AnnotationQuery:
    return db.AnnotationQuery().name("finsentry alerts").datasource(DS).enable(True).icon_color("red")


ANNOTATION_QUERY = ("SELECT \"title\", \"text\", \"ticker\" FROM \"alerts\" WHERE \"status\" = 'firing' "
                    "AND $timeFilter")
ANNOTATION_QUERY_TICKER = ("SELECT \"title\", \"text\", \"ticker\" FROM \"alerts\" WHERE \"status\" = 'firing' "
                           f"AND {TICKER} AND $timeFilter")


def overview() -> db.Dashboard:
    rank = ("SELECT mean(\"mean_score\") AS \"mean score\", sum(\"count\") AS \"mentions\", "
            "mean(\"negative_share\") AS \"negative share\" FROM \"ticker_window\" "
            "WHERE \"window\" = '5m' AND $timeFilter GROUP BY \"ticker\"")
    return (
        db.Dashboard("finsentry · market overview").uid("finsentry-overview").tags(["finsentry"])
        .time("now-6h", "now").refresh("1m").timezone("utc")
        .with_panel(_table("Most negative tickers", InfluxQL(rank, table_format=True),
                           _hide_time(), _sort("mean score", False), _limit(10), w=8,
                           description="Mean of closed 5-minute windows over the time range, lowest first."))
        .with_panel(_table("Most positive tickers", InfluxQL(rank, table_format=True),
                           _hide_time(), _sort("mean score", True), _limit(10), w=8))
        .with_panel(_table(
            "Biggest sentiment moves",
            InfluxQL("SELECT min(\"z_score\") AS \"lowest z\", max(\"z_score\") AS \"highest z\", "
                     "max(\"volume_ratio\") AS \"volume x normal\" FROM \"ticker_window\" "
                     "WHERE \"window\" = '5m' AND $timeFilter GROUP BY \"ticker\"", table_format=True),
            _hide_time(), _sort("lowest z", False), _limit(10), w=8,
            description="Largest z-scores against each ticker's own baseline."))
        .with_panel(_series(
            "Mention volume per ticker",
            InfluxQL("SELECT sum(\"count\") FROM \"ticker_window\" WHERE \"window\" = '5m' AND $timeFilter "
                     "GROUP BY time($__interval), \"ticker\" fill(0)", alias="$tag_ticker"),
            w=12, h=9))
        .with_panel(_series(
            "Mean sentiment per ticker",
            InfluxQL("SELECT mean(\"mean_score\") FROM \"ticker_window\" WHERE \"window\" = '5m' AND $timeFilter "
                     "GROUP BY time($__interval), \"ticker\" fill(none)", alias="$tag_ticker"),
            lo=-1, hi=1, w=12, h=9))
        .with_panel(_table(
            "Latest alerts",
            InfluxQL("SELECT \"ticker\", \"severity\", \"rule\", \"status\", \"text\", \"dedup_key\" FROM \"alerts\" "
                     "WHERE $timeFilter ORDER BY time DESC LIMIT 50", table_format=True), w=24, h=9))
        .annotation(_alert_annotation())
    )


def ticker() -> db.Dashboard:
    variable = (db.QueryVariable("ticker").label("Ticker").datasource(DS)
                .query("SHOW TAG VALUES FROM \"ticker_window\" WITH KEY = \"ticker\"")
                .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD).sort(model.VariableSort.ALPHABETICAL_ASC))
    window = f"FROM \"ticker_window\" WHERE {TICKER} AND \"window\" = '5m' AND $timeFilter"
    return (
        db.Dashboard("finsentry · ticker").uid("finsentry-ticker").tags(["finsentry"])
        .time("now-24h", "now").refresh("1m").timezone("utc").with_variable(variable)
        .with_panel(_series(
            "Item scores and mean score",
            InfluxQL(f"SELECT \"score\" FROM \"sentiment\" WHERE {TICKER} AND $timeFilter", "A", alias="item"),
            InfluxQL(f"SELECT mean(\"score\") FROM \"sentiment\" WHERE {TICKER} AND $timeFilter "
                     "GROUP BY time($__interval) fill(none)", "B", alias="mean"),
            lo=-1, hi=1, w=24, h=9, points=False))
        .with_panel(_series(
            "Mentions per minute",
            InfluxQL(f"SELECT sum(\"count\") FROM \"ticker_window\" WHERE {TICKER} AND \"window\" = '1m' "
                     "AND $timeFilter GROUP BY time($__interval) fill(0)", alias="mentions"), w=12))
        .with_panel(_series(
            "Negative share (5-minute windows)",
            InfluxQL(f"SELECT mean(\"negative_share\") {window} GROUP BY time($__interval) fill(none)",
                     alias="negative share"), unit="percentunit", lo=0, hi=1, w=12))
        .with_panel(_series(
            "z-score against the ticker's baseline",
            InfluxQL(f"SELECT min(\"z_score\") {window} GROUP BY time($__interval) fill(none)", "A", alias="z"),
            w=12))
        .with_panel(_series(
            "Window mean vs baseline",
            InfluxQL(f"SELECT mean(\"mean_score\") AS \"window mean\", mean(\"baseline_mean\") AS \"baseline\" "
                     f"{window} GROUP BY time($__interval) fill(none)"), lo=-1, hi=1, w=12))
        .with_panel(_table(
            "Latest scored items",
            InfluxQL(f"SELECT \"headline\", \"score\", \"label\", \"source\", \"id\" FROM \"sentiment\" "
                     f"WHERE {TICKER} AND $timeFilter ORDER BY time DESC LIMIT 50", table_format=True),
            w=24, h=10))
        .annotation(_alert_annotation())
    )


def pipeline() -> db.Dashboard:
    p = "FROM \"pipeline\" WHERE $timeFilter"
    return (
        db.Dashboard("finsentry · pipeline health").uid("finsentry-pipeline").tags(["finsentry"])
        .time("now-1h", "now").refresh("30s").timezone("utc")
        .with_panel(stat.Panel().title("Items/s (last 5 min)").datasource(DS).span(6).height(5).unit("none")
                    .with_target(InfluxQL("SELECT sum(\"items\") / 300 FROM \"pipeline\" WHERE time > now() - 5m"))
                    .description("Processing time: items taken by the scoring workers."))
        .with_panel(_series("Items per second", InfluxQL(f"SELECT sum(\"items\") / 60 {p} GROUP BY time(1m) "
                                                         "fill(0)", alias="items/s"), w=18, h=5))
        .with_panel(_series(
            "End-to-end latency (publish → stored)",
            InfluxQL(f"SELECT mean(\"latency_p50_ms\") AS \"p50\", max(\"latency_max_ms\") AS \"max\" {p} "
                     "GROUP BY time($__interval) fill(none)"), unit="ms", w=12))
        .with_panel(_series(
            "Batch size and inference time",
            InfluxQL(f"SELECT mean(\"items\") AS \"items per batch\" {p} GROUP BY time($__interval) fill(none)", "A"),
            InfluxQL(f"SELECT mean(\"inference_ms\") AS \"inference ms\" {p} GROUP BY time($__interval) fill(none)",
                     "B"), w=12))
        .with_panel(_series(
            "Dead-letter rate",
            InfluxQL(f"SELECT sum(\"dead_letters\") / sum(\"items\") {p} GROUP BY time($__interval) fill(none)",
                     alias="dead-letter share"), unit="percentunit", lo=0, w=12))
        .with_panel(_series(
            "Scored items per worker",
            InfluxQL(f"SELECT sum(\"scored\") {p} GROUP BY time($__interval), \"worker\" fill(0)",
                     alias="$tag_worker"), w=12))
        # from the workers' /metrics (Prometheus): what only the live process knows
        .with_panel(_series(
            "Consumer lag per input partition",
            PromQL("max by (topic, partition) (finsentry_consumer_lag)", "{{topic}}[{{partition}}]"),
            lo=0, w=12, datasource=PROM,
            description="Messages on the input topics not yet committed (acked only after InfluxDB accepted them)."))
        .with_panel(_series(
            "Items by outcome (per second)",
            PromQL("sum by (outcome) (rate(finsentry_items_total[$__rate_interval]))", "{{outcome}}", "A"),
            PromQL("sum by (stage) (rate(finsentry_dead_letters_total[$__rate_interval]))", "dead letters: {{stage}}",
                   "B"), lo=0, w=12, datasource=PROM))
        .with_panel(_series(
            "Inference time per batch (p50, p99)",
            PromQL("histogram_quantile(0.5, sum by (le) (rate(finsentry_inference_seconds_bucket[$__rate_interval])))",
                   "p50", "A"),
            PromQL("histogram_quantile(0.99, sum by (le) (rate(finsentry_inference_seconds_bucket[$__rate_interval])))",
                   "p99", "B"), unit="s", lo=0, w=12, datasource=PROM))
        .with_panel(_series(
            "InfluxDB write time by stage (p99, retries included)",
            PromQL("histogram_quantile(0.99, sum by (le, stage) "
                   "(rate(finsentry_sink_write_seconds_bucket[$__rate_interval])))", "{{stage}}", "A"),
            PromQL("sum(rate(finsentry_sink_retries_total[$__rate_interval]))", "retries/s", "B"),
            unit="s", lo=0, w=12, datasource=PROM))
    )


def _annotation_json(board: dict[str, Any], query: str) -> None:
    """InfluxQL annotations: the query and column mapping sit on the annotation
    (Grafana's InfluxDB data source turns them into its target on load; the
    typed ``target`` of the schema is the built-in annotation kind)."""
    for ann in board.get("annotations", {}).get("list", []):
        if ann.get("name") == "finsentry alerts":
            ann.update({"query": query, "textColumn": "text", "titleColumn": "title", "tagsColumn": "ticker"})


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON (as Grafana stores it)."""
    out = {}
    for name, builder, query in (("finsentry-overview.json", overview(), ANNOTATION_QUERY),
                                 ("finsentry-ticker.json", ticker(), ANNOTATION_QUERY_TICKER),
                                 ("finsentry-pipeline.json", pipeline(), None)):
        board = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
        if query:
            _annotation_json(board, query)
        _layout(board)
        out[name] = board
    return out


def _layout(board: dict[str, Any]) -> None:
    """Flow panels left to right (the SDK leaves x/y to Grafana), number them."""
    x = y = row_h = 0
    for i, panel in enumerate(board.get("panels", []), start=1):
        pos = panel.setdefault("gridPos", {"h": 8, "w": 12})
        if x + pos["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        pos["x"], pos["y"] = x, y
        x += pos["w"]
        row_h = max(row_h, pos["h"])
        panel["id"] = i


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if dashboards/json differs from the code")
    args = ap.parse_args(argv)
    stale = []
    for name, board in dashboards().items():
        path = JSON_DIR / name
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m dashboards.build", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
