"""Incidents: a ticker's open alert per polarity, from firing to resolution.

Rules that match in one window join the ticker's open incident of the same
polarity (a volume incident joins any), escalate it when a higher level
matches, and resolve it after ``clear_windows`` quiet windows; a resolved
incident's rules then stay quiet for their cooldown. Each status change
becomes one :class:`~streams.contracts.records.Alert` with a stable dedup key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple

from streams.aggregation.advice import suggestion
from streams.aggregation.rules import SEVERITY_RANK, Rule, RuleSet, polarity_of
from streams.aggregation.state import NEVER, Incident, TickerState
from streams.aggregation.windows import BaselineView, WindowAgg, window_label
from streams.contracts.records import Alert, AlertItem

__all__ = ["Signals", "signals_of", "IncidentBook", "POLARITIES"]

#: Incident slots of a ticker, in the order matches are handled.
POLARITIES = ("negative", "positive", "volume")


class Signals(NamedTuple):
    """What the rules test in one window, against the ticker's baseline (immutable; a NamedTuple
    because one is built per closed window)."""

    mean: float
    negative_share: float
    positive_share: float
    z: float
    ratio: float
    negative_ratio: float
    positive_ratio: float

    def value(self, rule: Rule) -> float:
        return getattr(self, _SIGNAL_FIELDS[rule.spec.signal])


#: A rule's signal name -> the :class:`Signals` field that holds it.
_SIGNAL_FIELDS = {"mean_score": "mean", "z_score": "z", "volume_ratio": "ratio",
                  "negative_ratio": "negative_ratio", "positive_ratio": "positive_ratio"}


def signals_of(agg: WindowAgg, view: BaselineView, between_window_std: float, rate_floor: float) -> Signals:
    return Signals(
        mean=agg.mean, negative_share=agg.negative_share, positive_share=agg.positive_share,
        z=view.z_score(agg, between_window_std), ratio=view.volume_ratio(agg, rate_floor),
        negative_ratio=view.negative_ratio(agg, rate_floor), positive_ratio=view.positive_ratio(agg, rate_floor),
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class IncidentBook:
    """Opens, escalates and resolves the incidents of ticker states (which hold them)."""

    def __init__(self, rules: RuleSet, signals: Any, half_life: float) -> None:
        self.rules_by_id = {r.id: r for r in rules.active}
        self._signals = signals  # (agg, view) -> Signals, with the engine's settings
        self.half_life = half_life

    def match(self, state: TickerState, polarity: str, matches: list, agg: WindowAgg, view: BaselineView,
              signals: Signals, ts: float, now: datetime | None, alerts: list[Alert]) -> None:
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
                    alerts.append(self.alert("escalated", state, incident, rule, level.threshold, agg, view,
                                             signals, ts, now))
            return
        ready = [(r, lv) for r, lv in matches if ts >= state.quiet_until.get(r.id, NEVER)]
        if not ready:
            return
        rule, level = max(ready, key=lambda m: SEVERITY_RANK[m[1].severity])  # ties: file order
        incident = Incident(
            dedup_key=f"{state.ticker}:{rule.id}:{window_label(agg.size)}:{agg.start}", rule=rule.id,
            window=agg.size, window_start=agg.start, severity=level.severity, fired_at=ts, check_from=agg.start,
            matched=[r.id for r, _ in matches],
        )
        state.incidents[polarity] = incident
        alerts.append(self.alert("firing", state, incident, rule, level.threshold, agg, view, signals, ts, now))

    def test_recovery(self, state: TickerState, polarity: str, incident: Incident,
                      closed: dict[int, tuple[WindowAgg, BaselineView]], limit: float, now: datetime | None,
                      alerts: list[Alert]) -> None:
        """Count the incident's quiet windows up to ``limit``; resolve it after enough of them."""
        rule = self.rules_by_id.get(incident.rule)
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
                    cooldown = self.rules_by_id[rid].cooldown if rid in self.rules_by_id else 0
                    state.quiet_until[rid] = end + cooldown
                agg, view = closed.get(start, (WindowAgg(start, size),
                                               state.baseline(size).view(start, self.half_life)))
                if rule is not None:
                    alerts.append(self.alert("resolved", state, incident, rule, rule.clear or 0.0, agg, view,
                                             self._signals(agg, view), float(end), now))
                del state.incidents[polarity]
                return

    def alert(self, status: str, state: TickerState, incident: Incident, rule: Rule, threshold: float,
              agg: WindowAgg, view: BaselineView, signals: Signals, ts: float, now: datetime | None) -> Alert:
        label = window_label(agg.size)
        fields = {
            "ticker": state.ticker, "window": label, "count": agg.count, "mean": signals.mean,
            "negative_pct": 100 * signals.negative_share, "positive_pct": 100 * signals.positive_share,
            "z": signals.z, "ratio": signals.ratio, "negative_ratio": signals.negative_ratio,
            "positive_ratio": signals.positive_ratio, "baseline_mean": view.mean, "baseline_rate": view.rate,
            "severity": incident.severity, "rule": rule.id, "value": signals.value(rule), "threshold": threshold,
        }
        if polarity_of(rule.kind) == "negative" or rule.kind == "volume_surge" and signals.mean < 0:
            top = agg.most_negative
        else:
            top = agg.most_positive
        advice = suggestion(rule.kind, incident.severity, fields, rule.suggestion)
        if status == "resolved":
            advice = (f"Resolved: {rule.id} on {state.ticker} back within normal range for "
                      f"{rule.clear_windows} window(s).")
        title = f"[{incident.severity.upper()}] {state.ticker} {rule.id} {status}"
        return Alert(
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
