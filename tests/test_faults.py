"""The fault suite: real broker, InfluxDB and worker processes under the faults users meet.

Every (item, ticker) must be stored exactly once, whatever is killed, paused or sent. Faults are
injected at seeded random moments while a rate-limited stream is live, and each test checks that
the fault really hit work in flight (re-delivered scores, write retries, a takeover), so a test
that stays green is not green by luck.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from streams.aggregation.state import TickerState
from streams.contracts.records import DeadLetter
from streams.tools import services
from streams.tools.chaos import expected_points, kill_round, stored_points, tagged_items
from streams.tools.samples import hostile_payloads, special_items
from streams.tools.services import new_pipeline, stop_workers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _exactly_once(pipe, items) -> None:
    stored = stored_points(pipe)
    expected = expected_points(items)
    assert not expected - set(stored), f"lost: {sorted(expected - set(stored))[:10]}"
    assert len(stored) == len(set(stored)), f"duplicated: {[k for k, n in Counter(stored).items() if n > 1][:10]}"


def test_sigkill_at_five_random_moments_of_a_live_stream_loses_and_duplicates_nothing(pipeline):
    items = tagged_items(3000, seed=21)
    result = kill_round(pipeline, items, rate=100, kills=5, seed=21, worker_env={"FINSENTRY_BATCH__SIZE": "16"})
    assert len(result.kill_times) == 5
    assert result.redelivered_scores > 0, "no kill interrupted work in flight: the test proved nothing"
    assert (result.lost, result.duplicated) == (0, 0), result


def _changelog_states(pipe) -> dict[str, dict]:
    """The latest value of every key (ticker states and their sealed-id chunks), read from the table's
    changelog topic as a recovering worker reads it: a null value deletes the key."""
    topic = f"{pipe.group}-ticker-state-changelog"
    latest: dict[str, dict] = {}
    for record in pipe.read_topic(topic, 10**9, timeout=5):
        key = json.loads(record.key)
        if record.value in (None, b"null"):
            latest.pop(key, None)
        else:
            latest[key] = json.loads(record.value)
    return latest


def test_two_workers_one_killed_the_survivor_takes_over_nothing_lost_state_intact(
        broker, influxd, tiny_model_dir, tmp_path):
    pipe = new_pipeline(broker, influxd, tiny_model_dir, tmp_path, partitions=4)
    try:
        t0 = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)
        items = tagged_items(2400, seed=4, prefix="tw-")
        tickers = [f"TK{n:02d}" for n in range(16)]
        for n, item in enumerate(items):  # 10 minutes of event time: nothing ages out of the id memory
            item["tickers"] = [tickers[n % len(tickers)]]
            item["published_at"] = (t0 + timedelta(seconds=n / 4)).isoformat()
        # event time runs 30x faster than the wall clock here, and the two workers start seconds apart:
        # a long lateness keeps every window open, so the table state itself is what is checked
        env = {"FINSENTRY_BATCH__SIZE": "16", "FINSENTRY_ALERTS__LATENESS": "7200"}
        first, second = pipe.start_worker("a", **env), pipe.start_worker("b", **env)
        publisher = threading.Thread(target=pipe.publish, args=([json.dumps(i).encode() for i in items],),
                                     kwargs={"rate": 120}, daemon=True)
        publisher.start()
        wait_for(lambda: "worker ready" in first.output() and "worker ready" in second.output(), 120, "both workers")
        wait_for(lambda: pipe.wait_for_points(400, timeout=1) >= 400, 120, "a live stream", first)
        second.kill()
        publisher.join()
        wait_for(lambda: pipe.wait_for_points(len(items), timeout=1) >= len(items), 240, "every item", first)
        time.sleep(2)
        _exactly_once(pipe, items)
        states = _changelog_states(pipe)
        closed, closed_at = Counter(), defaultdict(dict)
        for row in pipe.influx.query("SELECT \"count\", ticker FROM ticker_window WHERE \"window\" = '1m'",
                                     epoch="s"):
            closed[row["ticker"]] += row["count"]
            closed_at[row["ticker"]][row["time"]] = row["count"]
        by_ticker = defaultdict(set)
        for item in items:
            by_ticker[item["tickers"][0]].add(item["id"])
        for ticker, ids in by_ticker.items():
            state = states[ticker]
            assert state["chunks"], f"{ticker}: 150 ids and none sealed"
            assert set(TickerState.from_dict(state, states.get).seen) == ids, f"{ticker}: state lost or invented ids"
            still_open = sum(w["count"] for w in state["windows"].get("60", []))
            expected_windows = Counter(int(datetime.fromisoformat(i["published_at"]).timestamp()) // 60 * 60
                                       for i in items if i["tickers"][0] == ticker)
            got_windows = {**closed_at[ticker], **{w["start"]: w["count"] for w in state["windows"].get("60", [])}}
            assert closed[ticker] + still_open == len(ids), (ticker, {k: (v, got_windows.get(k)) for k, v in
                                                                      expected_windows.items() if got_windows.get(k) != v})
            assert state["late"] == 0
    finally:
        stop_workers(pipe)


def test_influxdb_paused_then_killed_longer_than_the_poll_limit_loses_and_duplicates_nothing(
        broker, tiny_model_dir, tmp_path):
    influx = services.start_influxd()
    try:
        pipe = new_pipeline(broker, influx, tiny_model_dir, tmp_path)
        items = tagged_items(2000, seed=9, prefix="ix-")
        worker = pipe.start_worker(FINSENTRY_KAFKA__MAX_POLL_INTERVAL="5", FINSENTRY_INFLUX__RETRY_MAX="2",
                                   FINSENTRY_INFLUX__TIMEOUT="2")
        publisher = threading.Thread(target=pipe.publish, args=([json.dumps(i).encode() for i in items],),
                                     kwargs={"rate": 50}, daemon=True)
        publisher.start()
        wait_for(lambda: pipe.wait_for_points(100, timeout=1) >= 100, 120, "a live stream", worker)
        influx.process.send_signal(signal.SIGSTOP)  # hung server: writes time out
        time.sleep(12)
        influx.process.send_signal(signal.SIGCONT)
        wait_for(lambda: pipe.wait_for_points(900, timeout=1) >= 900, 120, "catching up", worker)
        influx.process.send_signal(signal.SIGKILL)  # dead server: connections refused
        time.sleep(12)
        influx.restart()
        publisher.join()
        wait_for(lambda: pipe.wait_for_points(len(expected_points(items)), timeout=1) >= len(expected_points(items)),
              240, "every item", worker)
        time.sleep(2)
        _exactly_once(pipe, items)
        log = worker.output()
        assert "InfluxDB write failed" in log  # both outages were hit while points were pending
        assert worker.proc.poll() is None
        stop_workers(pipe)
    finally:
        influx.stop()


def test_hostile_messages_cost_one_dead_letter_each_and_nothing_else(pipeline):
    hostile = hostile_payloads(10_000, seed=7, big=3)
    good = tagged_items(900, seed=8, prefix="good-") + special_items(100, seed=8)
    payloads = [raw for _, raw in hostile] + [json.dumps(item).encode() for item in good]
    order = list(range(len(payloads)))
    random.Random(3).shuffle(order)
    worker = pipeline.start_worker()
    assert pipeline.publish([payloads[i] for i in order], max_request_size=8_000_000) == len(payloads)
    wait_for(lambda: pipeline.wait_for_points(len(expected_points(good)), timeout=1) >= len(expected_points(good)),
          300, "every good item", worker)
    dead = [DeadLetter.loads(r.value) for r in pipeline.read_topic(pipeline.topics.dead_letter, len(hostile),
                                                                   timeout=120)]
    time.sleep(1)
    assert worker.proc.poll() is None, worker.output()[-3000:]
    _exactly_once(pipeline, good)

    # every hostile message is on the dead-letter topic, identified by its bytes, with a reason
    by_hash = {d.value_sha256: d for d in dead}
    missing = [kind for kind, raw in hostile if hashlib.sha256(raw).hexdigest() not in by_hash]
    assert missing == [], Counter(missing)
    assert all(d.reason.strip() for d in dead)
    good_ids = {item["id"] for item in good}
    assert not [d for d in dead if d.item_id in good_ids], "a good item was dead-lettered"
    for d in dead:  # the bytes carried are the original's (its first 256 KiB for the multi-MB ones)
        assert hashlib.sha256(base64.b64decode(d.value_b64)).hexdigest() == d.value_sha256 or d.value_truncated
    assert sum(d.value_truncated for d in dead) >= 3

    # InfluxDB holds nothing that was injected: known measurements, tags and fields, values as sent
    measurements = {r["name"] for r in pipeline.influx.query("SHOW MEASUREMENTS")}
    assert measurements <= {"sentiment", "pipeline", "ticker_window", "alerts"}, measurements
    tag_keys = {r["tagKey"] for r in pipeline.influx.query("SHOW TAG KEYS FROM sentiment")}
    assert tag_keys == {"ticker", "source"}
    field_keys = {r["fieldKey"] for r in pipeline.influx.query("SHOW FIELD KEYS FROM sentiment")}
    assert field_keys == {"score", "p_negative", "p_neutral", "p_positive", "label", "kind", "model", "id",
                          "headline", "model_version"}
    sources = {r["value"] for r in pipeline.influx.query('SHOW TAG VALUES FROM sentiment WITH KEY = "source"')}
    assert sources == {item["source"] for item in good}
    tickers = {r["value"] for r in pipeline.influx.query('SHOW TAG VALUES FROM sentiment WITH KEY = "ticker"')}
    assert tickers == {t for item in good for t in item["tickers"]}
    heads = {r["id"]: r["headline"] for r in pipeline.influx.query("SELECT id, headline FROM sentiment")}
    for item in good:
        assert heads[item["id"]] == (item.get("headline") or item.get("text")).strip()[:200]
    stop_workers(pipeline)


def test_a_worker_started_after_the_broker_lost_its_data_becomes_ready_or_exits_clearly(
        influxd, tiny_model_dir, tmp_path):
    broker = services.start_tansu()
    try:
        pipe = new_pipeline(broker, influxd, tiny_model_dir, tmp_path)
        env = {"FINSENTRY_KAFKA__RECOVERY_STALL_TIMEOUT": "10"}
        first = pipe.start_worker("before", **env)
        publisher = threading.Thread(target=pipe.publish, args=(
            [json.dumps(i).encode() for i in tagged_items(600, seed=5, prefix="br-")],), kwargs={"rate": 100})
        publisher.start()
        wait_for(lambda: pipe.wait_for_points(100, timeout=1) >= 100, 120, "a live stream", first)
        publisher.join()
        broker.restart()  # tansu with memory storage: every topic and offset is gone
        from streams.kafka.topics import create_topics, pipeline_topics

        time.sleep(5)
        asyncio.run(create_topics(pipe.kafka, pipeline_topics(pipe.topics)))
        time.sleep(5)
        first.kill()
        second = pipe.start_worker("after", **env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and second.proc.poll() is None and "Worker ready" not in second.output():
            time.sleep(0.5)
        if second.proc.poll() is not None:  # exited: with the reason, not silently
            assert second.proc.returncode != 0
            assert "table recovery read no changelog record" in second.output()
        else:  # ready: and it scores what arrives now
            assert "Worker ready" in second.output(), second.output()[-3000:]
            later = tagged_items(50, seed=6, prefix="late-")
            pipe.publish([json.dumps(i).encode() for i in later])
            wait_for(lambda: set(expected_points(later)) <= set(stored_points(pipe)), 120, "new items", second)
        stop_workers(pipe)
    finally:
        broker.stop()
