"""A worker whose table recovery stops making progress exits with a clear error.

Faust recovers a table by reading its changelog up to the end offset the broker
reports, and waits without limit for records that never come when that offset
is wrong: after a broker lost its data (tansu with memory storage restarted
while a worker kept writing) the changelog can report an end offset that no
record reaches. Rather than wait forever, the worker logs what it waited for and
exits with status 1, so a supervisor restarts it and an operator sees why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

__all__ = ["RecoveryStalled", "watch_recovery"]

log = logging.getLogger(__name__)


class RecoveryStalled(RuntimeError):
    """Table recovery read no changelog record for longer than the configured limit."""


def _progress(recovery: Any) -> tuple:
    return tuple(sorted((str(tp), off) for tp, off in recovery.active_offsets.items()))


def watch_recovery(app: faust.App, stall_timeout: float, poll: float = 1.0) -> None:
    """Crash ``app`` (a :class:`~streams.kafka.consumer.SafeCommitApp`) if its table recovery reads nothing
    for ``stall_timeout`` seconds (0 disables)."""
    if stall_timeout <= 0:
        return

    async def recovery_watchdog() -> None:
        recovery = app.tables.recovery
        last, since = None, time.monotonic()
        while not app.should_stop:
            await asyncio.sleep(poll)
            if not recovery.in_recovery or recovery.completed.is_set():
                last, since = None, time.monotonic()
                continue
            progress = _progress(recovery)
            if progress != last:
                last, since = progress, time.monotonic()
                continue
            if time.monotonic() - since < stall_timeout:
                continue
            waiting = {str(tp): {"read_up_to": recovery.active_offsets.get(tp),
                                 "end_offset_reported": recovery.active_highwaters.get(tp)}
                       for tp in recovery.active_highwaters}
            message = (f"table recovery read no changelog record for {stall_timeout:.0f} s: {waiting}. The "
                       "broker reports end offsets that no record reaches (did it lose its data?). Restore the "
                       "broker's data, or delete the changelog topic to start this state empty.")
            log.error("%s Exiting with status 1.", message)
            await app.crash(RecoveryStalled(message))
            return

    app.early_tasks.append(recovery_watchdog)  # type: ignore[attr-defined]  (SafeCommitApp)
