"""Per-ticker windows, baselines and alert decisions over a store of ticker states.

:meth:`Aggregator.observe` does not write the store itself: it returns
:class:`Effects` (closed windows, alerts, new ticker states) and the caller
writes the states only after the window points and alerts were delivered. A
crash in between replays the mention against the old state and produces the
same points (same identity: overwritten) and alerts (same dedup key). The ids
kept in a state (:mod:`streams.aggregation.state`) make a re-delivered mention
a no-op, so nothing is counted twice.

Windows close on a per-partition event-time watermark
(:mod:`streams.aggregation.watermarks`) minus ``lateness``: a late item within
the lateness still updates its window; a later one is counted in ``late`` and
left out of the aggregates (it is still scored and stored as an item).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, MutableMapping, NamedTuple, Protocol

from streams.aggregation.incidents import POLARITIES, IncidentBook, Signals, signals_of
from streams.aggregation.rules import RuleSet, polarity_of
from streams.aggregation.state import NEVER, TickerState
from streams.aggregation.watermarks import Watermarks
from streams.aggregation.windows import BaselineView, TopItem, WindowAgg, window_label, window_start
from streams.contracts.records import Alert

__all__ = ["EngineConfig", "ClosedWindow", "Effects", "Aggregator", "MentionLike"]


class MentionLike(Protocol):
    id: str
    ticker: str
    published_at: datetime
    score: float
    label: str
    headline: str


@dataclass(frozen=True)
class EngineConfig:
    """Aggregation settings (see ``AlertSettings`` for the environment names)."""

    windows: tuple[int, ...] = (60, 300, 3600)
    lateness: int = 30
    half_life: float = 6 * 3600.0
    between_window_std: float = 0.05
    rate_floor_per_minute: float = 0.2
    top_items: int = 5
    max_future_skew: float = 300.0
    dedup_horizon: int = 900  # ids are remembered this long (event time) behind the watermark
    forget_every: int = 60  # ... and swept out at most this often per ticker (event time)
    source_idle_s: float = 60.0  # an input partition silent this long (wall clock) stops holding the watermark

    def rate_floor(self, size: int) -> float:
        return self.rate_floor_per_minute * size / 60.0


class ClosedWindow(NamedTuple):
    """A window of one ticker that the watermark closed, with its signals against the baseline.

    A NamedTuple, like :class:`~streams.aggregation.windows.BaselineView` and
    :class:`~streams.aggregation.incidents.Signals`: immutable as a frozen dataclass, built in a
    third of its time (one per closed window: more than one per mention)."""

    ticker: str
    window: str  # label, e.g. "5m"
    start: int  # epoch s
    count: int
    mean_score: float
    negative_share: float
    positive_share: float
    z_score: float
    volume_ratio: float
    baseline_mean: float
    baseline_std: float
    baseline_rate: float


@dataclass
class Effects:
    """What a batch of mentions caused; the caller delivers windows/alerts, then writes states."""

    closed: list[ClosedWindow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    states: dict[str, TickerState] = field(default_factory=dict)
    #: sealed-id chunks to write (key -> (partition, record)) and to delete (key -> partition)
    chunks: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    late: int = 0
    mentions: int = 0

    @property
    def closed_windows(self) -> int:
        return len(self.closed)

    def writes(self) -> list[tuple[str, dict[str, Any] | None, int]]:
        """``(key, value or None to delete, changelog partition)`` in the order they must be written:
        chunk deletions and new chunks before the states that stop or start listing them."""
        return ([(key, None, partition) for key, partition in self.dropped.items()]
                + [(key, record, partition) for key, (partition, record) in self.chunks.items()]
                + [(ticker, state.to_dict(), state.partition) for ticker, state in self.states.items()])

    def apply(self, store: MutableMapping[str, Any], codec: Callable[[Any], Any] = lambda value: value) -> None:
        """Write :meth:`writes` into a plain mapping (offline tools, tests), each value through ``codec``."""
        for key, value, _ in self.writes():
            if value is None:
                store.pop(key, None)
            else:
                store[key] = codec(value)


class Aggregator:
    """Feeds mentions through windows, baselines and rules for the tickers of a store."""

    def __init__(self, rules: RuleSet, config: EngineConfig, store: MutableMapping[str, Any]) -> None:
        self.rules = rules
        self.config = config
        self.store = store
        self.incidents = IncidentBook(rules, self._signals, config.half_life)
        # evidence (top items) only where a rule can cite it: keeps the per-ticker state small
        watched = {r.window for r in rules.active}
        self._rules_by_size = {size: [r for r in rules.active if r.window == size] for size in watched}
        # fewer mentions than every rule of a size asks for: no rule can match (a rule's counted mentions,
        # negative or positive ones for the surge kinds, never exceed the window's count)
        self._min_mentions = {size: min(r.min_mentions for r in rs) for size, rs in self._rules_by_size.items()}
        self._keep = {size: config.top_items if size in watched else 0 for size in config.windows}
        # decoded states as last written to the store (see commit); saves decoding on every mention
        self._cache: dict[str, TickerState] = {}
        self.watermarks = Watermarks(config.max_future_skew, config.source_idle_s)
        self._index: dict[int, dict[str, float]] = {}  # partition -> ticker -> watermark of its next closing work
        self._next_due: dict[int, float] = {}

    # -- state access -------------------------------------------------------

    def _get(self, ticker: str, effects: Effects) -> TickerState | None:
        if ticker in effects.states:
            return effects.states[ticker]
        if ticker in self._cache:
            # taken out while it is being changed: if the new state never reaches the store (no commit),
            # the next mention decodes the stored one again
            return self._cache.pop(ticker)
        raw = self.store.get(ticker)
        return TickerState.from_dict(raw, self.store.get) if raw else None

    def commit(self, effects: Effects) -> None:
        """Call after ``effects.writes()`` reached the store: keep those states decoded for the next mentions."""
        self._cache.update(effects.states)

    def forget_partitions(self, partitions: set[int]) -> None:
        """After a rebalance: drop what this process remembers besides the store (cache, closing index,
        watermarks); it is rebuilt from the store on the next mention of each partition."""
        self._cache.clear()
        for p in partitions:
            self._index.pop(p, None)
            self._next_due.pop(p, None)
            self.watermarks.forget(p)

    def _ensure_index(self, partition: int) -> None:
        """Rebuild the closing index of a partition from the store (after a (re)start)."""
        if partition in self._index:
            return
        index: dict[str, float] = {}
        for ticker, raw in list(self.store.items()):
            if raw and int(raw.get("partition", -1)) == partition:  # sealed-id chunks have no partition
                due = TickerState.from_dict(raw, None).due(self.config.lateness)
                if due is not None:
                    index[ticker] = due
        self._index[partition] = index
        self._next_due[partition] = min(index.values(), default=math.inf)

    def _reindex(self, state: TickerState) -> None:
        index = self._index[state.partition]
        due = state.due(self.config.lateness)
        if due is None:
            index.pop(state.ticker, None)
        else:
            index[state.ticker] = due
            self._next_due[state.partition] = min(self._next_due[state.partition], due)

    def watermark(self, partition: int) -> float:
        return self.watermarks.get(partition)

    # -- the entry point ------------------------------------------------------

    def observe(self, mention: MentionLike, partition: int, now: datetime | None = None,
                effects: Effects | None = None) -> Effects:
        """Count one mention, evaluate its ticker's rules, close windows the watermark passed.

        Pass the same ``effects`` for several mentions to deliver them as one batch (states not yet in
        the store are read from it)."""
        effects = effects if effects is not None else Effects()
        self._ensure_index(partition)
        effects.mentions += 1
        ts = mention.published_at.timestamp()
        state = self._get(mention.ticker, effects) or TickerState(ticker=mention.ticker, partition=partition)
        if mention.id in state.seen:
            effects.duplicates += 1
        elif ts < state.seen_floor:
            state.late += 1  # too old to tell a re-delivery from a new item: never risk counting twice
            effects.late += 1
            effects.states[state.ticker] = state
        else:
            self._count(state, mention, ts, now, effects)
            effects.states[state.ticker] = state
            self._reindex(state)
        self.watermarks.observe(partition, mention, ts, now)
        self._forget(state, partition, effects)
        self.advance(partition, effects, now)
        return effects

    def _forget(self, state: TickerState, partition: int, effects: Effects) -> None:
        """Drop ids older than the dedup horizon; older items count as late from now on.

        A sweep reads every id of the ticker, so it runs once per ``forget_every`` seconds of event
        time, not per mention: ids live up to that much longer, which only widens the dedup."""
        floor = self.watermark(partition) - self.config.dedup_horizon
        if floor - state.seen_floor >= self.config.forget_every:
            for key in state.forget_before(floor):
                if effects.chunks.pop(key, None) is None:  # sealed in this very batch: never written
                    effects.dropped[key] = state.partition
            effects.states[state.ticker] = state

    def advance(self, partition: int, effects: Effects, now: datetime | None = None,
                watermark: float | None = None) -> Effects:
        """Close every window of the partition that the watermark has passed."""
        self._ensure_index(partition)
        if watermark is not None:
            self.watermarks.raise_to(partition, watermark)
        wm = self.watermark(partition)
        if wm < self._next_due[partition]:
            return effects
        index = self._index[partition]
        for ticker, due in sorted(index.items(), key=lambda kv: (kv[1], kv[0])):
            if due > wm:
                break
            state = self._get(ticker, effects)
            if state is None:
                index.pop(ticker, None)
                continue
            self._close(state, wm - self.config.lateness, effects, now)
            effects.states[ticker] = state
            due_now = state.due(self.config.lateness)
            if due_now is None:
                index.pop(ticker, None)
            else:
                index[ticker] = due_now
        self._next_due[partition] = min(index.values(), default=math.inf)
        return effects

    # -- counting and rules ---------------------------------------------------

    def _signals(self, agg: WindowAgg, view: BaselineView) -> Signals:
        return signals_of(agg, view, self.config.between_window_std, self.config.rate_floor(agg.size))

    def _count(self, state: TickerState, m: MentionLike, ts: float, now: datetime | None, effects: Effects) -> None:
        if (sealed := state.remember(m.id, ts)) is not None:
            key, record = sealed
            effects.chunks[key] = (state.partition, record)
        # rounded once, as the changelog keeps it: a restarted worker ranks evidence the same way
        item = TopItem(m.id, round(float(m.score), 6), (m.headline or "")[:200], ts)
        touched = []
        for size in self.config.windows:
            start = window_start(ts, size)
            if start < state.closed_until.get(size, NEVER):
                state.late += 1
                effects.late += 1
                continue
            agg = state.windows.setdefault(size, {}).setdefault(start, WindowAgg(start, size))
            agg.add(item, m.label, self._keep.get(size, self.config.top_items))
            touched.append(agg)
        for agg in touched:
            self._evaluate(state, agg, ts, now, effects)

    def _evaluate(self, state: TickerState, agg: WindowAgg, ts: float, now: datetime | None,
                  effects: Effects) -> None:
        rules = self._rules_by_size.get(agg.size)
        if not rules:  # no rule watches this window size: nothing to evaluate
            return
        baseline = state.baseline(agg.size)  # before the gate: the state record lists it as it always did
        if agg.count < self._min_mentions[agg.size]:  # most windows of most tickers: skip the baseline maths
            return
        view = baseline.view(agg.start, self.config.half_life)
        signals = self._signals(agg, view)
        matches = []
        for rule in rules:
            if rule.spec.uses_baseline and view.windows < rule.min_baseline_windows:
                continue
            level = rule.level_for(signals.value(rule), rule.counted(agg.count, agg.negative, agg.positive))
            if level is not None:
                matches.append((rule, level))
        for polarity in POLARITIES:
            group = [(r, lv) for r, lv in matches if polarity_of(r.kind) == polarity]
            if group:
                self.incidents.match(state, polarity, group, agg, view, signals, ts, now, effects.alerts)

    def _close(self, state: TickerState, limit: float, effects: Effects, now: datetime | None) -> None:
        """Close windows ending at or before ``limit``; test the incidents for recovery."""
        hl = self.config.half_life
        for size in self.config.windows:
            per = state.windows.get(size, {})
            closed: dict[int, tuple[WindowAgg, BaselineView]] = {}
            for start in sorted(per):
                agg = per[start]
                if agg.end > limit:
                    break
                baseline = state.baseline(size)
                view = baseline.view(agg.start, hl)
                signals = self._signals(agg, view)
                effects.closed.append(ClosedWindow(
                    ticker=state.ticker, window=window_label(size), start=agg.start, count=agg.count,
                    mean_score=agg.mean, negative_share=agg.negative_share, positive_share=agg.positive_share,
                    z_score=signals.z, volume_ratio=signals.ratio, baseline_mean=view.mean,
                    baseline_std=view.std, baseline_rate=view.rate,
                ))
                baseline.close(agg, hl)
                closed[start] = (agg, view)
                del per[start]
                state.closed_until[size] = max(state.closed_until.get(size, NEVER), agg.end)
            for polarity, incident in list(state.incidents.items()):
                if incident.window == size:
                    self.incidents.test_recovery(state, polarity, incident, closed, limit, now, effects.alerts)
