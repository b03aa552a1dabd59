"""Per-ticker aggregates and alerts end to end: tansu -> worker -> InfluxDB 1.6.7,
alerts topic and a real HTTP webhook, with the shipped rules file."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.tools.generator import InjectedEvent, StreamSpec, TickerProfile, generate
from streams.tools.services import new_pipeline, stop_workers, wait_for
from streams.contracts.records import Alert, DeadLetter, Mention, MentionBatch
from streams.aggregation.windows import window_start

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
QUIET = ["QAAA", "QBBB", "QCCC", "QDDD", "QEEE", "QFFF"]


def _flush_item(at: datetime) -> bytes:
    """An item for an unrelated ticker far later: moves the watermark so every window closes."""
    return json.dumps({"id": f"flush-{at.timestamp():.0f}", "source": "test", "tickers": ["ZZZZ"],
                       "published_at": at.isoformat(), "headline": "Markets close for the day"}).encode()


class WebhookServer:
    """A real HTTP endpoint that answers 503 to the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 1, port: int = 0) -> None:
        self.posts: list[dict] = []
        self.statuses: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 503 if len(owner.statuses) < fail_first else 200
                owner.statuses.append(status)
                if status == 200:
                    owner.posts.append(body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try later")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _one_burst(ticker: str, model_pool) -> list[dict]:
    """3.5 hours of one ticker with a negative burst at 3 h: exactly one alert for the webhook tests."""
    burst = InjectedEvent(ticker, "burst", T0 + timedelta(hours=3), 10 * 60, 2.5)
    spec = StreamSpec(start=T0, duration_s=int(3.5 * 3600), tickers=(TickerProfile(ticker, 0.4, (0.25, 0.5, 0.25)),),
                      events=(burst,), seed=3, late_share=0.0, very_late_share=0.0)
    return generate(spec, model_pool)


def _window_counts(pipeline, window: str) -> dict[tuple[str, int], int]:
    rows = pipeline.influx.query(f"SELECT \"count\", ticker FROM ticker_window WHERE \"window\" = '{window}'", epoch="s")
    return {(r["ticker"], r["time"]): r["count"] for r in rows}


def test_negative_burst_raises_exactly_one_alert_quiet_tickers_none(pipeline, tiny_sentiment_model_dir, model_pool):
    event_ticker = "EVTA"
    profiles = [TickerProfile(t, 0.4, (0.25, 0.5, 0.25)) for t in [event_ticker, *QUIET]]
    burst = InjectedEvent(event_ticker, "burst", T0 + timedelta(hours=3, minutes=2), 10 * 60, 2.5)
    spec = StreamSpec(start=T0, duration_s=4 * 3600, tickers=tuple(profiles), events=(burst,), seed=11,
                      late_share=0.0, very_late_share=0.0)
    items = generate(spec, model_pool)
    burst_ids = {i["id"] for i in items if i["origin"].startswith("burst")}
    assert len(burst_ids) >= 15
    hook = WebhookServer(fail_first=1)
    try:
        worker = pipeline.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir),
                                       FINSENTRY_ALERTS__WEBHOOK_URL=hook.url,
                                       FINSENTRY_ALERTS__WEBHOOK_RETRY_INITIAL="0.2")
        pipeline.publish([json.dumps(i).encode() for i in items] + [_flush_item(T0 + timedelta(hours=6))])
        expected = Counter(i["tickers"][0] for i in items)
        wait_for(lambda: sum(c for (t, _), c in _window_counts(pipeline, "5m").items() if t != "ZZZZ")
              == len(items), 240, "every 5m window to close", worker)

        records = pipeline.read_topic(pipeline.topics.alerts, expect=2, timeout=30)
        alerts = [Alert.loads(r.value) for r in records]
        firing = [a for a in alerts if a.status == "firing"]
        assert len(firing) == 1, [(a.status, a.dedup_key, a.suggestion) for a in alerts]
        alert = firing[0]
        assert {a.ticker for a in alerts} == {event_ticker}  # quiet tickers: no alert at all
        assert {a.dedup_key for a in alerts} == {alert.dedup_key}  # escalations/resolution share the key
        assert [r.key.decode() for r in records] == [alert.dedup_key] * len(records)
        assert burst.start <= alert.event_time <= burst.end  # fired during the burst
        assert alerts[-1].status == "resolved"
        # evidence: the window's numbers, the baseline and the items behind it
        assert alert.count >= 5 and alert.negative_share >= 0.5 and alert.baseline_rate > 0
        assert alert.top_items and {t.id for t in alert.top_items} & burst_ids
        assert all(t.headline and t.score < 0 for t in alert.top_items)
        assert event_ticker in alert.suggestion and alert.suggestion.endswith(".")

        rows = pipeline.influx.query("SELECT * FROM alerts")
        assert {(r["ticker"], r["status"]) for r in rows} == {(a.ticker, a.status) for a in alerts}
        assert len(rows) == len(alerts)
        fired = next(r for r in rows if r["status"] == "firing")
        assert fired["dedup_key"] == alert.dedup_key and alert.suggestion in fired["text"]

        # aggregates: every item counted once, per ticker and window size
        for window in ("1m", "5m"):
            counts = _window_counts(pipeline, window)
            per_ticker = Counter()
            for (ticker, _), count in counts.items():
                per_ticker[ticker] += count
            assert {t: per_ticker[t] for t in expected} == dict(expected), window

        # the webhook got the alert after one refused attempt; the URL never reaches the log
        wait_for(lambda: any(event_ticker in p["text"] and "firing" in p["text"] for p in hook.posts), 30,
              "the webhook post", worker)
        assert hook.statuses[0] == 503
        assert all("blocks" in p for p in hook.posts)
        assert "secret-token" not in worker.output()
    finally:
        hook.close()


