"""Entries take turns of the event loop (shim.http.turns): a bounded number start per
turn, webinars in turn, and nothing waits on an idle loop."""

from __future__ import annotations

import asyncio

import pytest

from shim.http.turns import Turns

pytestmark = pytest.mark.anyio


async def _next_turn() -> None:
    # Two loop iterations: the turn callback runs, then the tasks it woke.
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_lone_entry_starts_at_once() -> None:
    turns = Turns(4)
    assert turns.wait(1) is None
    await _next_turn()
    assert turns.wait(1) is None  # a later, idle turn: at once again
    assert turns.waiting == 0


async def test_at_most_per_turn_entries_start_in_one_turn() -> None:
    turns = Turns(4)
    started = [turns.wait(1) is None for _ in range(10)]
    assert started == [True] * 4 + [False] * 6
    assert turns.waiting == 6


async def test_queued_entries_start_in_later_turns_per_turn_at_a_time() -> None:
    turns = Turns(4)
    waits = [turns.wait(1) for _ in range(12)]
    queued = [w for w in waits if w is not None]
    assert len(queued) == 8
    done_after = []
    for _ in range(3):
        await asyncio.sleep(0)
        done_after.append(sum(f.done() for f in queued))
    assert done_after == [4, 8, 8]
    assert turns.waiting == 0


async def test_a_webinar_behind_a_backlog_waits_one_turn() -> None:
    turns = Turns(2)
    storm = [turns.wait("S") for _ in range(200)]
    calm = turns.wait("Q")
    assert calm is not None
    await asyncio.sleep(0)  # the first turn after: one of S, then Q
    assert calm.done()
    assert sum(f is not None and f.done() for f in storm) == 1
    assert turns.waiting == 197  # 200 + 1 asked, 2 at once, 2 in the turn after


async def test_a_gone_caller_does_not_spend_a_turn() -> None:
    turns = Turns(1)
    assert turns.wait(1) is None
    gone = turns.wait(1)
    kept = turns.wait(1)
    assert gone is not None
    assert kept is not None
    gone.cancel()
    await asyncio.sleep(0)
    assert kept.done()
    assert not kept.cancelled()


async def test_the_turns_stop_ticking_when_nothing_waits() -> None:
    turns = Turns(2)
    for _ in range(3):
        turns.wait(1)
    for _ in range(4):
        await asyncio.sleep(0)
    assert turns.waiting == 0
    assert not turns._ticking  # no callback per turn on an idle loop
