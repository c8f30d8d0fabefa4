"""``shim.http.deadlines.Deadlines``: a key still pending after its deadline is reported
once, between the deadline and one tick later; a key discarded in time never is; the
sweep stops when nothing is pending."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from shim.http.deadlines import Deadlines

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
