"""Coarse deadlines without a timer per request.

A timer per request (one for its headers, ``shim.serve.header_timeout``, and one for its
body on the hot path) costs 3.3 us (``call_later``) to 4.4 us (``asyncio.timeout``) to
arm and cancel. A ``Deadlines`` keeps the pending ones in a dict and sweeps it with one
timer every ``tick`` seconds (armed only while something is pending), so a request costs
a dict entry added and removed (0.33 us), and a late one is handled between ``seconds`` and ``seconds + tick`` after it
was added. The tick is an eighth of the limit (``TICK_SHARE``): at most 12.5 % late,
which for limits of seconds is what a client can tell. ``for_limit`` and
``tasks_for_limit`` keep one per event loop and limit.

The database exchange (``shim.http.exchange``) keeps its exact ``asyncio.timeout``: tried
with a sweep, the frozen-database drill (``tests/bench/test_faults.py``) saw its 503s
after 2.0 s instead of within the 1.5 s timeout, on the path an outage takes.

Measured (uvloop, this 2-core box, 200,000 each): ``asyncio.timeout`` entered and left
4.4 us, ``call_later`` + ``cancel`` 3.3 us, a dict entry added and removed 0.33 us. On
the hot path that was about a tenth of the shim's CPU per ping (py-spy: ``Timeout``
frames 6 % of samples, plus the header timer inside uvicorn's protocol).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from typing import Any


class Deadlines:
    """Keys with a deadline; ``late(key)`` is called once for each key still pending
    after its deadline. All calls come from one event loop (``for_limit`` and
    ``tasks_for_limit`` keep one per loop)."""

    def __init__(self, tick: float, late: Callable[[Hashable], None]) -> None:
        self.tick = tick
        self._late = late
        self._due: dict[Hashable, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: Hashable, seconds: float) -> None:
        """``key`` is late ``seconds`` from now unless discarded first."""
        loop = asyncio.get_running_loop()
        self._due[key] = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sweep)

    def discard(self, key: Hashable) -> None:
        """``key`` is done in time (or was never added)."""
        self._due.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [key for key, when in self._due.items() if when <= now]
        for key in late:
            del self._due[key]
        self._timer = loop.call_later(self.tick, self._sweep) if self._due else None
        for key in late:
            self._late(key)


# The sweep's period as a share of the limit it enforces.
TICK_SHARE = 1 / 8


class TaskDeadlines(Deadlines):
    """Deadlines on tasks: a late task is cancelled, and ``expired(task)`` tells its
    ``CancelledError`` handler that the cancellation was the deadline's (it then calls
    ``task.uncancel()`` and answers its timeout)."""

    def __init__(self, tick: float) -> None:
        super().__init__(tick, self._cancel)
        self._expired: set[Hashable] = set()

    def _cancel(self, task: Hashable) -> None:
        assert isinstance(task, asyncio.Task)
        self._expired.add(task)
        task.cancel()

    def expired(self, task: Hashable) -> bool:
        return task in self._expired

    def discard(self, key: Hashable) -> None:
        # Once per request on the hot path: no super() call, and the set only when a
        # task expired (3,300 -> 1,200 instructions; callgrind).
        self._due.pop(key, None)
        if self._expired:
            self._expired.discard(key)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Deadlines]] = (
    weakref.WeakKeyDictionary()
)
# The last loop asked for and its deadlines: one loop in production, so a request skips
# the weak dictionary (0.42 -> 0.25 us a lookup; a finished loop is kept until another asks).
_last: tuple[asyncio.AbstractEventLoop | None, dict[Any, Deadlines]] = (None, {})


def _of_running_loop() -> dict[Any, Deadlines]:
    loop = asyncio.get_running_loop()
    global _last  # noqa: PLW0603 - a one-entry memo of the lookup below
    if _last[0] is not loop:
        _last = (loop, _per_loop.setdefault(loop, {}))
    return _last[1]


def for_limit(limit: float, late: Callable[[Hashable], None]) -> Deadlines:
    """The running loop's ``Deadlines`` for ``limit`` and ``late`` (made on first use)."""
    per_loop = _of_running_loop()
    key = (limit, late)
    found = per_loop.get(key)
    if found is None:
        found = per_loop[key] = Deadlines(limit * TICK_SHARE, late)
    return found


def tasks_for_limit(limit: float) -> TaskDeadlines:
    """The running loop's ``TaskDeadlines`` for ``limit`` (made on first use)."""
    per_loop = _of_running_loop()
    found = per_loop.get(limit)
    if found is None:
        found = per_loop[limit] = TaskDeadlines(limit * TICK_SHARE)
    assert isinstance(found, TaskDeadlines)
    return found
