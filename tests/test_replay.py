"""Replay on real parts: determinism across speeds, exact resume after interruption."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streams.tools.generator import InjectedEvent, StreamSpec, TickerProfile, generate
from streams.tools.replay import RUN_HEADER, SEQ_HEADER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def _stream(model_pool, path: Path, hours: float = 4.0) -> list[dict]:
    profiles = [TickerProfile(t, 0.5, (0.25, 0.5, 0.25)) for t in ("EVTA", "QAAA", "QBBB")]
    burst = InjectedEvent("EVTA", "burst", T0 + timedelta(hours=3, minutes=2), 10 * 60, 2.5)
    spec = StreamSpec(start=T0, duration_s=int(hours * 3600), tickers=tuple(profiles), events=(burst,), seed=31,
                      late_share=0.02, very_late_share=0.0)
    items = generate(spec, model_pool)
    flush = {"id": "flush", "source": "test", "tickers": ["ZZZZ"], "headline": "Markets close",
             "published_at": (T0 + timedelta(hours=hours + 2)).isoformat()}
    path.write_text("".join(json.dumps(i) + "\n" for i in [*items, flush]))
    return items


def _replay(pipe, *args: str, timeout: float = 300) -> dict:
    result = subprocess.run([sys.executable, "-m", "streams.cli", "replay", "--quiet", *args], cwd=ROOT,
                            env=pipe.env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


def _wait_windows(pipe, items: int, worker, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = pipe.influx.query("SELECT sum(\"count\") FROM ticker_window WHERE \"window\" = '1h' AND ticker != 'ZZZZ'")
        if rows and rows[0]["sum"] >= items:
            time.sleep(2)
            return
        assert worker.proc.poll() is None, worker.output()[-3000:]
        time.sleep(1)
    raise AssertionError(f"windows did not close\n{worker.output()[-3000:]}")


def _outputs(pipe) -> dict:
    q = pipe.influx.query
    return {
        "scores": {(r["id"], r["ticker"]): (r["time"], r["label"], round(r["score"], 4))
                   for r in q("SELECT * FROM sentiment")},
        "windows": {(r["ticker"], r["window"], r["time"]): (r["count"], round(r["mean_score"], 4),
                                                            round(r["z_score"], 3))
                    for r in q("SELECT * FROM ticker_window")},
        "alerts": {(r["dedup_key"], r["status"], r["time"]) for r in q("SELECT * FROM alerts")},
    }


def test_replays_at_different_speeds_give_identical_points_and_alerts(broker, influxd, tiny_sentiment_model_dir,
                                                                       model_pool, tmp_path):
    from streams.tools.services import new_pipeline, stop_workers

    source = tmp_path / "history.jsonl"
    items = _stream(model_pool, source)
    results = []
    for speed in ("max", "3000x"):
        pipe = new_pipeline(broker, influxd, tiny_sentiment_model_dir, tmp_path / speed)
        (tmp_path / speed).mkdir(exist_ok=True)
        try:
            worker = pipe.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir))
            stats = _replay(pipe, str(source), "--speed", speed, "--state", str(tmp_path / f"{speed}.json"),
                            "--run-id", f"run-{speed}")
            assert stats["sent"] == len(items) + 1 and stats["run_id"] == f"run-{speed}"
            _wait_windows(pipe, len(items), worker)
            results.append(_outputs(pipe))
        finally:
            stop_workers(pipe)
    fast, paced = results
    assert len(fast["scores"]) == sum(len(i["tickers"]) for i in items) + 1
    assert fast["windows"] and fast["alerts"]
    assert fast == paced  # same points (identity and values) and the same alert keys


def test_interrupted_replay_resumes_without_duplicates(pipeline, model_pool, tmp_path):
    source = tmp_path / "history.jsonl"
    items = _stream(model_pool, source, hours=2)
    state = tmp_path / "state.json"
    # a first attempt killed part-way, at real-time x50 so that it is still running
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "replay", "--quiet", str(source), "--speed", "400x",
                             "--state", str(state), "--batch", "20"], cwd=ROOT, env=pipeline.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["next_seq"] > len(items) // 3:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    saved = json.loads(state.read_text())
    assert 0 < saved["next_seq"] < len(items) and not saved["finished"]
    # lose the last checkpoint write, as if the process died right after the broker acked a batch
    earlier = dict(saved, next_seq=max(0, saved["next_seq"] - 20),
                   offsets={k: max(0, v - 20) for k, v in saved["offsets"].items()})
    state.write_text(json.dumps(earlier))
    stats = _replay(pipeline, str(source), "--speed", "max", "--state", str(state))
    assert stats["run_id"] == saved["run_id"]
    assert stats["skipped_already_published"] >= 1

    records = [*pipeline.read_topic(pipeline.topics.news, expect=len(items) + 1, timeout=30)]
    seqs = Counter(int(dict(r.headers)[SEQ_HEADER]) for r in records)
    assert all(dict(r.headers)[RUN_HEADER].decode() == saved["run_id"] for r in records)
    assert sorted(seqs) == list(range(len(items) + 1))  # every item once: nothing lost, nothing twice
    assert max(seqs.values()) == 1
    assert all(r.timestamp == int(datetime.fromisoformat(json.loads(r.value)["published_at"]).timestamp() * 1000)
               for r in records)  # event time as the Kafka timestamp


def test_parquet_and_csv_sources_give_the_same_items_as_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streams.tools.replay import read_sources

    rows = [{"id": f"p{i}", "source": "wire", "published_at": f"2026-03-02T12:00:0{i}Z", "headline": f"Item {i}",
             "tickers": ["AAPL", "MSFT"]} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "items.parquet")
    (tmp_path / "items.csv").write_text("id,source,published_at,headline,tickers\n" + "".join(
        f"{r['id']},{r['source']},{r['published_at']},{r['headline']},AAPL MSFT\n" for r in rows))
    for name in ("items.parquet", "items.csv"):
        got = [json.loads(p) for p in read_sources([tmp_path / name])]
        assert got == rows, name


def test_a_topic_time_range_is_replayed(pipeline, tmp_path):
    """--from-topic: only messages with timestamps in [start, end) are sent again."""
    archive = tmp_path / "archive.jsonl"
    items = [{"id": f"a{i}", "source": "wire", "headline": f"Archive item {i}", "tickers": ["AAPL"],
              "published_at": (T0 + timedelta(minutes=i)).isoformat()} for i in range(10)]
    archive.write_text("".join(json.dumps(i) + "\n" for i in items))
    _replay(pipeline, str(archive), "--state", str(tmp_path / "first.json"))  # Kafka timestamps = event times
    env_topic = pipeline.topics.news
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", "--quiet", "--from-topic", env_topic,
         "--start", (T0 + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S"),
         "--end", (T0 + timedelta(minutes=7)).strftime("%Y-%m-%dT%H:%M:%S"), "--state", str(tmp_path / "range.json")],
        cwd=ROOT, env={**pipeline.env(), "FINSENTRY_TOPICS__NEWS": pipeline.topics.social}, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout[result.stdout.index("{"):])["sent"] == 4
    copied = pipeline.read_topic(pipeline.topics.social, expect=4, timeout=10)
    assert sorted(json.loads(r.value)["id"] for r in copied) == ["a3", "a4", "a5", "a6"]
    assert len(pipeline.read_topic(pipeline.topics.news, expect=10, timeout=10)) == 10  # source untouched
