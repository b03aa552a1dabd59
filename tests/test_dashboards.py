"""Grafana files as code: structure against Grafana 11.6 schemas, and every query
run against InfluxDB 1.6.7 holding real pipeline output (tansu -> worker)."""

from __future__ import annotations

import copy
import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml

from dashboards import build
from dashboards.preview import influxql, render_dashboard
from dashboards.queries import Query, all_queries, expand, load_dashboards
from streams.tools.generator import InjectedEvent, StreamSpec, TickerProfile, generate
from streams.tools.samples import bad_payloads

ROOT = Path(__file__).resolve().parents[1]
D = ROOT / "dashboards"
SCHEMAS = D / "schema"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
EVENT_TICKER = "EVTA"
#: Grafana 11.6 core panel plugin ids we may use
PANEL_TYPES = {"timeseries", "table", "stat", "gauge", "barchart", "bargauge", "text", "state-timeline", "row"}


def _schema(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / name).read_text()))


def provisioned_datasource_uids() -> dict[str, str]:
    """uid -> data source type, as provisioned."""
    uids = {}
    for path in [*(D / "provisioning" / "datasources").glob("*.yaml"), *(D / "variants").glob("datasource-*.yaml")]:
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            uids[ds["uid"]] = ds["type"]
    return uids


def dashboard_problems(board: dict, uids: dict[str, str]) -> list[str]:
    """Schema errors plus what the schema cannot know: data source uids and panel types."""
    problems = []

    def explain(error):
        if not error.context:  # a panel is Panel | RowPanel: report the branch that nearly matched
            yield error
            return
        branches: dict = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        for sub in min(branches.values(), key=len):
            yield from explain(sub)

    for top in _schema("dashboard-11.6.0.schema.json").iter_errors(board):
        for error in explain(top):
            problems.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message[:160]}")

    def refs(node, path="$"):
        if isinstance(node, dict):
            if "datasource" in node and isinstance(node["datasource"], dict):
                yield path, node["datasource"]
            for k, v in node.items():
                yield from refs(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from refs(v, f"{path}[{i}]")

    for path, ref in refs(board):
        if ref.get("uid") not in uids or ref.get("type") != uids[ref["uid"]]:
            problems.append(f"{path}: unknown data source {ref}")
    for panel in board.get("panels", []):
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"panel {panel.get('title')!r}: unknown panel type {panel.get('type')!r}")
    ids = [p.get("id") for p in board.get("panels", [])]
    if len(set(ids)) != len(ids):
        problems.append("duplicate panel ids")
    return problems


# -- structure ----------------------------------------------------------------

def test_dashboard_json_is_what_the_code_builds():
    assert build.main(["--check"]) == 0, "run: python -m dashboards.build"


@pytest.mark.parametrize("name", sorted(load_dashboards()))
def test_dashboards_match_the_grafana_schema(name):
    board = load_dashboards()[name]
    assert dashboard_problems(board, provisioned_datasource_uids()) == []
    assert board["uid"].startswith("finsentry-") and board["schemaVersion"] >= 39


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda b: b["panels"][0]["gridPos"].update(h="eight"), "is not of type 'number'"),
        (lambda b: b.pop("schemaVersion"), "'schemaVersion' is a required property"),
        (lambda b: b["panels"][0]["targets"][0]["datasource"].update(uid="influx-prod"), "unknown data source"),
        (lambda b: b["panels"][0].update(type="timeseriess"), "unknown panel type"),
        (lambda b: b.update(refresh=5), "is not of type 'string'"),
        (lambda b: b["panels"][0].update(targets={"refId": "A"}), "is not of type 'array'"),
    ],
    ids=["wrong-type", "missing-field", "unknown-datasource", "unknown-panel-type", "refresh-int", "targets-object"],
)
def test_typos_fail_the_structural_check(mutate, expect):
    board = copy.deepcopy(load_dashboards()["finsentry-overview.json"])
    mutate(board)
    problems = dashboard_problems(board, provisioned_datasource_uids())
    assert any(expect in p for p in problems), problems


