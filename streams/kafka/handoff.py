"""Hand each fetched message to its stream without four tasks per message.

Faust's drain loop passes every fetched message on with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's
``wait_first`` wraps both in tasks, adds two more for the service's stopped and
crashed events, waits for the first, then cancels the other three. That is
~30 µs of event-loop work per message (the costliest single step of consuming
on a live worker, issue 15), although the callback nearly always finishes
without waiting: it decodes the message and puts it in the stream's buffer,
which has room.

:class:`InlineFirstStep` runs the callback's first step in the caller's task. If
that finishes it, the result is the one ``wait_first`` would report (the
callback won; nothing else was awaited). If the callback has to wait (a full
stream buffer, the producer's buffer above its limit), the rest of it is raced
against the other conditions exactly as before, and cancelled if they win.

Only a call without a timeout takes the fast path. What the first step does runs
in the caller's task: code that binds itself to the current task there
(``asyncio.timeout``) would bind to the drain loop. Faust's message callback does
not (it takes an uncontended lock, decodes, and puts into a queue).
"""

from __future__ import annotations

import asyncio
from typing import Any, Generator

from mode import Service
from mode.services import WaitResults

__all__ = ["InlineFirstStep"]


class _Rest:
    """The rest of a coroutine that already ran up to its first suspension, where it yielded ``waiting_on``.

    Awaiting it drives the coroutine on from there, as ``await coro`` would have: what the event loop
    sends or throws in goes to the coroutine, what the coroutine yields goes to the event loop.
    """

    def __init__(self, coro: Any, waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._waiting_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # CancelledError included: the coroutine decides what it means
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class InlineFirstStep(Service):
    """A mode Service whose ``wait_first(coroutine, ...)`` first runs the coroutine's first step inline."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        first = coros[0] if coros else None
        if timeout is not None or not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        others = coros[1:]
        try:
            waiting_on = first.send(None)
        except StopIteration as done:
            _close(others)
            return WaitResults([first], [done.value], False)
        except BaseException:
            _close(others)
            raise
        return await super().wait_first(_Rest(first, waiting_on), *others, timeout=timeout)


def _close(coros: tuple[Any, ...]) -> None:
    """Close coroutines that will never run (``suspend_flow.wait()``), so none warns it was never awaited."""
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()
