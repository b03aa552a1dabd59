"""End to end on real parts: tansu broker -> worker process -> InfluxDB 1.6.7."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime

import numpy as np
import pytest

from models.evaluate import model_predictor

from streams.influx.points import NO_TICKER, event_time_ns
from streams.contracts.records import DeadLetter, Score
from streams.tools.samples import bad_payloads, sample_items

pytestmark = pytest.mark.integration

#: |probability| tolerance between PyTorch and the worker's ONNX scores.
#: fp32 vs int8 differ more; the worker default for the tiny model is int8,
#: so the test model is compared per variant in test_model.py and here the
#: worker runs the fp32 variant.
PROB_TOL = 1e-4


def _published(item: dict) -> datetime:
    return datetime.fromisoformat(item["published_at"].replace("Z", "+00:00"))


def _torch_probs(checkpoint, texts):
    """Probabilities from the PyTorch checkpoint itself (truncation at 128 tokens)."""
    return model_predictor(checkpoint)[1](list(texts))


def _scoring_text(item: dict) -> str:
    head = (item.get("headline") or item.get("text") or "").strip()
    body = (item.get("body") or "").strip()
    return f"{head}\n{body}" if body and head else (body or head)


def test_items_scored_once_bad_ones_dead_lettered_republish_adds_nothing(pipeline, tiny_checkpoint):
    items = list(sample_items(520, seed=7))
    bad = bad_payloads(seed=7)
    assert len(bad) >= 20
    payloads = [json.dumps(item).encode() for item in items] + [raw for _, raw, _ in bad]
    random.Random(1).shuffle(payloads)
    expected_points = sum(len(item["tickers"]) for item in items)
    assert any(len(item["tickers"]) > 1 for item in items)

    worker = pipeline.start_worker(FINSENTRY_MODEL_VARIANT="fp32")
    assert pipeline.publish(payloads) == len(payloads)
    assert pipeline.wait_for_points(expected_points) == expected_points, worker.output()[-3000:]

    rows = pipeline.influx.query("SELECT * FROM sentiment")
    assert len(rows) == expected_points
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    assert set(by_id) == {item["id"] for item in items}

    reference = _torch_probs(tiny_checkpoint, [_scoring_text(item) for item in items])
    labels = ["negative", "neutral", "positive"]
    for item, ref in zip(items, reference):
        points = by_id[item["id"]]
        assert sorted(p["ticker"] for p in points) == sorted(item["tickers"])
        for p in points:
            assert p["time"] == event_time_ns(_published(item), item["id"])  # event time, not processing time
            assert p["source"] == item["source"]
            assert p["kind"] == ("news" if "headline" in item else "social")
            assert p["model"] == "tiny-test" and p["model_version"] == "1"
            probs = np.array([p["p_negative"], p["p_neutral"], p["p_positive"]])
            assert abs(probs.sum() - 1) < 1e-6
            assert p["label"] == labels[int(probs.argmax())]
            assert p["score"] == pytest.approx(p["p_positive"] - p["p_negative"], abs=1e-9)
            np.testing.assert_allclose(probs, ref, atol=PROB_TOL)  # same model as the PyTorch checkpoint

    # every bad input is on the dead-letter topic, bytes intact, with a reason
    dead = [DeadLetter.loads(m.value) for m in pipeline.read_topic(pipeline.topics.dead_letter, len(bad))]
    assert len(dead) == len(bad)
    by_bytes = {d.original: d for d in dead}
    for name, raw, fragment in bad:
        assert raw in by_bytes, f"{name} missing from dead-letter topic"
        letter = by_bytes[raw]
        assert fragment in letter.reason, (name, letter.reason)
        assert letter.stage in ("decode", "validate")
        assert letter.topic in (pipeline.topics.news, pipeline.topics.social)

    scores = pipeline.read_topic(pipeline.topics.scores, len(items))
    assert sorted(Score.loads(m.value).id for m in scores) == sorted(item["id"] for item in items)
    assert all(m.key.decode() == Score.loads(m.value).id for m in scores)

    # re-publishing the same items is processed again but adds no points
    pipeline.publish([json.dumps(item).encode() for item in items])
    assert len(pipeline.read_topic(pipeline.topics.scores, 2 * len(items), timeout=120)) == 2 * len(items)
    assert pipeline.wait_for_points(expected_points + 1, timeout=3) == expected_points
    worker.stop()
    assert worker.proc.returncode == 0, worker.output()[-2000:]


def test_tickers_come_from_the_record_else_from_the_text_else_none(pipeline):
    base = {"source": "newswire", "published_at": "2026-03-02T14:00:00.5+01:00"}
    items = [
        {**base, "id": "no-ticker-1", "headline": "Markets drift ahead of central bank decision"},
        {**base, "id": "named-1", "headline": "Apple cuts outlook while $MSFT gains; apple pie sales soar"},
        {**base, "id": "explicit-1", "headline": "Apple cuts outlook", "tickers": ["NVDA"]},
    ]
    pipeline.start_worker()
    pipeline.publish([json.dumps(item).encode() for item in items])
    assert pipeline.wait_for_points(4) == 4
    rows = pipeline.influx.query("SELECT * FROM sentiment")
    by_id = {}
    for row in rows:
        by_id.setdefault(row["id"], set()).add(row["ticker"])
    assert by_id == {"no-ticker-1": {NO_TICKER}, "named-1": {"AAPL", "MSFT"}, "explicit-1": {"NVDA"}}
    for row in rows:
        item = next(i for i in items if i["id"] == row["id"])
        assert row["time"] == event_time_ns(_published(item), item["id"])


def test_hot_swap_changes_the_version_on_scores_without_losing_items(pipeline, tiny_model_dir, tiny_model_dir_v2,
                                                                     tmp_path):
    import os

    current = tmp_path / "current"
    os.symlink(tiny_model_dir, current)
    pipeline.model_dir = current
    pipeline.start_worker(FINSENTRY_RUNTIME__RELOAD_INTERVAL="0.3", FINSENTRY_BATCH__SIZE="8")
    items = list(sample_items(600, seed=21))
    expected_points = sum(len(item["tickers"]) for item in items)
    publisher = threading.Thread(target=pipeline.publish, args=([json.dumps(i).encode() for i in items],),
                                 kwargs={"rate": 120})
    publisher.start()
    assert pipeline.wait_for_points(expected_points // 4) >= expected_points // 4
    os.symlink(tiny_model_dir_v2, tmp_path / "next")
    os.replace(tmp_path / "next", current)  # deploy v2 while items are streaming
    publisher.join()
    assert pipeline.wait_for_points(expected_points) == expected_points

    scores = [Score.loads(m.value) for m in pipeline.read_topic(pipeline.topics.scores, len(items))]
    assert sorted(s.id for s in scores) == sorted(i["id"] for i in items)  # none lost, none twice
    versions = [s.model_version for s in scores]  # in processing order (one partition)
    assert versions[0] == "1" and versions[-1] == "2"
    switch = versions.index("2")
    assert set(versions[switch:]) == {"2"}, "an old-model score after the swap"
    stored = {row["model_version"] for row in pipeline.influx.query("SELECT model_version, score FROM sentiment")}
    assert stored == {"1", "2"}