@pytest.fixture
def pipeline4(broker, influxd, tiny_model_dir, tmp_path):
    """Like ``pipeline``, with 4 partitions per topic."""
    pipe = new_pipeline(broker, influxd, tiny_model_dir, tmp_path, partitions=4)
    yield pipe
    stop_workers(pipe)


def test_mentions_travel_in_batches_each_in_the_partition_of_its_tickers(pipeline4, tiny_sentiment_model_dir,
                                                                         model_pool):
    """One MentionBatch per mentions partition and scored batch, keyed by one of its tickers: every ticker in
    it hashes to the record's partition, so a ticker's mentions stay in one partition, in order."""
    from aiokafka.partitioner import DefaultPartitioner

    spec = StreamSpec(start=T0, duration_s=3600, tickers=tuple(TickerProfile(t, 1.0, (0.25, 0.5, 0.25)) for t in QUIET),
                      seed=8, late_share=0.0, very_late_share=0.0)
    items = generate(spec, model_pool)
    worker = pipeline4.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir))
    pipeline4.publish([json.dumps(i).encode() for i in items])
    assert pipeline4.wait_for_points(len(items), timeout=180) == len(items), worker.output()[-2000:]

    records = pipeline4.read_all(pipeline4.topics.mentions)
    partitions = list(range(4))
    partition_of = DefaultPartitioner()
    sent: Counter = Counter()
    for record in records:
        for m in MentionBatch.loads(record.value).mentions:
            assert partition_of(m.ticker.encode(), partitions, partitions) == record.partition, m.ticker
            sent[(m.id, m.ticker)] += 1
    assert set(sent) == {(i["id"], t) for i in items for t in i["tickers"]}
    assert len({r.partition for r in records}) > 1
    assert len(records) * 4 <= len(sent)  # batches, not one record per mention


def test_mention_records_of_earlier_workers_still_count_and_an_unreadable_one_is_a_dead_letter(
        pipeline, tiny_sentiment_model_dir, model_pool):
    """A rolling upgrade leaves single Mention records in the topic: they are counted like batched ones."""
    import asyncio

    from streams.tools.publish import Outgoing, publish

    items = _one_burst("EVTC", model_pool)[:200]
    legacy = [Mention(id=f"legacy-{i}", ticker="LEGA", published_at=T0 + timedelta(seconds=i), score=-0.5,
                      label="negative", source="test") for i in range(3)]
    junk = b"\xff not a mention"
    asyncio.run(publish([Outgoing(pipeline.topics.mentions, b"LEGA", m.dumps()) for m in legacy]
                        + [Outgoing(pipeline.topics.mentions, b"junk", junk)], pipeline.kafka))
    worker = pipeline.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir))
    pipeline.publish([json.dumps(i).encode() for i in items] + [_flush_item(T0 + timedelta(hours=6))])
    wait_for(lambda: sum(c for (t, _), c in _window_counts(pipeline, "5m").items() if t != "ZZZZ")
             == len(items) + len(legacy), 240, "every 5m window to close", worker)
    per_ticker: Counter = Counter()
    for (ticker, _), count in _window_counts(pipeline, "1m").items():
        per_ticker[ticker] += count
    assert per_ticker["LEGA"] == len(legacy) and per_ticker["EVTC"] == len(items)

    letters = [DeadLetter.loads(r.value) for r in pipeline.read_topic(pipeline.topics.dead_letter, expect=1, timeout=30)]
    assert [(d.stage, d.topic, d.original) for d in letters] == [("decode", pipeline.topics.mentions, junk)]
    assert "not a mentions record" in letters[0].reason


