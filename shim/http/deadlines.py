"""Coarse deadlines without a timer per request.

Every request used to arm and cancel timers of its own: one for its headers
(``shim.http.header_timeout``) and one for its body on the hot path. A ``Deadlines``
keeps the pending ones in a dict and sweeps it with one timer every ``tick`` seconds
(armed only while something is pending), so a request costs a dict entry added and
removed, and a late one is handled between ``seconds`` and ``seconds + tick`` after it
was added. The owners use a quarter of their limit as the tick: at most 25 % late, which
for limits of seconds is what a client can tell.

Measured (uvloop, this 2-core box, 200,000 each): ``asyncio.timeout`` entered and left
4.4 us, ``call_later`` + ``cancel`` 3.3 us, a dict entry added and removed 0.33 us. On
the hot path that was about a tenth of the shim's CPU per ping (py-spy: ``Timeout``
frames 6 % of samples, plus the header timer inside uvicorn's protocol).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable


class Deadlines:
    """Keys with a deadline; ``late(key)`` is called once for each key still pending
    after its deadline. All calls come from one event loop (the first that adds)."""

    def __init__(self, tick: float, late: Callable[[Hashable], None]) -> None:
        self.tick = tick
        self._late = late
        self._due: dict[Hashable, float] = {}
        # weak: a finished loop (tests start several) is not kept alive by its deadlines
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: Hashable, seconds: float) -> None:
        """``key`` is late ``seconds`` from now unless discarded first."""
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop() is not loop:  # a new loop: start afresh
            self._loop, self._timer = weakref.ref(loop), None
            self._due.clear()
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
        loop = self._loop() if self._loop is not None else None
        assert loop is not None  # the timer that called us holds the loop
        now = loop.time()
        late = [key for key, when in self._due.items() if when <= now]
        for key in late:
            del self._due[key]
        self._timer = loop.call_later(self.tick, self._sweep) if self._due else None
        for key in late:
            self._late(key)
