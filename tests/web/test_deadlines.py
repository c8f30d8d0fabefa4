"""``shim.web.deadlines.Deadlines``: a key still pending after its deadline is reported
once, between the deadline and one tick later; a key discarded in time never is; the
sweep stops when nothing is pending."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from shim.web.deadlines import TICK_SHARE, Deadlines, tasks_for_limit

pytestmark = pytest.mark.anyio


async def test_a_pending_key_is_late_once_within_a_tick_of_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    late: list[tuple[Hashable, float]] = []
    deadlines = Deadlines(0.05, lambda key: late.append((key, loop.time())))
    started = loop.time()
    deadlines.add("stalled", 0.2)
    deadlines.add("in time", 0.2)
    await asyncio.sleep(0.1)
    deadlines.discard("in time")
    await asyncio.sleep(0.3)
    assert [key for key, _ in late] == ["stalled"]
    assert 0.2 <= late[0][1] - started < 0.2 + 0.05 + 0.1
    assert len(deadlines) == 0
    assert deadlines._timer is None  # no sweep while nothing is pending


async def test_a_key_added_again_keeps_only_its_latest_deadline() -> None:
    late: list[Hashable] = []
    deadlines = Deadlines(0.02, late.append)
    deadlines.add("k", 0.05)
    deadlines.add("k", 0.3)
    await asyncio.sleep(0.15)
    assert late == []
    assert "k" in deadlines
    await asyncio.sleep(0.25)
    assert late == ["k"]


async def test_a_task_past_its_deadline_is_cancelled_and_told_it_was_the_deadline() -> None:
    """``tasks_for_limit``: one per loop and limit; a late task gets CancelledError and
    ``expired`` says the deadline did it; a task cancelled otherwise is not "expired"."""
    limit = 0.2
    deadlines = tasks_for_limit(limit)
    assert tasks_for_limit(limit) is deadlines
    assert deadlines.tick == limit * TICK_SHARE

    async def stall() -> str:
        task = asyncio.current_task()
        assert task is not None
        deadlines.add(task, limit)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise
            task.uncancel()
            return "timed out"
        finally:
            deadlines.discard(task)
        return "slept"

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await stall() == "timed out"
    assert limit <= loop.time() - started < limit * (1 + TICK_SHARE) + 0.1
    other = asyncio.ensure_future(stall())
    await asyncio.sleep(0.05)
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    assert len(deadlines) == 0
