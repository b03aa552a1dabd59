"""The console script: --help everywhere, file parsing and routing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams.tools.publish import read_items, route
from streams.contracts.settings import TopicSettings

COMMANDS = [[], ["worker"], ["publish"], ["demo"], ["topics"], ["topics", "create"], ["schema"], ["sample"],
            ["train"], ["export"], ["rules"], ["rules", "check"], ["generate"], ["replay"], ["backtest"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "root")
def test_help_everywhere(args):
    result = subprocess.run([sys.executable, "-m", "streams.cli", *args, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_worker_refuses_a_missing_model_directory(tmp_path):
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--model-dir", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_jsonl_lines_are_sent_as_written_and_routed(tmp_path):
    path = tmp_path / "items.jsonl"
    news = {"id": "n1", "source": "w", "published_at": "2026-01-01T00:00:00Z", "headline": "h"}
    post = {"id": "p1", "source": "x", "published_at": "2026-01-01T00:00:00Z", "text": "$AAPL up"}
    path.write_bytes(json.dumps(news).encode() + b"\n\n" + json.dumps(post).encode() + b"\r\nnot json\n")
    payloads = list(read_items(path))
    assert payloads == [json.dumps(news).encode(), json.dumps(post).encode(), b"not json"]
    topics = TopicSettings()
    routed = [route(p, topics) for p in payloads]
    assert [(m.topic, m.key) for m in routed] == [(topics.news, b"n1"), (topics.social, b"p1"), (topics.news, None)]
    assert route(payloads[1], topics, force_topic="other").topic == "other"


def test_csv_rows_become_items_with_ticker_lists(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,source,published_at,headline,tickers\n"
                    "c1,wire,2026-01-01T00:00:00Z,\"Apple, Microsoft rise\",AAPL;MSFT\n")
    (payload,) = read_items(path)
    assert json.loads(payload) == {"id": "c1", "source": "wire", "published_at": "2026-01-01T00:00:00Z",
                                   "headline": "Apple, Microsoft rise", "tickers": ["AAPL", "MSFT"]}


def test_rules_check_accepts_the_shipped_file_and_explains_a_bad_one(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "streams.cli", "rules", "check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "active rules" in ok.stderr and "negative-surge" in ok.stderr
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nrules:\n  - id: x\n    kind: negative_spike\n    window: 2m\n"
                   "    levels: [{severity: warning, threshold: -0.4}]\n")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "rules", "check", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "rule 'x' watches window 2m" in result.stderr


def test_generate_writes_items_and_the_injected_events(tmp_path):
    out = tmp_path / "stream.jsonl"
    result = subprocess.run([sys.executable, "-m", "streams.cli", "generate", str(out), "--tickers", "5",
                             "--hours", "8", "--events", "3", "--seed", "4"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in out.read_text().splitlines()]
    truth = json.loads(out.with_suffix(".events.json").read_text())
    assert len(truth["events"]) == 3 and len(truth["tickers"]) == 5
    assert {i["tickers"][0] for i in items} == {t["ticker"] for t in truth["tickers"]}
    for event in truth["events"]:
        injected = [i for i in items if i["origin"].endswith(event["start"]) and i["tickers"] == [event["ticker"]]]
        assert injected or event["kind"] == "drift"


def test_sample_writes_the_stream_and_the_malformed_lines(tmp_path):
    out = tmp_path / "sample.jsonl"
    result = subprocess.run([sys.executable, "-m", "streams.cli", "sample", str(out), "--n", "40", "--with-bad"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().splitlines()
    good = [json.loads(line) for line in lines[:40]]
    assert len({item["id"] for item in good}) == 40 and all(item["published_at"] for item in good)
    assert len(lines) > 40  # the malformed lines follow, one per line
    assert f"wrote {len(lines)} lines" in result.stderr


def test_schema_prints_the_published_document():
    result = subprocess.run([sys.executable, "-m", "streams.cli", "schema"], capture_output=True, text=True)
    assert result.returncode == 0
    from streams.contracts.schema import json_schema

    assert json.loads(result.stdout) == json_schema()


@pytest.mark.integration
def test_topics_create_then_publish_routes_lines_to_their_topics(broker, tmp_path):
    import asyncio

    from streams.contracts.settings import KafkaSettings
    from streams.tools.services import read_records

    env_topics = {"FINSENTRY_TOPICS__NEWS": "cli-news", "FINSENTRY_TOPICS__SOCIAL": "cli-social"}
    env = {**__import__("os").environ, **env_topics}
    created = subprocess.run([sys.executable, "-m", "streams.cli", "topics", "create", "--broker", broker.url],
                             capture_output=True, text=True, env=env)
    assert created.returncode == 0 and "cli-news" in created.stderr, created.stderr
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(i) for i in [
        {"id": "n1", "source": "w", "published_at": "2026-01-01T00:00:00Z", "headline": "h"},
        {"id": "p1", "source": "x", "published_at": "2026-01-01T00:00:00Z", "text": "$AAPL up"}]) + "\n")
    published = subprocess.run([sys.executable, "-m", "streams.cli", "publish", str(items), "--broker", broker.url],
                               capture_output=True, text=True, env=env)
    assert published.returncode == 0 and "published 2 items" in published.stderr, published.stderr
    kafka = KafkaSettings(broker=broker.url)
    assert [r.key for r in asyncio.run(read_records(kafka, "cli-news", 1, 20))] == [b"n1"]
    assert [r.key for r in asyncio.run(read_records(kafka, "cli-social", 1, 20))] == [b"p1"]


@pytest.mark.integration
def test_demo_runs_end_to_end_with_a_small_model(tiny_model_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--model-dir", str(tiny_model_dir),
                             "--n", "60", "--rate", "300", "--influx", "local"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "60 items scored, 6 dead-lettered" in result.stdout
    assert "InfluxDB holds" in result.stdout and "sentiment points" in result.stdout
