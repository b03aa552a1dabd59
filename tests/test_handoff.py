"""``InlineFirstStep.wait_first`` reports what mode's ``wait_first`` reports, without tasks when it can."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from mode import Service

from streams.kafka.handoff import InlineFirstStep


class Inline(InlineFirstStep, Service):
    pass


def _run(body):
    async def main():
        service = Inline()
        await service.start()
        try:
            return await body(service)
        finally:
            await service.stop()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = asyncio.run(main())
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]  # every coroutine handed in was closed
    return result


def test_a_callback_that_does_not_wait_runs_in_the_callers_task_and_wins():
    async def body(service):
        seen = []

        async def callback(message):
            seen.append((message, asyncio.current_task()))
            return message * 2

        flow = asyncio.Event()
        results = [await service.wait_first(callback(n), flow.wait()) for n in range(3)]
        return seen, results, asyncio.current_task()

    seen, results, caller = _run(body)
    assert [m for m, _ in seen] == [0, 1, 2]
    assert all(task is caller for _, task in seen)  # no task of its own: the fast path was taken
    assert [(r.results, r.stopped) for r in results] == [([0], False), ([2], False), ([4], False)]


def test_a_callback_that_waits_is_driven_to_its_end_with_what_it_awaited():
    async def body(service):
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)  # full: the put below has to wait
        steps = []

        async def callback(message):
            steps.append("start")
            await queue.put(message)
            await asyncio.sleep(0)  # a bare yield too
            got = await asyncio.wait_for(asyncio.shield(asyncio.sleep(0.01, result="slept")), 1)
            steps.append(got)
            return message

        async def consume():
            await asyncio.sleep(0.02)
            return queue.get_nowait()

        taker = asyncio.ensure_future(consume())
        result = await service.wait_first(callback(7), asyncio.Event().wait())
        return steps, result, await taker, queue.get_nowait()

    steps, result, taken, left = _run(body)
    assert steps == ["start", "slept"]
    assert result.results == [7] and not result.stopped
    assert (taken, left) == (0, 7)


def test_a_waiting_callback_is_cancelled_when_the_flow_is_suspended_first():
    async def body(service):
        events = []
        suspended = asyncio.Event()
        never = asyncio.get_running_loop().create_future()

        async def callback(message):
            try:
                await never
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            events.append("finished")

        asyncio.get_running_loop().call_later(0.02, suspended.set)
        result = await service.wait_first(callback(1), suspended.wait())
        await asyncio.sleep(0)
        return events, result

    events, result = _run(body)
    assert events == ["cancelled"]
    assert result.results == [True] and not result.stopped  # Event.wait() returns True: the flow won


def test_a_callback_error_propagates_whether_it_waited_or_not():
    async def body(service):
        async def at_once(message):
            raise ValueError("bad at once")

        async def later(message):
            await asyncio.sleep(0.001)
            raise ValueError("bad later")

        errors = []
        for callback in (at_once, later):
            with pytest.raises(ValueError) as info:
                await service.wait_first(callback(1), asyncio.Event().wait())
            errors.append(str(info.value))
        return errors

    assert _run(body) == ["bad at once", "bad later"]


def test_a_stopped_service_answers_as_mode_does():
    async def body(service):
        ran = []

        async def callback(message):
            ran.append(message)

        await service.stop()
        result = await service.wait_first(callback(1), asyncio.Event().wait())
        await asyncio.sleep(0)
        return ran, result

    ran, result = _run(body)
    assert result.stopped and result.results == []
    assert ran == [1]  # mode starts the callback's task all the same


def test_a_call_with_a_timeout_takes_modes_path():
    async def body(service):
        tasks = []

        async def callback(message):
            tasks.append(asyncio.current_task())
            return message

        result = await service.wait_first(callback(3), asyncio.Event().wait(), timeout=5)
        return tasks, result, asyncio.current_task()

    tasks, result, caller = _run(body)
    assert tasks and tasks[0] is not caller  # a task of its own, as mode makes
    assert result.results == [3] and not result.stopped


def test_the_worker_consumer_hands_over_this_way():
    from streams.kafka.consumer import SafeCommitConsumer

    assert SafeCommitConsumer.wait_first is InlineFirstStep.wait_first
