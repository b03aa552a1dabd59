"""What an operator scrapes: a real worker's /metrics, /healthz and /readyz while items flow."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.tools.chaos import tagged_items
from streams.tools.samples import bad_payloads
from streams.tools.services import free_port

pytestmark = pytest.mark.integration


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet
        return 0


def test_metrics_move_by_the_right_amounts_while_items_flow(pipeline):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker = pipeline.start_worker(FINSENTRY_WEB_PORT=str(port))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _status(f"{url}/readyz") != 200:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        time.sleep(0.5)
    assert _status(f"{url}/healthz") == 200 and _status(f"{url}/readyz") == 200
    before = _scrape(url)
    assert _value(before, "finsentry_items_total") == 0

    good = tagged_items(300, seed=31, prefix="m-")
    bad = [raw for _, raw, _ in bad_payloads(seed=31)]
    assert pipeline.publish([json.dumps(i).encode() for i in good] + bad) == len(good) + len(bad)
    points = sum(len(i["tickers"]) for i in good)
    assert pipeline.wait_for_points(points, timeout=120) == points
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = _scrape(url)
        # the aggregation agent counts mentions after the scoring agent stored the points: wait for both
        if (_value(after, "finsentry_items_total", outcome="received") >= len(good) + len(bad)
                and _value(after, "finsentry_mentions_total", outcome="counted") >= points):
            break
        time.sleep(0.5)

    assert _value(after, "finsentry_items_total", outcome="received") == len(good) + len(bad)
    assert _value(after, "finsentry_items_total", outcome="scored") == len(good)
    assert _value(after, "finsentry_items_total", outcome="dead_lettered") == len(bad)
    assert _value(after, "finsentry_dead_letters_total") == len(bad)
    assert _value(after, "finsentry_dead_letters_total", stage="decode") >= 5
    assert _value(after, "finsentry_dead_letters_total", stage="validate") >= 10
    assert _value(after, "finsentry_batch_size_sum") == len(good) + len(bad)
    batches = _value(after, "finsentry_batch_size_count")
    assert batches >= 1 and _value(after, "finsentry_inference_seconds_count") == batches
    assert _value(after, "finsentry_sink_write_seconds_count", stage="scoring") == batches
    assert _value(after, "finsentry_mentions_total", outcome="counted") == points
    info = [dict(ls) for (n, ls), v in after.items() if n == "finsentry_model_info"]
    assert info and info[0]["name"] == "tiny-test" and info[0]["provider"] == "CPUExecutionProvider"
    lag = {dict(ls)["topic"] for (n, ls), v in after.items() if n == "finsentry_consumer_lag"}
    assert {pipeline.topics.news, pipeline.topics.social} <= lag
    assert _value(after, "faust_messages_received_total") >= len(good) + len(bad)  # Faust's own monitor
    per_topic = sum(_value(after, "faust_messages_received_per_topic_total", topic=t)
                    for t in (pipeline.topics.news, pipeline.topics.social))
    assert per_topic == len(good) + len(bad)  # its labelled series too (cached by SeriesCachingMonitor)


def _promql(url: str, expr: str, start: float, end: float) -> list[dict]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_the_pipeline_dashboards_promql_panels_answer_from_a_real_prometheus(pipeline):
    """Every PromQL target of the pipeline dashboard, as Grafana would send it, on Prometheus scraping a
    real worker while good and bad items flow: each returns numbers, with the labels its legend uses."""
    from dashboards.queries import prometheus_queries
    from streams.tools.services import start_prometheus

    queries = list(prometheus_queries())
    assert len(queries) >= 5
    port = free_port()
    worker = pipeline.start_worker(FINSENTRY_WEB_PORT=str(port))
    prometheus = start_prometheus([f"127.0.0.1:{port}"])
    try:
        started = time.time()
        # counters must be seen before and after the items, or a rate has nothing to compare
        deadline = time.monotonic() + 120
        while not (_status(f"http://127.0.0.1:{port}/readyz") == 200
                   and [v for s in _promql(prometheus.url, "up", started - 5, time.time()) for _, v in s["values"]
                        if v == "1"]):
            assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()[-3000:]
            time.sleep(0.5)
        time.sleep(2)
        good = tagged_items(200, seed=41, prefix="p-")
        bad = [raw for _, raw, _ in bad_payloads(seed=41)]
        payloads = [json.dumps(i).encode() for i in good] + bad
        assert pipeline.publish(payloads, rate=80) == len(payloads)
        points = sum(len(i["tickers"]) for i in good)
        assert pipeline.wait_for_points(points, timeout=120) == points, worker.output()[-3000:]
        time.sleep(4)  # a few more scrapes after the last batch
        results = {}
        for q in queries:
            expr = q.text.replace("$__rate_interval", "5m")
            series = _promql(prometheus.url, expr, started - 10, time.time())
            values = [float(v) for s in series for _, v in s["values"]]
            assert series and any(v == v for v in values), f"no numbers for {q.source}: {expr}"  # v == v: not NaN
            results[q.source] = series
    finally:
        prometheus.stop()

    def labels(panel: str, ref: str, key: str) -> set[str]:
        return {s["metric"].get(key) for source, ss in results.items()
                if source.endswith(f"{panel} / {ref}") for s in ss}

    board = "finsentry-pipeline.json / "
    assert {pipeline.topics.news, pipeline.topics.social} <= labels(board + "Consumer lag per input partition", "A",
                                                                    "topic")
    assert {"received", "scored", "dead_lettered"} <= labels(board + "Items by outcome (per second)", "A", "outcome")
    assert "decode" in labels(board + "Items by outcome (per second)", "B", "stage")
    assert {"scoring", "aggregation"} <= labels(board + "InfluxDB write time by stage (p99, retries included)", "A",
                                                "stage")
    p99 = [float(v) for s in results[board + "Inference time per batch (p50, p99) / B"] for _, v in s["values"]]
    assert any(0 < v < 60 for v in p99)
