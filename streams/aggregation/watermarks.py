"""Event-time progress of each mentions partition, from the input partitions behind it.

A mentions partition carries mentions scored from several input partitions
(news and social topics). Its watermark is the minimum progress over the input
partitions that are still talking, so a lagging input topic holds windows open
instead of having its items dropped as late; a silent one stops holding it
after ``source_idle_s``. Items far in the future never move it.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

__all__ = ["Watermarks"]


class Watermarks:
    """Per mentions partition: the watermark and the progress of each input partition behind it."""

    def __init__(self, max_future_skew: float, source_idle_s: float) -> None:
        self.max_future_skew = max_future_skew
        self.source_idle_s = source_idle_s
        self._watermark: dict[int, float] = {}
        # mentions partition -> input "topic:partition" -> (its event-time progress, wall time last heard)
        self._sources: dict[int, dict[str, tuple[float, float]]] = {}

    def get(self, partition: int) -> float:
        return self._watermark.get(partition, -math.inf)

    def raise_to(self, partition: int, watermark: float) -> None:
        self._watermark[partition] = max(self.get(partition), watermark)

    def observe(self, partition: int, mention: Any, ts: float, now: datetime | None) -> None:
        """Advance with one mention (``ts`` = its event time, epoch s)."""
        source = getattr(mention, "source_partition", "")
        if not source:  # mentions that do not say where they came from: the latest event time
            if now is None or ts <= now.timestamp() + self.max_future_skew:
                self.raise_to(partition, ts)
            return
        wall = time.monotonic()
        sources = self._sources.setdefault(partition, {})
        progress = float(getattr(mention, "source_watermark", 0.0)) or ts
        if now is not None:
            progress = min(progress, now.timestamp() + self.max_future_skew)
        sources[source] = (max(sources.get(source, (progress, wall))[0], progress), wall)
        active = [p for p, seen in sources.values() if wall - seen <= self.source_idle_s]
        self.raise_to(partition, min(active))

    def forget(self, partition: int) -> None:
        self._watermark.pop(partition, None)
        self._sources.pop(partition, None)
