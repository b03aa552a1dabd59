"""A ticker's whole aggregation state, as one value (one changelog record per change).

Open windows of every size, baselines, the ids already counted, the open
incidents and cooldowns: after a crash the table holds, per ticker, the state
after some batch of mentions, never half of one. ``to_dict``/``from_dict`` are
the changelog codec; the wire format (JSON) is unchanged from earlier versions,
so saved state keeps loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.aggregation.windows import Baseline, WindowAgg

__all__ = ["Incident", "TickerState", "NEVER"]

#: "Long before anything": the closed-until and dedup floors of a fresh state.
NEVER = -(10**18)


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
    seen_floor: float = float(NEVER)  # items older than this are late: their ids may be forgotten
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
            seen_floor=float(data.get("seen_floor", NEVER)),
            incidents={k: Incident.from_dict(v) for k, v in data.get("incidents", {}).items()},
            quiet_until={str(k): float(v) for k, v in data.get("quiet_until", {}).items()},
            late=int(data.get("late", 0)),
        )
