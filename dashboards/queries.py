"""Every query the Grafana files contain (InfluxQL, and the PromQL panels), and Grafana's macro expansion.

Used by the tests (run each query against a real InfluxDB) and by the preview
renderer, so both read exactly what Grafana would send.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

__all__ = ["Query", "dashboard_queries", "alert_queries", "all_queries", "prometheus_queries", "expand", "DASHBOARD_DIR",
           "ALERTING_DIR", "load_dashboards"]

ROOT = Path(__file__).resolve().parent
DASHBOARD_DIR = ROOT / "json"
ALERTING_DIR = ROOT / "provisioning" / "alerting"


@dataclass(frozen=True)
class Query:
    source: str  # "<file> / <panel or rule title> / <refId>"
    kind: str  # panel | variable | annotation | alert
    text: str
    result_format: str = "time_series"  # time_series | table (panels); variables/annotations/alerts: as noted
    panel_type: str = ""
    alias: str | None = None


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def _is_promql(target: dict) -> bool:
    return (target.get("datasource") or {}).get("type") == "prometheus"


def dashboard_queries(directory: Path = DASHBOARD_DIR) -> Iterator[Query]:
    """The InfluxQL ones (panels, variables, annotations)."""
    for name, board in load_dashboards(directory).items():
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                if _is_promql(target):
                    continue
                yield Query(f"{name} / {panel.get('title')} / {target.get('refId')}", "panel", target["query"],
                            target.get("resultFormat", "time_series"), panel.get("type", ""), target.get("alias"))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                yield Query(f"{name} / ${variable['name']}", "variable", variable["query"], "variable")
        for ann in board.get("annotations", {}).get("list", []):
            if ann.get("query"):
                yield Query(f"{name} / annotation {ann['name']}", "annotation", ann["query"], "annotation")


def alert_queries(directory: Path = ALERTING_DIR) -> Iterator[Query]:
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                for item in rule.get("data", []):
                    if item.get("datasourceUid") != "__expr__":
                        yield Query(f"{path.name} / {rule['title']} / {item['refId']}", "alert",
                                    item["model"]["query"], item["model"].get("resultFormat", "time_series"))


def prometheus_queries(directory: Path = DASHBOARD_DIR) -> Iterator[Query]:
    """The PromQL panel targets (on the workers' ``/metrics``)."""
    for name, board in load_dashboards(directory).items():
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                if _is_promql(target):
                    yield Query(f"{name} / {panel.get('title')} / {target.get('refId')}", "promql", target["expr"],
                                "time_series", panel.get("type", ""), target.get("legendFormat"))


def all_queries() -> list[Query]:
    """Every InfluxQL query (dashboards and alert rules)."""
    return [*dashboard_queries(), *alert_queries()]


def expand(text: str, *, time_from: str, time_to: str, interval: str = "5m", variables: dict[str, str] | None = None
           ) -> str:
    """Grafana's InfluxQL macros: ``$timeFilter``, ``$__interval``, ``$var``/``${var}``.

    >>> expand('SELECT x FROM m WHERE "t" =~ /^$ticker$/ AND $timeFilter GROUP BY time($__interval)',
    ...        time_from="'2026-01-01T00:00:00Z'", time_to="now()", variables={"ticker": "AAPL"})
    'SELECT x FROM m WHERE "t" =~ /^AAPL$/ AND time >= \\'2026-01-01T00:00:00Z\\' AND time <= now() GROUP BY time(5m)'
    """
    out = text.replace("$timeFilter", f"time >= {time_from} AND time <= {time_to}")
    out = out.replace("$__interval", interval)
    for name, value in (variables or {}).items():
        out = out.replace(f"${{{name}}}", re.escape(value)).replace(f"${name}", re.escape(value))
    if "$" in re.sub(r"/\^.*?\$/", "", out):
        raise ValueError(f"unexpanded macro in: {out}")
    return out
