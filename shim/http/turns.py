"""Entries take turns of the event loop, so heartbeats never wait behind them.

A worker is one event loop: every request it has read runs to its next wait in the order
it was read. In a join storm the loop reads hundreds of ``track_access`` calls at once,
each with a token to verify (PyJWT), arguments to bind and a batch to join, and a
heartbeat read in the same turn waits for all of them, and again for its batch's answer
(the issue-19 shape on two cores: Q's heartbeats in-shim p50 100-190 ms while S's
entries arrived, and seconds more unread in their sockets).

So a first entry (``api.track_access`` without a session id) asks ``Turns`` for a turn
before its token is verified (``shim.http.pipeline``): at most ``per_turn`` start per loop
turn (``EVENTLIVE_ENTRY_TURN``), the others wait in one queue per webinar, served round
robin at the next turns. Everything else (heartbeats, re-confirmations of entered
viewers, reads) never asks. Each turn thus holds at most ``per_turn`` entries' work, plus
whatever heartbeats arrived, and the loop polls its sockets between turns. An idle worker
lets a lone entry start at once, and a turn that releases entries schedules the next, so
no timer caps the entries' rate; but they reach the batcher a few at a time, its batches
are smaller, and a lone webinar's storm at the machine's capacity paid for that (figures
in docs/design.md). A webinar's backlog delays another webinar's entry by one turn.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable


class Turns:
    """Per-turn admission of entries (module doc); one per worker, its loop's."""

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._left = per_turn  # entries that may still start in this turn
        self._queues: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._ticking = False
        self.waiting = 0  # entries queued for a later turn (metrics, tests)
        self._loop: asyncio.AbstractEventLoop | None = None

    def wait(self, key: Hashable) -> asyncio.Future[None] | None:
        """None when the entry of webinar ``key`` may start now, else the future of its
        turn. The first entry of a turn schedules the turn's end."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): nothing of the old one carries over
            self._loop, self._ticking, self._left, self._queues = loop, False, self.per_turn, {}
            self.waiting = 0
        if not self._ticking:
            self._ticking = True
            loop.call_soon(self._turn)
        if self._left > 0 and not self._queues:
            self._left -= 1
            return None
        future: asyncio.Future[None] = loop.create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(future)
        self.waiting += 1
        return future

    def _turn(self) -> None:
        """A new turn: release up to ``per_turn`` queued entries, one webinar after
        another (a dict keeps insertion order: a served webinar goes to the back)."""
        self._left = self.per_turn
        queues = self._queues
        while self._left > 0 and queues:
            key = next(iter(queues))
            queue = queues.pop(key)
            future = queue.popleft()
            self.waiting -= 1
            if queue:
                queues[key] = queue
            if not future.done():  # its caller may have gone (cancelled)
                future.set_result(None)
                self._left -= 1
        # Releasing spends this turn's budget: the next turn releases again. A turn with
        # nothing queued and nothing spent ends the ticking until the next entry.
        if queues or self._left < self.per_turn:
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._turn)
        else:
            self._ticking = False
