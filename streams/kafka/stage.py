"""A background stage that finishes batches in order while the agent works on the next one.

An agent that scores a batch, then writes it, then acks it leaves the model
idle while the writes wait on InfluxDB and the broker, and the event loop idle
while the model runs. :class:`OrderedStage` lets the agent hand a scored batch
over and go on: the stage's one task stores, publishes and acks batches one at
a time, in the order they were handed over, with at most ``depth`` waiting.
The guarantees do not change: an event is still acked only after its outputs
were accepted, and a batch still in the stage when the agent stops is simply
never acked (the consumer re-delivers it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, TypeVar

__all__ = ["OrderedStage"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class OrderedStage(Generic[T]):
    """Runs ``handle(item)`` for submitted items one at a time, in submission order, in a task of its own.

    :meth:`submit` waits while ``depth`` items are already waiting (back-pressure) and raises
    the stage's error if it failed. A failure while the owner is idle (waiting for input)
    cancels the owner, so an agent never sits on a dead stage; Faust restarts a cancelled agent.
    """

    def __init__(self, handle: Callable[[T], Awaitable[None]], *, depth: int = 1, name: str = "stage") -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._handle = handle
        self._name = name
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=depth)
        self._task: asyncio.Task | None = None
        self._owner: asyncio.Task | None = None
        self._submitting = False

    async def submit(self, item: T) -> None:
        if self._task is None:
            self._owner = asyncio.current_task()
            self._task = asyncio.ensure_future(self._run())
            self._task.add_done_callback(self._on_done)
        put = asyncio.ensure_future(self._queue.put(item))
        self._submitting = True
        try:
            await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._submitting = False
            if not put.done():
                put.cancel()
        if self._task.done():
            self._raise()

    async def close(self) -> None:
        """Stop now: items not yet handled are dropped unacked (re-delivered by the consumer)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.remove_done_callback(self._on_done)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _raise(self) -> None:
        assert self._task is not None
        if self._task.cancelled():
            raise asyncio.CancelledError(f"{self._name} was cancelled")
        exc = self._task.exception()
        raise exc if exc is not None else RuntimeError(f"{self._name} stopped")

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._handle(item)
            finally:
                self._queue.task_done()

    def _on_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s failed: %r; stopping its agent (its unacked input will be re-delivered)",
                  self._name, task.exception())
        if self._owner is not None and not self._owner.done() and not self._submitting:
            self._owner.cancel()  # idle: nothing else would notice (submit raises the error itself)
