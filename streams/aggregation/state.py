"""A ticker's aggregation state: one value per ticker (one changelog record per change), plus its sealed ids.

Open windows of every size, baselines, the ids counted lately, the open
incidents and cooldowns: after a crash the table holds, per ticker, the state
after some batch of mentions, never half of one. ``to_dict``/``from_dict`` are
the changelog codec; records written by earlier versions keep loading.

**Sealed ids.** The ids counted in the last 15 minutes are the bulk of a busy
ticker's state, and a state record is rewritten on every batch that names the
ticker, so keeping them all in it made the changelog carry every id ~300
times. The state record keeps only the ids counted since the last seal; every
:data:`SEAL_AT` of them are sealed into an immutable record of their own
(:func:`chunk_key`), written once, *before* the state record that lists it
(same changelog partition, so in order), and deleted once all its ids are
older than the dedup floor. A crash between the two leaves an unlisted chunk,
overwritten when the same seal happens again; a listed chunk that is missing
(deleted, or lost) raises the ticker's dedup floor past its ids, so those items
count as late rather than twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from streams.aggregation.windows import Baseline, WindowAgg

__all__ = ["Incident", "TickerState", "NEVER", "SEAL_AT", "chunk_key"]

log = logging.getLogger(__name__)

#: "Long before anything": the closed-until and dedup floors of a fresh state.
NEVER = -(10**18)
#: Ids a state record carries before they are sealed into a chunk record.
SEAL_AT = 64


def chunk_key(ticker: str, seq: int) -> str:
    """Table key of a ticker's sealed ids (``#`` never appears in a ticker symbol).

    >>> chunk_key("AAPL", 7)
    'AAPL#ids#7'
    """
    return f"{ticker}#ids#{seq}"


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
    seen: dict[str, float] = field(default_factory=dict)  # every id remembered: fresh + sealed chunks
    seen_floor: float = float(NEVER)  # items older than this are late: their ids may be forgotten
    fresh: dict[str, float] = field(default_factory=dict)  # ids not sealed yet: kept in the state record
    chunks: dict[int, float] = field(default_factory=dict)  # sealed chunk seq -> newest time in it
    next_chunk: int = 0
    incidents: dict[str, Incident] = field(default_factory=dict)  # by polarity
    quiet_until: dict[str, float] = field(default_factory=dict)
    late: int = 0

    def baseline(self, size: int) -> Baseline:
        return self.baselines.setdefault(size, Baseline(size=size))

    def due(self, lateness: int) -> float | None:
        """Watermark at which this state next needs closing work."""
        ends = [min(per) + size for size, per in self.windows.items() if per]  # windows are keyed by start
        ends += [i.check_from + i.window for i in self.incidents.values()]
        return min(ends) + lateness if ends else None

    def remember(self, item_id: str, ts: float) -> tuple[str, dict[str, Any]] | None:
        """Note a counted id; returns ``(key, record)`` of a chunk to write when this seals one."""
        self.seen[item_id] = ts
        self.fresh[item_id] = ts
        if len(self.fresh) < SEAL_AT:
            return None
        seq, ids = self.next_chunk, self.fresh
        self.chunks[seq] = max(ids.values())
        self.next_chunk, self.fresh = seq + 1, {}
        return chunk_key(self.ticker, seq), {"ids_of": self.ticker, "ids": ids}

    def forget_before(self, floor: float) -> list[str]:
        """Drop ids older than ``floor``; returns the keys of the chunks left with none at or after it."""
        self.seen = {i: t for i, t in self.seen.items() if t >= floor}
        self.fresh = {i: t for i, t in self.fresh.items() if t >= floor}
        self.seen_floor = floor
        expired = [seq for seq, newest in self.chunks.items() if newest < floor]
        for seq in expired:
            del self.chunks[seq]
        return [chunk_key(self.ticker, seq) for seq in expired]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ticker": self.ticker, "partition": self.partition,
            "windows": {str(s): [a.to_dict() for a in per.values()] for s, per in self.windows.items()},
            "closed_until": {str(s): v for s, v in self.closed_until.items()},
            "baselines": {str(s): b.to_dict() for s, b in self.baselines.items()},
            "seen": self.fresh, "seen_floor": self.seen_floor,
            "chunks": {str(seq): newest for seq, newest in self.chunks.items()}, "next_chunk": self.next_chunk,
            "incidents": {k: i.to_dict() for k, i in self.incidents.items()},
            "quiet_until": self.quiet_until, "late": self.late,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], lookup: Callable[[str], Any] | None) -> "TickerState":
        """Decode a state record; ``lookup`` (the table's ``get``) reads its sealed chunks. With
        ``lookup=None`` the chunks are not read and ``seen`` holds only the fresh ids: for reading
        windows, never for counting."""
        windows: dict[int, dict[int, WindowAgg]] = {}
        for size, rows in data.get("windows", {}).items():
            windows[int(size)] = {int(r["start"]): WindowAgg.from_dict(r) for r in rows}
        fresh = {str(k): float(v) for k, v in data.get("seen", {}).items()}  # earlier versions: every id
        state = cls(
            ticker=data["ticker"], partition=int(data["partition"]), windows=windows,
            closed_until={int(k): int(v) for k, v in data.get("closed_until", {}).items()},
            baselines={int(k): Baseline.from_dict(v) for k, v in data.get("baselines", {}).items()},
            seen=dict(fresh), seen_floor=float(data.get("seen_floor", NEVER)), fresh=fresh,
            chunks={int(k): float(v) for k, v in data.get("chunks", {}).items()},
            next_chunk=int(data.get("next_chunk", 0)),
            incidents={k: Incident.from_dict(v) for k, v in data.get("incidents", {}).items()},
            quiet_until={str(k): float(v) for k, v in data.get("quiet_until", {}).items()},
            late=int(data.get("late", 0)),
        )
        if lookup is not None:
            state._read_chunks(lookup)
        return state

    def _read_chunks(self, lookup: Callable[[str], Any]) -> None:
        for seq, newest in sorted(self.chunks.items()):
            record = lookup(chunk_key(self.ticker, seq))
            if not record:
                # never counted twice: items up to the missing ids' newest time count as late from now on
                log.warning("%s: sealed ids %s missing from the table; items up to %.0f count as late",
                            self.ticker, chunk_key(self.ticker, seq), newest)
                self.seen_floor = max(self.seen_floor, newest + 1e-6)
                del self.chunks[seq]
                continue
            self.seen.update((str(k), float(v)) for k, v in record["ids"].items())
        if self.seen_floor > NEVER:
            self.seen = {i: t for i, t in self.seen.items() if t >= self.seen_floor}
