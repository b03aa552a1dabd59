"""The aggregation/alert engine on hand-made streams: windows, dedup, lateness,
restart consistency, one alert per incident, hysteresis and cooldown."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from streams.aggregation.agent import effect_points
from streams.aggregation.engine import Aggregator, EngineConfig
from streams.aggregation.state import SEAL_AT, TickerState
from streams.contracts.records import Mention
from streams.aggregation.rules import parse_rules

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)

RULES = """
version: 1
rules:
  - id: negative-surge
    kind: negative_surge
    window: 5m
    min_mentions: 5
    min_baseline_windows: 10
    levels:
      - {severity: critical, threshold: 10, min_mentions: 10}
      - {severity: warning, threshold: 5}
    clear: 2
    cooldown: 30m
  - id: volume-surge
    kind: volume_surge
    window: 5m
    min_mentions: 8
    min_baseline_windows: 10
    levels:
      - {severity: warning, threshold: 5}
    clear: 2
    cooldown: 30m
"""


def M(id: str, ticker: str, published_at: datetime, score: float, label: str, headline: str = "",
      source_partition: str = "", source_watermark: float = 0.0) -> Mention:
    """The worker's own mention record, as the scorer publishes it."""
    return Mention(id=id, ticker=ticker, published_at=published_at, score=score, label=label, source="test",
                   headline=headline, source_partition=source_partition, source_watermark=source_watermark)