def test_a_promql_target_on_the_influxdb_data_source_fails_the_structural_check():
    board = copy.deepcopy(load_dashboards()["finsentry-pipeline.json"])
    target = next(t for p in board["panels"] for t in p.get("targets", []) if "expr" in t)
    target["datasource"] = {"type": "prometheus", "uid": build.DATASOURCE_UID}
    problems = dashboard_problems(board, provisioned_datasource_uids())
    assert any("unknown data source" in p for p in problems), problems


def _provisioning_files():
    for path in sorted((D / "provisioning").rglob("*.yaml")) + sorted((D / "variants").glob("*.yaml")):
        kind = {"datasources": "datasources", "dashboards": "dashboards", "alerting": "alerting"}.get(path.parent.name)
        if path.parent.name == "variants":
            kind = "datasources"
        yield path, kind


@pytest.mark.parametrize(("path", "kind"), list(_provisioning_files()), ids=lambda v: getattr(v, "name", v))
def test_provisioning_files_match_their_schemas(path, kind):
    doc = yaml.safe_load(path.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in _schema(f"provisioning-{kind}.schema.json").iter_errors(doc)]
    assert errors == []
    assert list(_literal_secrets(doc)) == [], "secrets and URLs must come from the environment"


def _literal_secrets(node, key=""):
    """Values of secret-bearing keys that are not ``${ENV}`` references."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _literal_secrets(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _literal_secrets(v, key)
    elif key in {"password", "token", "url", "httpHeaderValue1", "basicAuthPassword"}:
        if not re.fullmatch(r"(Token )?\$\{[A-Z0-9_]+\}", str(node)):
            yield key, node


def test_alert_rules_reference_real_queries_and_the_data_source():
    uids = provisioned_datasource_uids()
    doc = yaml.safe_load((D / "provisioning" / "alerting" / "finsentry-rules.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {"finsentry-sustained-negative", "finsentry-dead-letter-rate", "finsentry-pipeline-stalled"} <= \
        {r["uid"] for r in rules}
    for rule in rules:
        ref_ids = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in ref_ids
        for item in rule["data"]:
            if item["datasourceUid"] == "__expr__":
                assert item["model"]["expression"] in ref_ids
            else:
                assert item["datasourceUid"] in uids
        dash = rule["annotations"].get("__dashboardUid__")
        assert dash in {b["uid"] for b in load_dashboards().values()}
    notify = yaml.safe_load((D / "provisioning" / "alerting" / "finsentry-notifications.yaml").read_text())
    assert notify["contactPoints"][0]["receivers"][0]["settings"]["url"] == "${FINSENTRY_ALERT_WEBHOOK_URL}"
    assert notify["policies"][0]["receiver"] == notify["contactPoints"][0]["name"]


def test_compose_mounts_the_provisioning_and_dashboards():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./dashboards/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((D / "provisioning" / "dashboards" / "finsentry.yaml").read_text())
    assert mounts["./dashboards/json"] == provider["providers"][0]["options"]["path"]
    assert grafana["image"].endswith(":11.6.0")
    assert "FINSENTRY_ALERT_WEBHOOK_URL" in grafana["environment"]


# -- semantics: every query on real pipeline output ------------------------------

@pytest.fixture(scope="module")
def filled(broker, influxd, tiny_sentiment_model_dir, model_pool, tmp_path_factory):
    """InfluxDB 1.6.7 filled by the real worker from a generated stream with a negative burst."""
    from streams.tools.services import new_pipeline, stop_workers

    pipe = new_pipeline(broker, influxd, tiny_sentiment_model_dir, tmp_path_factory.mktemp("dashboards"))
    profiles = [TickerProfile(t, 0.5, (0.25, 0.5, 0.25)) for t in (EVENT_TICKER, "QAAA", "QBBB", "QCCC", "QDDD")]
    burst = InjectedEvent(EVENT_TICKER, "burst", T0 + timedelta(hours=3, minutes=2), 10 * 60, 2.5)
    spec = StreamSpec(start=T0, duration_s=4 * 3600, tickers=tuple(profiles), events=(burst,), seed=21,
                      late_share=0.0, very_late_share=0.0)
    items = generate(spec, model_pool)
    flush = {"id": "flush", "source": "test", "tickers": ["ZZZZ"], "headline": "Markets close",
             "published_at": (T0 + timedelta(hours=6)).isoformat()}
    payloads = [json.dumps(i).encode() for i in items] + [raw for _, raw, _ in bad_payloads(seed=3)[:5]]
    worker = pipe.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir))
    try:
        pipe.publish(payloads + [json.dumps(flush).encode()])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = pipe.influx.query("SELECT sum(\"count\") FROM ticker_window WHERE \"window\" = '5m' "
                                     "AND ticker != 'ZZZZ'")
            alerts = pipe.influx.query("SELECT count(\"title\") FROM alerts")
            if rows and rows[0]["sum"] == len(items) and alerts:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"pipeline did not fill InfluxDB\n{worker.output()[-3000:]}")
        yield pipe
    finally:
        stop_workers(pipe)


def _range(query: Query) -> tuple[str, str]:
    if '"pipeline"' in query.text:  # processing time
        return "now() - 1h", "now() + 1m"
    return f"'{(T0 - timedelta(hours=1)).isoformat()}'", f"'{(T0 + timedelta(hours=8)).isoformat()}'"


def _aliases(text: str) -> list[str]:
    return re.findall(r'AS "([^"]+)"', text)


QUERIES = all_queries()


@pytest.mark.integration
@pytest.mark.parametrize("query", QUERIES, ids=[q.source for q in QUERIES])
def test_every_query_returns_data_of_the_expected_shape(filled, query):
    time_from, time_to = _range(query)
    text = expand(query.text, time_from=time_from, time_to=time_to, interval="5m",
                  variables={"ticker": EVENT_TICKER})
    series = influxql(filled.influx.url, filled.influx.db, text)
    assert series, f"no data for {query.source}: {text}"
    rows = [dict(zip(s["columns"], v), **(s.get("tags") or {})) for s in series for v in s["values"]]
    assert rows
    if query.kind == "variable":
        assert EVENT_TICKER in {r["value"] for r in rows}
        return
    assert all(s["columns"][0] == "time" for s in series)
    if query.kind == "annotation":
        assert all(r["title"] and r["text"] and r["ticker"] for r in rows)
        assert {r["ticker"] for r in rows} == {EVENT_TICKER}
        return
    values = [v for s in series for row in s["values"] for v in row[1:]]
    assert any(v is not None for v in values), f"only nulls for {query.source}"
    for alias in _aliases(query.text):
        assert all(alias in s["columns"] for s in series), (alias, series[0]["columns"])
    if re.search(r'GROUP BY[^)]*"ticker"|GROUP BY time\([^)]*\), "ticker"', query.text):
        assert all("ticker" in (s.get("tags") or {}) for s in series)
        if query.result_format == "table":
            assert len(series) >= 5  # one row per ticker for the ranking tables
    if query.result_format == "table" and "ORDER BY time DESC" in query.text:
        names = re.findall(r'SELECT (.*?) FROM', query.text)[0]
        for column in re.findall(r'"([^"]+)"', names):
            assert column in series[0]["columns"]
    if query.kind == "alert":
        assert all(isinstance(v, (int, float)) for v in values if v is not None)


@pytest.mark.integration
def test_previews_are_drawn_from_the_same_queries(filled, tmp_path):
    import os

    out_dir = Path(os.environ.get("FINSENTRY_PREVIEW_DIR", tmp_path))
    event = (f"'{(T0 - timedelta(minutes=10)).isoformat()}'", f"'{(T0 + timedelta(hours=4, minutes=30)).isoformat()}'")
    for name, board in load_dashboards().items():
        live = "pipeline" in name  # processing time: the last minutes; the rest: the stream's event time
        time_from, time_to = ("now() - 5m", "now()") if live else event
        path = render_dashboard(board, filled.influx.url, filled.influx.db, out_dir / name.replace(".json", ".png"),
                                time_from=time_from, time_to=time_to, variables={"ticker": EVENT_TICKER},
                                interval="10s" if live else "5m")
        assert path.stat().st_size > 20_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
