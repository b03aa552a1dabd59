"""Faults on purpose: kill workers at random moments of a live stream, then count what InfluxDB holds.

Used by the fault suite (``tests/test_faults.py``) and the chaos benchmark
(``bench/chaos.py``). A round publishes items at a fixed rate (so the faults hit
a live stream, not a backlog), SIGKILLs the worker at seeded random moments and
starts a new one each time, waits until every (item, ticker) point could have
arrived, and reports what was lost, what was duplicated, and how many scores
were re-delivered (proof that the kills interrupted work in flight).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from streams.tools.samples import sample_items
from streams.tools.services import Pipeline, WorkerProcess

__all__ = ["RoundResult", "tagged_items", "stored_points", "expected_points", "redelivered_scores", "kill_round"]


@dataclass(frozen=True)
class RoundResult:
    """What one kill round left in InfluxDB."""

    seed: int
    items: int
    expected_points: int
    stored_points: int
    lost: int  # (item, ticker) pairs with no point
    duplicated: int  # points beyond one per (item, ticker)
    redelivered_scores: int  # score records beyond one per item: work redone after a kill
    kill_times: tuple[float, ...]
    seconds: float
    lost_examples: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


def tagged_items(n: int, seed: int, prefix: str = "") -> list[dict]:
    """``n`` sample items, each naming at least one ticker (so every item is one or more points)."""
    items = list(sample_items(n, seed=seed))
    for item in items:
        if prefix:
            item["id"] = f"{prefix}{item['id']}"
        if not item["tickers"]:
            item["tickers"] = ["ZZZ"]
    return items


def expected_points(items: list[dict]) -> set[tuple[str, str]]:
    return {(item["id"], ticker) for item in items for ticker in item["tickers"]}


def stored_points(pipe: Pipeline) -> list[tuple[str, str]]:
    """Every stored sentiment point as (id, ticker), one entry per point."""
    rows = pipe.influx.query("SELECT id, score FROM sentiment GROUP BY ticker")
    return [(row["id"], row["ticker"]) for row in rows]


def redelivered_scores(pipe: Pipeline, expected_items: int, timeout: float = 30) -> int:
    """Score records beyond one per item id on the scores topic."""
    records = pipe.read_topic(pipe.topics.scores, expected_items, timeout=timeout)
    counts = Counter(r.key for r in records)
    return sum(c - 1 for c in counts.values())


def _count(pipe: Pipeline) -> int:
    rows = pipe.influx.query("SELECT count(score) FROM sentiment")
    return rows[0]["count"] if rows else 0


def _wait_for_progress(pipe: Pipeline, worker: WorkerProcess, than: int, timeout: float) -> int:
    """Wait until more than ``than`` points are stored (the worker is scoring); return the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = _count(pipe)
        if count > than:
            return count
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.output()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"no progress within {timeout:.0f} s:\n{worker.output()[-3000:]}")


def kill_round(pipe: Pipeline, items: list[dict], *, rate: float, kills: int, seed: int,
               worker_env: dict[str, str] | None = None, max_delay: float = 2.0, settle_timeout: float = 180,
               progress_timeout: float = 120) -> RoundResult:
    """Stream ``items`` at ``rate``/s and SIGKILL the worker ``kills`` times, starting a new one each time.

    Each kill lands at a seeded random moment of one of two kinds: while the worker is scoring (once it
    stored new points, after a random 0..``max_delay`` s: mid-batch, mid-write, mid-commit), or while
    it is still starting (a random 0.3..4 s after its start: joining the group, recovering its table,
    seeking), which leaves a dead member in the group and makes the next worker go through more than
    one rebalance."""
    rng = random.Random(seed)
    env = worker_env or {}
    started = time.monotonic()
    payloads = [json.dumps(item).encode() for item in items]
    worker: WorkerProcess = pipe.start_worker("chaos-0", **env)
    publisher = threading.Thread(target=pipe.publish, args=(payloads,), kwargs={"rate": rate}, daemon=True)
    publisher.start()
    moments = []
    for n in range(1, kills + 1):
        if n == 1 or rng.random() < 0.6:
            _wait_for_progress(pipe, worker, _count(pipe), progress_timeout)
            time.sleep(rng.uniform(0.0, max_delay))
        else:
            time.sleep(rng.uniform(0.3, 4.0))
        worker.kill()
        moments.append(time.monotonic() - started)
        worker = pipe.start_worker(f"chaos-{n}", **env)
    publisher.join()
    expected = expected_points(items)
    deadline = time.monotonic() + settle_timeout
    while time.monotonic() < deadline and len(set(stored_points(pipe)) & expected) < len(expected):
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.output()[-3000:]}")
        time.sleep(0.5)
    time.sleep(2.0)  # a late re-delivery would add its duplicate now
    stored = stored_points(pipe)
    lost = expected - set(stored)
    result = RoundResult(
        seed=seed, items=len(items), expected_points=len(expected), stored_points=len(stored), lost=len(lost),
        duplicated=len(stored) - len(set(stored)), redelivered_scores=redelivered_scores(pipe, len(items)),
        kill_times=tuple(round(m, 2) for m in moments), seconds=round(time.monotonic() - started, 1),
        lost_examples=tuple(sorted(f"{i}/{t}" for i, t in lost)[:10]),
    )
    worker.stop()
    return result