def test_aggregates_survive_sigkill_without_double_counting(pipeline, tiny_sentiment_model_dir, model_pool):
    profiles = [TickerProfile(t, 1.5, (0.25, 0.5, 0.25)) for t in QUIET[:4]]
    spec = StreamSpec(start=T0, duration_s=3 * 3600, tickers=tuple(profiles), seed=5, late_share=0.0,
                      very_late_share=0.0)
    items = generate(spec, model_pool)
    assert len(items) > 1200
    env = {"FINSENTRY_MODEL_DIR": str(tiny_sentiment_model_dir), "FINSENTRY_BATCH__SIZE": "16"}
    worker = pipeline.start_worker(**env)
    # slow enough that the kills land mid-stream
    publisher = threading.Thread(target=pipeline.publish, args=([json.dumps(i).encode() for i in items],),
                                 kwargs={"rate": 150.0})
    publisher.start()
    for fraction in (0.3, 0.6):
        wait_for(lambda: pipeline.wait_for_points(int(len(items) * fraction), timeout=1) >= len(items) * fraction,
              120, f"{fraction:.0%} of the items", worker)
        worker.kill()
        worker = pipeline.start_worker(**env)
    publisher.join()
    pipeline.publish([_flush_item(T0 + timedelta(hours=5))])

    expected: dict[str, Counter] = {"1m": Counter(), "5m": Counter()}
    for item in items:
        ts = datetime.fromisoformat(item["published_at"].replace("Z", "+00:00")).timestamp()
        for label, size in (("1m", 60), ("5m", 300)):
            expected[label][(item["tickers"][0], window_start(ts, size))] += 1
    wait_for(lambda: sum(c for (t, _), c in _window_counts(pipeline, "5m").items() if t != "ZZZZ") >= len(items),
          240, "every 5m window to close", worker)
    time.sleep(2)
    for label in ("1m", "5m"):
        got = {k: v for k, v in _window_counts(pipeline, label).items() if k[0] != "ZZZZ"}
        assert got == dict(expected[label]), label  # nothing lost, nothing counted twice
    # the restarted worker rebuilt the table from its changelog (records to read, not an empty start)
    highwaters = [int(h) for h in re.findall(r"ticker-state-changelog\s*\|\s*\d+\s*\|\s*(\d+)\s*\|",
                                               worker.output().split("Highwater for active changelog", 1)[-1])]
    assert highwaters and max(highwaters) > 0, worker.output()[-3000:]


def test_webhook_gives_up_into_the_dead_letter_topic(pipeline, tiny_sentiment_model_dir, model_pool):
    """An endpoint that refuses the alert (HTTP 4xx) sends it to the dead-letter topic with the reason."""

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"no_service")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        event_ticker = "EVTB"
        items = _one_burst(event_ticker, model_pool)
        worker = pipeline.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir),
                                       FINSENTRY_ALERTS__WEBHOOK_URL=f"http://127.0.0.1:{server.server_address[1]}/x")
        pipeline.publish([json.dumps(i).encode() for i in items])
        letters = wait_for(lambda: [DeadLetter.loads(r.value) for r in
                                 pipeline.read_topic(pipeline.topics.dead_letter, expect=1, timeout=5)],
                        120, "the dead letter", worker)
        letter = letters[0]
        assert letter.stage == "notify" and "HTTP 404" in letter.reason
        assert Alert.loads(letter.original).ticker == event_ticker
    finally:
        server.shutdown()


@pytest.mark.faults
def test_a_webhook_that_is_down_gets_the_alert_once_it_is_back(pipeline, tiny_sentiment_model_dir, model_pool):
    """Connection refused for a while: scoring and aggregation go on, the alert is retried and delivered
    when the endpoint comes back, nothing is dead-lettered."""
    from streams.tools.services import free_port

    event_ticker = "EVTC"
    items = _one_burst(event_ticker, model_pool)
    port = free_port()  # nothing listens here yet
    worker = pipeline.start_worker(FINSENTRY_MODEL_DIR=str(tiny_sentiment_model_dir),
                                   FINSENTRY_ALERTS__WEBHOOK_URL=f"http://127.0.0.1:{port}/hooks/x",
                                   FINSENTRY_ALERTS__WEBHOOK_RETRY_INITIAL="0.2",
                                   FINSENTRY_ALERTS__WEBHOOK_RETRY_MAX="1", FINSENTRY_ALERTS__WEBHOOK_MAX_ATTEMPTS="60")
    pipeline.publish([json.dumps(i).encode() for i in items])
    records = wait_for(lambda: pipeline.read_topic(pipeline.topics.alerts, expect=1, timeout=2), 120, "an alert", worker)
    fired = Alert.loads(records[0].value)
    wait_for(lambda: pipeline.wait_for_points(len(items), timeout=1) >= len(items), 120, "every item", worker)
    time.sleep(3)  # several refused attempts
    assert "webhook" in worker.output() and "delivered" not in worker.output()
    hook = WebhookServer(fail_first=0, port=port)
    try:
        wait_for(lambda: any(fired.dedup_key in json.dumps(p) for p in hook.posts), 60, "the webhook post", worker)
        assert pipeline.read_all(pipeline.topics.dead_letter) == []
    finally:
        hook.close()

