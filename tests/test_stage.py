"""OrderedStage: in order, one at a time, back-pressure, and no agent left sitting on a dead stage."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.stage import OrderedStage


def test_items_are_handled_one_at_a_time_in_submission_order_while_the_owner_goes_on():
    async def scenario():
        handled, running, overlap = [], 0, []

        async def handle(i: int) -> None:
            nonlocal running
            running += 1
            overlap.append(running)
            await asyncio.sleep(0.01 + 0.01 * (i % 3))  # uneven work must not reorder
            handled.append(i)
            running -= 1

        stage = OrderedStage(handle, depth=2)
        submitted_at = []
        for i in range(12):
            await stage.submit(i)
            submitted_at.append(len(handled))
        await asyncio.sleep(0.3)
        await stage.close()
        return handled, overlap, submitted_at

    handled, overlap, submitted_at = asyncio.run(scenario())
    assert handled == list(range(12))
    assert max(overlap) == 1
    # the owner got ahead of the stage (did not wait for each item), but never by more than depth + 1
    assert submitted_at[1] == 0
    assert all(i - done <= 3 for i, done in enumerate(submitted_at, start=1))


def test_a_failure_is_raised_by_submit():
    async def scenario():
        async def handle(i: int) -> None:
            await asyncio.sleep(0.01)
            if i == 1:
                raise ValueError("broken sink")

        stage = OrderedStage(handle)
        with pytest.raises(ValueError, match="broken sink"):
            for i in range(10):  # the owner is waiting in submit (back-pressure) when item 1 fails
                await stage.submit(i)
        assert i < 5

    asyncio.run(scenario())


def test_a_failure_while_the_owner_waits_for_input_cancels_the_owner():
    async def scenario():
        async def handle(i: int) -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("undeliverable")

        async def owner() -> str:
            stage = OrderedStage(handle)
            await stage.submit(0)
            try:
                await asyncio.sleep(5)  # idle: no more input
            finally:
                await stage.close()
            return "never"

        task = asyncio.ensure_future(owner())
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)

    asyncio.run(scenario())


def test_close_drops_what_was_not_handled():
    async def scenario():
        handled = []

        async def handle(i: int) -> None:
            await asyncio.sleep(0.05)
            handled.append(i)

        stage = OrderedStage(handle, depth=4)
        for i in range(4):
            await stage.submit(i)
        await stage.close()
        await asyncio.sleep(0.1)
        return handled

    assert asyncio.run(scenario()) == []