def background(ticker: str, minutes: int, every_s: int = 120, start: datetime = T0, seed: int = 1) -> list[M]:
    rng = random.Random(seed)
    out = []
    for i in range(minutes * 60 // every_s):
        label = rng.choice(["negative", "neutral", "neutral", "positive"])
        score = {"negative": -0.8, "neutral": 0.0, "positive": 0.8}[label]
        out.append(M(f"{ticker}-bg-{seed}-{i}", ticker, start + timedelta(seconds=i * every_s + rng.randint(0, 30)),
                     score, label, f"{ticker} routine item {i}"))
    return out


def burst(ticker: str, at: datetime, n: int, tag: str = "b") -> list[M]:
    return [M(f"{ticker}-{tag}-{i}", ticker, at + timedelta(seconds=10 * i), -0.9, "negative",
              f"{ticker} falls after profit warning {i}") for i in range(n)]


def run(mentions, engine=None, store=None):
    store = {} if store is None else store
    engine = engine or Aggregator(parse_rules(RULES, windows=[60, 300]), EngineConfig(), store)
    points, alerts = [], []
    for m in mentions:
        effects = engine.observe(m, 0)
        effects.apply(store, lambda value: json.loads(json.dumps(value)))  # what the changelog gives back
        engine.commit(effects)  # as the agent does after the table write
        points += effect_points(effects)
        alerts += effects.alerts
    return points, alerts, store


def by_time(mentions):
    return sorted(mentions, key=lambda m: m.published_at)


def window_counts(points, window="5m"):
    out = {}
    for line in points:
        if line.startswith("ticker_window,") and f"window={window}" in line:
            ticker = line.split("ticker=")[1].split(",")[0]
            count = int(line.split("count=")[1].split("i")[0])
            out[(ticker, int(line.rsplit(" ", 1)[1]))] = count
    return out


def test_windows_count_every_item_once_and_close_on_the_watermark():
    stream = by_time(background("AAA", 60) + background("BBB", 60, every_s=45, seed=2))
    flush = M("flush", "ZZZ", T0 + timedelta(hours=2), 0.0, "neutral")
    points, _, _ = run(stream + [flush])
    for window in ("1m", "5m"):
        counts = window_counts(points, window)
        assert sum(counts.values()) == len(stream)
        assert sum(c for (t, _), c in counts.items() if t == "AAA") == 30


def test_redelivered_and_late_items_are_not_counted_twice():
    stream = by_time(background("AAA", 60))
    redelivered = stream[:20] + stream[10:20] + stream[20:]  # a replayed stretch
    late = M("late-1", "AAA", T0 + timedelta(minutes=1), -0.5, "negative")  # after its windows closed
    flush = M("flush", "ZZZ", T0 + timedelta(hours=2), 0.0, "neutral")
    points, _, store = run(redelivered + [late, flush])
    assert sum(window_counts(points).values()) == len(stream)
    assert store["AAA"]["late"] >= 1


def test_a_busy_ticker_remembers_ids_for_the_dedup_horizon_only():
    """The ids a ticker keeps are bounded by the horizon (+ one sweep interval), not by its history:
    a ticker named every 10 s for 2 hours keeps ~16 minutes of ids, and one re-delivered from
    before the sweep's floor is late, never counted again."""
    config = EngineConfig()
    stream = by_time(background("AAA", 120, every_s=10))
    _, _, store = run(stream)
    state = TickerState.from_dict(store["AAA"], store.get)
    newest = max(m.published_at.timestamp() for m in stream)
    assert (config.dedup_horizon / 10) * 0.9 <= len(state.seen) <= (config.dedup_horizon + config.forget_every) / 10 + 5
    assert min(state.seen.values()) >= state.seen_floor >= newest - config.dedup_horizon - config.forget_every
    again, _, store = run([stream[0], stream[len(stream) // 2]], store=store)  # re-delivered: old ones
    assert store["AAA"]["late"] >= 2 and sum(window_counts(again, "1m").values()) == 0


def test_a_busy_tickers_state_record_stays_small_and_each_id_is_written_about_once():
    """Ids are sealed into chunk records written once, not rewritten with the state on every mention,
    and chunks whose ids all aged out are deleted."""
    stream = by_time(background("AAA", 120, every_s=5))
    store, id_writes, state_ids = {}, 0, []
    engine = Aggregator(parse_rules(RULES, windows=[60, 300]), EngineConfig(), store)
    for m in stream:
        effects = engine.observe(m, 0)
        for key, value, _ in effects.writes():
            if value is not None:
                id_writes += len(value.get("ids", value.get("seen", {})))
            if key == "AAA":
                state_ids.append(len(value["seen"]))
        effects.apply(store)
        engine.commit(effects)
    assert max(state_ids) < SEAL_AT
    # each id: in ~SEAL_AT/2 state records (one per mention here) and one chunk; unsealed, every state
    # record would carry the whole 15 minutes of ids: ~180 writes of each id at one mention per 5 s
    assert id_writes <= len(stream) * (SEAL_AT / 2 + 2)
    chunks = [key for key in store if key.startswith("AAA#ids#")]
    assert 0 < len(chunks) <= EngineConfig().dedup_horizon / 5 / SEAL_AT + 3  # expired chunks deleted
    kept = TickerState.from_dict(store["AAA"], store.get).seen
    assert kept.keys() >= {m.id for m in stream[-150:]}


def test_restart_with_sealed_ids_gives_the_same_output_as_no_restart():
    stream = by_time(background("AAA", 90, every_s=5) + burst("AAA", T0 + timedelta(minutes=70), 40)
                     + background("BBB", 90, every_s=7, seed=3))
    flush = [M("flush", "ZZZ", T0 + timedelta(hours=3), 0.0, "neutral")]
    points, alerts, _ = run(stream + flush)
    rules = parse_rules(RULES, windows=[60, 300])
    for cut in (200, len(stream) // 2, len(stream) - 30):
        first_points, first_alerts, store = run(stream[:cut])
        assert any("#ids#" in key for key in store)
        again = Aggregator(rules, EngineConfig(), store)
        rest_points, rest_alerts, _ = run(stream[cut - 120:] + flush, engine=again, store=store)
        assert sorted(set(first_points + rest_points)) == sorted(set(points))
        assert [a.dedup_key for a in first_alerts + rest_alerts] == [a.dedup_key for a in alerts]


def test_a_missing_chunk_makes_its_items_late_never_counted_twice():
    # a long lateness keeps every window open: only the ids can tell a re-delivery
    config, rules = EngineConfig(lateness=7200), parse_rules(RULES, windows=[60, 300])
    stream = by_time(background("AAA", 30, every_s=5))
    _, _, store = run(stream, engine=Aggregator(rules, config, store := {}), store=store)
    chunks = sorted(key for key in store if key.startswith("AAA#ids#"))
    assert chunks
    lost = set(store.pop(chunks[-1])["ids"])  # e.g. a chunk the broker lost
    redelivered = [m for m in stream if m.id in lost]
    engine = Aggregator(rules, config, store)
    for m in redelivered:
        effects = engine.observe(m, 0)
        assert effects.duplicates + effects.late == 1, m.id
        effects.apply(store)
        engine.commit(effects)
    assert store["AAA"]["late"] == len(redelivered)


def test_restart_from_saved_state_gives_the_same_output_as_no_restart():
    stream = by_time(background("AAA", 240) + burst("AAA", T0 + timedelta(hours=3), 12)
                     + background("BBB", 240, seed=3))
    flush = [M("flush", "ZZZ", T0 + timedelta(hours=5), 0.0, "neutral")]
    points, alerts, _ = run(stream + flush)
    rules = parse_rules(RULES, windows=[60, 300])
    for cut in (37, len(stream) // 2, len(stream) - 5):
        first_points, first_alerts, store = run(stream[:cut])
        # a crash after the first `cut` mentions, with a few of them re-delivered on restart
        again = Aggregator(rules, EngineConfig(), store)
        rest_points, rest_alerts, _ = run(stream[cut - 3:] + flush, engine=again, store=store)
        assert sorted(set(first_points + rest_points)) == sorted(set(points))
        assert [a.dedup_key for a in first_alerts + rest_alerts] == [a.dedup_key for a in alerts]


def test_a_burst_raises_one_alert_with_evidence_then_resolves_and_cools_down():
    quiet = background("AAA", 300)
    first = burst("AAA", T0 + timedelta(hours=3), 15, "b1")
    within_cooldown = burst("AAA", T0 + timedelta(hours=3, minutes=25), 15, "b2")
    after_cooldown = burst("AAA", T0 + timedelta(hours=4, minutes=30), 15, "b3")
    _, alerts, _ = run(by_time(quiet + first + within_cooldown + after_cooldown))
    firing = [a for a in alerts if a.status == "firing"]
    assert [a.dedup_key.split(":")[1] for a in firing] == ["negative-surge", "negative-surge"]
    first_alert = firing[0]
    assert first_alert.event_time < T0 + timedelta(hours=3, minutes=2)  # fires during the burst, not after
    assert first_alert.count >= 5 and first_alert.negative_share > 0.5
    assert {t.id for t in first_alert.top_items} <= {m.id for m in first}
    assert first_alert.top_items and first_alert.suggestion.startswith("Review exposure to AAA")
    assert "volume-surge" in [a.rule for a in alerts if a.dedup_key == first_alert.dedup_key] + \
        first_alert.also_matched + sum((a.also_matched for a in alerts), [])
    statuses = [a.status for a in alerts if a.dedup_key == first_alert.dedup_key]
    assert statuses[0] == "firing" and statuses[-1] == "resolved"
    assert firing[1].event_time >= T0 + timedelta(hours=4, minutes=30)  # the second burst fell in the cooldown


def test_a_rule_fires_on_the_very_mention_that_reaches_its_min_mentions():
    rules = parse_rules("""
version: 1
rules:
  - id: negative-spike
    kind: negative_spike
    window: 5m
    min_mentions: 4
    levels:
      - {severity: warning, threshold: -0.5}
""", windows=[60, 300])
    mentions = burst("AAA", T0 + timedelta(minutes=1), 4)
    _, three, _ = run(mentions[:3], engine=Aggregator(rules, EngineConfig(), {}))
    _, four, _ = run(mentions, engine=Aggregator(rules, EngineConfig(), {}))
    assert three == []
    assert [(a.status, a.count, a.event_time) for a in four] == [("firing", 4, mentions[3].published_at)]


def test_quiet_ticker_raises_nothing():
    _, alerts, _ = run(by_time(background("AAA", 600) + background("BBB", 600, every_s=30, seed=5)))
    assert alerts == []


def test_a_lagging_input_topic_holds_windows_open_instead_of_losing_its_items():
    """News runs an hour ahead of social (e.g. a replay consumed unevenly): the watermark is the
    minimum over input partitions, so the social items still land in their windows."""
    news = [M(f"n{i}", "AAA", T0 + timedelta(minutes=i), 0.0, "neutral", "",
                     "news:0", (T0 + timedelta(minutes=i)).timestamp()) for i in range(120)]
    social = [M(f"s{i}", "AAA", T0 + timedelta(minutes=i, seconds=30), -0.9, "negative", "",
                       "social:0", (T0 + timedelta(minutes=i, seconds=30)).timestamp()) for i in range(120)]
    flush = [M(f"f{src}", "ZZZ", T0 + timedelta(hours=3), 0.0, "neutral", "", src,
                      (T0 + timedelta(hours=3)).timestamp()) for src in ("news:0", "social:0")]
    arrival = social[:5] + news + social[5:] + flush  # social starts, then news runs two hours ahead
    points, _, store = run(arrival)
    assert sum(window_counts(points, "5m").values()) == 240
    # only the first news items, which arrive before news is known as a source, miss their 1m window
    assert store["AAA"]["late"] <= 4
    # without source information the same order would have dropped most of social as late
    bare = [M(m.id, m.ticker, m.published_at, m.score, m.label) for m in arrival]
    points, _, store = run(bare)
    assert store["AAA"]["late"] > 100
