"""Event-time tumbling windows and the adaptive per-ticker baseline.

Pure data, no I/O: the Faust agent (:mod:`streams.aggregation.agent`) keeps these in a
changelog-backed table, and the offline detection evaluation runs the very
same objects on generated streams.

A window is ``[start, start + size)`` in event time (the item's
``published_at``), aligned to the epoch so every worker agrees on boundaries.
The baseline is an exponentially decayed summary of *closed* windows with a
half-life in event time, so a 1-minute and a 5-minute window forget at the
same speed. Empty windows count (a ticker nobody mentions has a low normal
volume) and are folded in lazily, in closed form, when the next window closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

__all__ = ["window_start", "window_label", "WindowAgg", "Baseline", "BaselineView", "TopItem"]

#: Ignore per-item variance below this: a run of identical scores must not make
#: the next ordinary window look like a 10-sigma event.
MIN_ITEM_STD = 0.15


def window_start(ts: float, size: int) -> int:
    """Start of the tumbling window of ``size`` seconds holding ``ts``.

    >>> window_start(125.7, 60), window_start(-1, 60)
    (120, -60)
    """
    return int(math.floor(ts / size)) * size


def window_label(size: int) -> str:
    """Short label used as the InfluxDB ``window`` tag.

    >>> [window_label(s) for s in (30, 60, 300, 3600, 5400)]
    ['30s', '1m', '5m', '1h', '90m']
    """
    if size % 3600 == 0:
        return f"{size // 3600}h"
    if size % 60 == 0:
        return f"{size // 60}m"
    return f"{size}s"


@dataclass
class TopItem:
    """An item that moved a window, kept as evidence for alerts."""

    id: str
    score: float
    headline: str
    published_at: float

    def to_list(self) -> list[Any]:
        return [self.id, self.score, self.headline, self.published_at]

    @classmethod
    def from_list(cls, row: list[Any]) -> "TopItem":
        return cls(str(row[0]), float(row[1]), str(row[2]), float(row[3]))


@dataclass
class WindowAgg:
    """Running numbers of one open window of one ticker."""

    start: int
    size: int
    count: int = 0
    sum_score: float = 0.0
    sum_sq: float = 0.0
    negative: int = 0
    positive: int = 0
    most_negative: list[TopItem] = field(default_factory=list)
    most_positive: list[TopItem] = field(default_factory=list)
    #: :meth:`to_dict`'s result until the next :meth:`add` (the only mutation)
    _record: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def mean(self) -> float:
        return self.sum_score / self.count if self.count else 0.0

    @property
    def negative_share(self) -> float:
        return self.negative / self.count if self.count else 0.0

    @property
    def positive_share(self) -> float:
        return self.positive / self.count if self.count else 0.0

    def add(self, item: TopItem, label: str, keep: int) -> None:
        """Count one item; keep the ``keep`` most negative and most positive as evidence.

        >>> w = WindowAgg(start=0, size=60)
        >>> w.add(TopItem("a", -0.8, "bad", 1.0), "negative", keep=1)
        >>> w.add(TopItem("b", 0.4, "good", 2.0), "positive", keep=1)
        >>> w.count, round(w.mean, 2), w.negative_share, w.most_negative[0].id
        (2, -0.2, 0.5, 'a')
        """
        self._record = None
        self.count += 1
        self.sum_score += item.score
        self.sum_sq += item.score * item.score
        self.negative += label == "negative"
        self.positive += label == "positive"
        if item.score < 0:
            self.most_negative = sorted([*self.most_negative, item], key=lambda t: (t.score, t.id))[:keep]
        if item.score > 0:
            self.most_positive = sorted([*self.most_positive, item], key=lambda t: (-t.score, t.id))[:keep]

    def to_dict(self) -> dict[str, Any]:
        """The changelog form, built once per change: a ticker's state record is rewritten on every batch
        that names the ticker, and most of its open windows did not change since the last one. Callers
        must not modify it.

        >>> w = WindowAgg(start=0, size=60)
        >>> before = w.to_dict()
        >>> w.add(TopItem("a", -0.5, "x", 1.0), "negative", keep=1)
        >>> before["count"], w.to_dict()["count"], w.to_dict()["most_negative"]
        (0, 1, [['a', -0.5, 'x', 1.0]])
        """
        if self._record is None:
            self._record = {
                "start": self.start, "size": self.size, "count": self.count, "sum_score": self.sum_score,
                "sum_sq": self.sum_sq, "negative": self.negative, "positive": self.positive,
                "most_negative": [t.to_list() for t in self.most_negative],
                "most_positive": [t.to_list() for t in self.most_positive],
            }
        return self._record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WindowAgg":
        return cls(
            start=int(data["start"]), size=int(data["size"]), count=int(data["count"]),
            sum_score=float(data["sum_score"]), sum_sq=float(data["sum_sq"]), negative=int(data["negative"]),
            positive=int(data["positive"]),
            most_negative=[TopItem.from_list(r) for r in data.get("most_negative", [])],
            most_positive=[TopItem.from_list(r) for r in data.get("most_positive", [])],
        )


class BaselineView(NamedTuple):
    """What "normal" looks like for one ticker and window size, at one moment (immutable; a NamedTuple
    because one is built per closed window)."""

    mean: float  # decayed mean of item scores
    std: float  # decayed std of item scores (floored at MIN_ITEM_STD)
    rate: float  # decayed mean mentions per window, empty windows included
    rate_std: float
    windows: float  # effective number of windows behind the numbers
    items: float  # effective number of items behind the numbers
    negative_rate: float = 0.0  # decayed mean negative items per window
    positive_rate: float = 0.0

    def z_score(self, window: WindowAgg, between_window_std: float) -> float:
        """Standard-error z of a window mean against the baseline.

        The item spread shrinks with ``sqrt(count)``; ``between_window_std`` is
        the floor for ordinary window-to-window drift, so a large window is not
        "significant" over a trivial difference.

        >>> v = BaselineView(0.1, 0.4, 2.0, 1.0, 50, 100)
        >>> round(v.z_score(WindowAgg(0, 60, count=16, sum_score=-6.4), 0.05), 2)
        -4.47
        """
        if window.count == 0:
            return 0.0
        se = math.sqrt(self.std**2 / window.count + between_window_std**2)
        return (window.mean - self.mean) / se

    def volume_ratio(self, window: WindowAgg, rate_floor: float) -> float:
        """Mentions in the window over the normal number (floored for rarely named tickers)."""
        return window.count / max(self.rate, rate_floor)

    def negative_ratio(self, window: WindowAgg, rate_floor: float) -> float:
        """Negative items in the window over the normal number of negative items."""
        return window.negative / max(self.negative_rate, rate_floor)

    def positive_ratio(self, window: WindowAgg, rate_floor: float) -> float:
        return window.positive / max(self.positive_rate, rate_floor)


@dataclass
class Baseline:
    """Exponentially decayed sums over closed windows of one ticker and size.

    ``w`` item weight, ``s1``/``s2`` weighted score sums, ``n`` window weight,
    ``c1``/``c2`` weighted count sums; every closed window multiplies the old
    sums by ``decay = 0.5 ** (size / half_life)`` first.

    >>> b = Baseline(size=60)
    >>> for start in range(0, 600, 60):
    ...     b.close(WindowAgg(start, 60, count=2, sum_score=0.4, sum_sq=0.1), half_life=3600)
    >>> v = b.view(600, 3600)
    >>> round(v.mean, 2), round(v.rate, 2), round(v.windows, 1)
    (0.2, 2.0, 9.5)
    >>> round(b.view(1200, 3600).rate, 2)  # ten empty windows since then
    0.94
    """

    size: int
    w: float = 0.0
    s1: float = 0.0
    s2: float = 0.0
    n: float = 0.0
    c1: float = 0.0
    c2: float = 0.0
    g1: float = 0.0  # weighted negative counts
    p1: float = 0.0  # weighted positive counts
    last_end: int | None = None

    def _decay(self, half_life: float) -> float:
        return 0.5 ** (self.size / half_life)

    def _gap(self, start: int) -> int:
        """Empty windows between the last closed one and ``start``."""
        if self.last_end is None or start <= self.last_end:
            return 0
        return (start - self.last_end) // self.size

    def _aged(self, start: int, half_life: float) -> "Baseline":
        """The sums with the empty windows up to ``start`` folded in (closed form): a new object, or
        ``self`` when there are none (callers only read it; a copy per rule check was ~7 us)."""
        k = self._gap(start)
        if k == 0:
            return self
        d = self._decay(half_life)
        dk = d**k
        return Baseline(
            size=self.size, w=self.w * dk, s1=self.s1 * dk, s2=self.s2 * dk,
            n=self.n * dk + (1 - dk) / (1 - d), c1=self.c1 * dk, c2=self.c2 * dk, g1=self.g1 * dk, p1=self.p1 * dk,
            last_end=self.last_end + k * self.size if self.last_end is not None else None,
        )

    def view(self, at_start: int, half_life: float) -> BaselineView:
        """The baseline as seen by the window starting at ``at_start``."""
        b = self._aged(at_start, half_life)
        mean = b.s1 / b.w if b.w > 0 else 0.0
        var = b.s2 / b.w - mean * mean if b.w > 0 else 0.0
        rate = b.c1 / b.n if b.n > 0 else 0.0
        rate_var = b.c2 / b.n - rate * rate if b.n > 0 else 0.0
        return BaselineView(
            mean=mean, std=max(math.sqrt(max(var, 0.0)), MIN_ITEM_STD), rate=rate,
            rate_std=math.sqrt(max(rate_var, 0.0)), windows=b.n, items=b.w,
            negative_rate=b.g1 / b.n if b.n > 0 else 0.0, positive_rate=b.p1 / b.n if b.n > 0 else 0.0,
        )

    def close(self, window: WindowAgg, half_life: float) -> None:
        """Fold a closed window (and the empty ones before it) into the sums."""
        if self.last_end is not None and window.start < self.last_end:
            return  # already folded in (replay after a restart)
        aged = self._aged(window.start, half_life)
        d = self._decay(half_life)
        self.w = aged.w * d + window.count
        self.s1 = aged.s1 * d + window.sum_score
        self.s2 = aged.s2 * d + window.sum_sq
        self.n = aged.n * d + 1
        self.c1 = aged.c1 * d + window.count
        self.c2 = aged.c2 * d + window.count**2
        self.g1 = aged.g1 * d + window.negative
        self.p1 = aged.p1 * d + window.positive
        self.last_end = window.end

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Baseline":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
