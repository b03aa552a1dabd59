"""What an operator scrapes: a real worker's /metrics, /healthz and /readyz while items flow."""

from __future__ import annotations

import json
import time
import urllib.error
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
        if _value(after, "finsentry_items_total", outcome="received") >= len(good) + len(bad):
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
