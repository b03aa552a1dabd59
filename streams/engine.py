"""Per-ticker windows, baselines and alert decisions: one state machine.

The whole state of a ticker (open windows of every size, baselines, ids
already counted, the open incident, cooldowns) is ONE value, so each change
is one changelog record: after a crash the table holds, per ticker, the state
after some mention, never half of one. The ids already counted make a
re-delivered mention (the scorer or this agent re-reading after a crash) a
no-op, so nothing is counted twice.

:meth:`Aggregator.observe` does not write the store itself: it returns
:class:`Effects` (InfluxDB points, alerts, new ticker states) and the caller
writes the states only after the points and alerts were delivered. A crash in
between replays the mention against the old state and produces the same
points (same identity: overwritten) and alerts (same dedup key).

Windows close on a per-partition event-time watermark (latest ``published_at``
seen, minus ``lateness``): a late item within the lateness still updates its
window; a later one is counted in ``late`` and left out of the aggregates (it
is still scored and stored as an item).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, MutableMapping, Protocol

from streams.advice import suggestion
from streams.points import alert_point, window_point
from streams.records import Alert, AlertItem
from streams.rules import SEVERITY_RANK, Rule, RuleSet
from streams.windows import Baseline, BaselineView, TopItem, WindowAgg, window_label, window_start

__all__ = ["EngineConfig", "Incident", "TickerState", "Effects", "Aggregator", "MentionLike"]

_NEG_INF = -(10**18)


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
    source_idle_s: float = 60.0  # an input partition silent this long (wall clock) stops holding the watermark

    def rate_floor(self, size: int) -> float:
        return self.rate_floor_per_minute * size / 60.0


@dataclass
class Incident:
    """The one open alert of a ticker."""

    dedup_key: str
    rule: str
    window: int
    window_start: int
    severity: str
    fired_at: float
    check_from: int  # next window start to test for recovery
    recovered: int = 0
    matched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Incident":
        return cls(**data)


@dataclass
class TickerState:
    ticker: str
    partition: int
    windows: dict[int, dict[int, WindowAgg]] = field(default_factory=dict)
    closed_until: dict[int, int] = field(default_factory=dict)
    baselines: dict[int, Baseline] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    seen_floor: float = float(_NEG_INF)  # items older than this are late: their ids may be forgotten
    incidents: dict[str, Incident] = field(default_factory=dict)  # by polarity
    quiet_until: dict[str, float] = field(default_factory=dict)
    late: int = 0

    def baseline(self, size: int) -> Baseline:
        return self.baselines.setdefault(size, Baseline(size=size))

    def due(self, lateness: int) -> float | None:
        """Watermark at which this state next needs closing work."""
        ends = [agg.end for per in self.windows.values() for agg in per.values()]
        ends += [i.check_from + i.window for i in self.incidents.values()]
        return min(ends) + lateness if ends else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ticker": self.ticker, "partition": self.partition,
            "windows": {str(s): [a.to_dict() for a in per.values()] for s, per in self.windows.items()},
            "closed_until": {str(s): v for s, v in self.closed_until.items()},
            "baselines": {str(s): b.to_dict() for s, b in self.baselines.items()},
            "seen": self.seen, "seen_floor": self.seen_floor,
            "incidents": {k: i.to_dict() for k, i in self.incidents.items()},
            "quiet_until": self.quiet_until, "late": self.late,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TickerState":
        windows: dict[int, dict[int, WindowAgg]] = {}
        for size, rows in data.get("windows", {}).items():
            windows[int(size)] = {int(r["start"]): WindowAgg.from_dict(r) for r in rows}
        return cls(
            ticker=data["ticker"], partition=int(data["partition"]), windows=windows,
            closed_until={int(k): int(v) for k, v in data.get("closed_until", {}).items()},
            baselines={int(k): Baseline.from_dict(v) for k, v in data.get("baselines", {}).items()},
            seen={str(k): float(v) for k, v in data.get("seen", {}).items()},
            seen_floor=float(data.get("seen_floor", _NEG_INF)),
            incidents={k: Incident.from_dict(v) for k, v in data.get("incidents", {}).items()},
            quiet_until={str(k): float(v) for k, v in data.get("quiet_until", {}).items()},
            late=int(data.get("late", 0)),
        )


@dataclass
class Effects:
    """What one mention caused; the caller delivers points/alerts, then writes states."""

    points: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    states: dict[str, TickerState] = field(default_factory=dict)
    closed_windows: int = 0
    duplicates: int = 0
    late: int = 0
    mentions: int = 0

    def add_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.points.append(alert_point(alert))

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(ticker, state.to_dict()) for ticker, state in self.states.items()]


def _polarity(rule: Rule) -> str:
    if rule.kind == "volume_surge":
        return "volume"
    if rule.kind in ("negative_spike", "shift_down", "negative_surge"):
        return "negative"
    return "positive"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


@dataclass(frozen=True)
class _Signals:
    mean: float
    negative_share: float
    positive_share: float
    z: float
    ratio: float
    negative_ratio: float
    positive_ratio: float

    def value(self, rule: Rule) -> float:
        return {"mean_score": self.mean, "z_score": self.z, "volume_ratio": self.ratio,
                "negative_ratio": self.negative_ratio, "positive_ratio": self.positive_ratio}[rule.spec.signal]


class Aggregator:
    """Feeds mentions through windows, baselines and rules for the tickers of a store."""

    def __init__(self, rules: RuleSet, config: EngineConfig, store: MutableMapping[str, Any]) -> None:
        self.rules = rules
        self.config = config
        self.store = store
        self._rules_by_id = {r.id: r for r in rules.active}
        # evidence (top items) only where a rule can cite it: keeps the per-ticker state small
        watched = {r.window for r in rules.active}
        self._keep = {size: config.top_items if size in watched else 0 for size in config.windows}
        # decoded states as last written to the store (see commit); saves decoding on every mention
        self._cache: dict[str, TickerState] = {}
        self._watermark: dict[int, float] = {}
        # per mentions partition: input "topic:partition" -> (its event-time progress, wall time last heard)
        self._sources: dict[int, dict[str, tuple[float, float]]] = {}
        self._index: dict[int, dict[str, float]] = {}
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
        return TickerState.from_dict(raw) if raw else None

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
            self._watermark.pop(p, None)
            self._sources.pop(p, None)

    def _ensure_index(self, partition: int) -> None:
        """Rebuild the closing index of a partition from the store (after a (re)start)."""
        if partition in self._index:
            return
        index: dict[str, float] = {}
        for ticker, raw in list(self.store.items()):
            if raw and int(raw.get("partition", -1)) == partition:
                due = TickerState.from_dict(raw).due(self.config.lateness)
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
        return self._watermark.get(partition, -math.inf)

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
        self._advance_watermark(mention, partition, ts, now)
        self._forget(state, partition, effects)
        self.advance(partition, effects, now)
        return effects

    def _advance_watermark(self, mention: MentionLike, partition: int, ts: float, now: datetime | None) -> None:
        """Event-time progress: the minimum over the input partitions that are still talking (so a
        lagging input topic holds windows open), or the latest ``published_at`` when mentions do not
        say where they came from. Items far in the future never move it."""
        source = getattr(mention, "source_partition", "")
        if not source:
            if now is None or ts <= now.timestamp() + self.config.max_future_skew:
                self._watermark[partition] = max(self.watermark(partition), ts)
            return
        wall = time.monotonic()
        sources = self._sources.setdefault(partition, {})
        progress = float(getattr(mention, "source_watermark", 0.0)) or ts
        if now is not None:
            progress = min(progress, now.timestamp() + self.config.max_future_skew)
        sources[source] = (max(sources.get(source, (progress, wall))[0], progress), wall)
        active = [p for p, seen in sources.values() if wall - seen <= self.config.source_idle_s]
        self._watermark[partition] = max(self.watermark(partition), min(active))

    def _forget(self, state: TickerState, partition: int, effects: Effects) -> None:
        """Drop ids older than the dedup horizon; older items count as late from now on."""
        floor = self.watermark(partition) - self.config.dedup_horizon
        if floor > state.seen_floor and any(t < floor for t in state.seen.values()):
            state.seen = {i: t for i, t in state.seen.items() if t >= floor}
            state.seen_floor = floor
            effects.states[state.ticker] = state

    def advance(self, partition: int, effects: Effects, now: datetime | None = None,
                watermark: float | None = None) -> Effects:
        """Close every window of the partition that the watermark has passed."""
        self._ensure_index(partition)
        if watermark is not None:
            self._watermark[partition] = max(self.watermark(partition), watermark)
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

    def _count(self, state: TickerState, m: MentionLike, ts: float, now: datetime | None, effects: Effects) -> None:
        state.seen[m.id] = ts
        item = TopItem(m.id, float(m.score), (m.headline or "")[:200], ts)
        touched = []
        for size in self.config.windows:
            start = window_start(ts, size)
            if start < state.closed_until.get(size, _NEG_INF):
                state.late += 1
                effects.late += 1
                continue
            agg = state.windows.setdefault(size, {}).setdefault(start, WindowAgg(start, size))
            agg.add(item, m.label, self._keep.get(size, self.config.top_items))
            touched.append(agg)
        for agg in touched:
            self._evaluate(state, agg, ts, now, effects)

    def _signals(self, agg: WindowAgg, view: BaselineView) -> _Signals:
        return _Signals(
            mean=agg.mean, negative_share=agg.negative_share, positive_share=agg.positive_share,
            z=view.z_score(agg, self.config.between_window_std),
            ratio=view.volume_ratio(agg, self.config.rate_floor(agg.size)),
            negative_ratio=view.negative_ratio(agg, self.config.rate_floor(agg.size)),
            positive_ratio=view.positive_ratio(agg, self.config.rate_floor(agg.size)),
        )

    def _evaluate(self, state: TickerState, agg: WindowAgg, ts: float, now: datetime | None,
                  effects: Effects) -> None:
        view = state.baseline(agg.size).view(agg.start, self.config.half_life)
        signals = self._signals(agg, view)
        matches = []
        for rule in self.rules.active:
            if rule.window != agg.size:
                continue
            if rule.spec.uses_baseline and view.windows < rule.min_baseline_windows:
                continue
            level = rule.level_for(signals.value(rule), rule.counted(agg.count, agg.negative, agg.positive))
            if level is not None:
                matches.append((rule, level))
        if not matches:
            return
        for polarity in ("negative", "positive", "volume"):
            group = [(r, lv) for r, lv in matches if _polarity(r) == polarity]
            if group:
                self._match(state, polarity, group, agg, view, signals, ts, now, effects)

    def _match(self, state: TickerState, polarity: str, matches: list, agg: WindowAgg, view: BaselineView,
               signals: "_Signals", ts: float, now: datetime | None, effects: Effects) -> None:
        """Join the ticker's open incident of this polarity (or, for volume, any), else open one."""
        if polarity == "volume":
            key = next(iter(state.incidents), None)
        else:
            key = polarity if polarity in state.incidents else ("volume" if "volume" in state.incidents else None)
        if key is not None:
            incident = state.incidents[key]
            for rule, level in matches:
                if rule.id not in incident.matched:
                    incident.matched.append(rule.id)
                if SEVERITY_RANK[level.severity] > SEVERITY_RANK[incident.severity]:
                    incident.severity = level.severity
                    effects.add_alert(self._alert("escalated", state, incident, rule, level.threshold, agg,
                                                  view, signals, ts, now))
            return
        ready = [(r, lv) for r, lv in matches if ts >= state.quiet_until.get(r.id, _NEG_INF)]
        if not ready:
            return
        rule, level = max(ready, key=lambda m: SEVERITY_RANK[m[1].severity])  # ties: file order
        incident = Incident(
            dedup_key=f"{state.ticker}:{rule.id}:{window_label(agg.size)}:{agg.start}", rule=rule.id,
            window=agg.size, window_start=agg.start, severity=level.severity, fired_at=ts, check_from=agg.start,
            matched=[r.id for r, _ in matches],
        )
        state.incidents[polarity] = incident
        effects.add_alert(self._alert("firing", state, incident, rule, level.threshold, agg, view, signals,
                                      ts, now))

    def _close(self, state: TickerState, limit: float, effects: Effects, now: datetime | None) -> None:
        """Close windows ending at or before ``limit``; test the incident for recovery."""
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
                effects.points.append(window_point(
                    ticker=state.ticker, window=window_label(size), start=agg.start, count=agg.count,
                    mean_score=agg.mean, negative_share=agg.negative_share, positive_share=agg.positive_share,
                    z_score=signals.z, volume_ratio=signals.ratio, baseline_mean=view.mean,
                    baseline_std=view.std, baseline_rate=view.rate,
                ))
                baseline.close(agg, hl)
                closed[start] = (agg, view)
                del per[start]
                state.closed_until[size] = max(state.closed_until.get(size, _NEG_INF), agg.end)
                effects.closed_windows += 1
            for polarity, incident in list(state.incidents.items()):
                if incident.window == size:
                    self._test_recovery(state, polarity, incident, closed, limit, effects, now)

    def _test_recovery(self, state: TickerState, polarity: str, incident: Incident,
                       closed: dict[int, tuple[WindowAgg, BaselineView]], limit: float, effects: Effects,
                       now: datetime | None) -> None:
        rule = self._rules_by_id.get(incident.rule)
        size = incident.window
        while incident.check_from + size <= limit:
            start = incident.check_from
            if rule is None:
                recovered = True  # the rule was removed from the file: nothing left to watch
            elif start in closed:
                agg, view = closed[start]
                recovered = rule.recovered(self._signals(agg, view).value(rule),
                                           rule.counted(agg.count, agg.negative, agg.positive))
            elif start in state.windows.get(size, {}):
                break  # still open
            else:
                recovered = True  # no mentions at all in that window
            incident.recovered = incident.recovered + 1 if recovered else 0
            incident.check_from += size
            if incident.recovered >= (rule.clear_windows if rule else 1):
                end = incident.check_from
                for rid in incident.matched:
                    cooldown = self._rules_by_id[rid].cooldown if rid in self._rules_by_id else 0
                    state.quiet_until[rid] = end + cooldown
                agg, view = closed.get(start, (WindowAgg(start, size), state.baseline(size).view(start, self.config.half_life)))
                if rule is not None:
                    effects.add_alert(self._alert(
                        "resolved", state, incident, rule, rule.clear or 0.0, agg, view, self._signals(agg, view),
                        float(end), now))
                del state.incidents[polarity]
                return

    # -- alert records --------------------------------------------------------

    def _alert(self, status: str, state: TickerState, incident: Incident, rule: Rule, threshold: float,
               agg: WindowAgg, view: BaselineView, signals: _Signals, ts: float, now: datetime | None) -> Alert:
        label = window_label(agg.size)
        fields = {
            "ticker": state.ticker, "window": label, "count": agg.count, "mean": signals.mean,
            "negative_pct": 100 * signals.negative_share, "positive_pct": 100 * signals.positive_share,
            "z": signals.z, "ratio": signals.ratio, "negative_ratio": signals.negative_ratio,
            "positive_ratio": signals.positive_ratio, "baseline_mean": view.mean, "baseline_rate": view.rate,
            "severity": incident.severity, "rule": rule.id, "value": signals.value(rule), "threshold": threshold,
        }
        if _polarity(rule) == "negative" or rule.kind == "volume_surge" and signals.mean < 0:
            top = agg.most_negative
        else:
            top = agg.most_positive
        advice = suggestion(rule.kind, incident.severity, fields, rule.suggestion)
        if status == "resolved":
            advice = f"Resolved: {rule.id} on {state.ticker} back within normal range for {rule.clear_windows} window(s)."
        title = f"[{incident.severity.upper()}] {state.ticker} {rule.id} {status}"
        alert = Alert(
            dedup_key=incident.dedup_key, status=status, ticker=state.ticker, rule=rule.id, kind=rule.kind,
            severity=incident.severity, window=label, window_start=_dt(agg.start), window_end=_dt(agg.end),
            event_time=_dt(ts), detected_at=now or datetime.now(timezone.utc), value=signals.value(rule),
            threshold=threshold, count=agg.count, mean_score=signals.mean, negative_share=signals.negative_share,
            z_score=signals.z, volume_ratio=signals.ratio, baseline_mean=view.mean, baseline_std=view.std,
            baseline_rate=view.rate,
            top_items=[AlertItem(id=t.id, score=t.score, headline=t.headline, published_at=t.published_at)
                       for t in top],
            suggestion=advice, also_matched=[r for r in incident.matched if r != rule.id], title=title,
        )
        return alert

