"""Coalescing: the concurrent heartbeats of one shim process go to PostgreSQL as one
statement, ``eventlive.presence_ping_batch`` (functions/32_coalesced.sql), and each HTTP
caller still gets exactly its own answer (its 204, or its own 403/409 body).

No timer, no added wait at low load: when fewer than ``slots`` batches are in flight, a
ping takes a free slot and goes out after one turn of the event loop (``sleep(0)``: the
pings whose requests were read in the same turn join it); while all slots are busy new
pings queue, and the next free slot takes all of them (up to ``max_batch``) in one
statement. So the batch size follows the load by itself: 1 when idle, tens when the
database is the bottleneck. Measured (closed loop, 64 connections, one worker, two shims
side by side on one database): the turn raised pings/s from 10,500 to 14,300 and cut
Postgres CPU per ping from 0.031 to 0.022 ms; without it the first pings of a turn each
took a slot alone (four statements where one would do).

Authorization: the batch runs as ``eventlive_batcher`` (NOLOGIN, granted to
``authenticator`` only, refused in any token by ``shim.http.auth``); the function lives in
``eventlive``, outside every exposed schema, so no HTTP route reaches it. It receives
only identities the shim verified: the ``sub`` of a verified, cached token whose role is
``authenticated`` and whose ``sub`` is a canonical UUID. Anything else takes the single
path (``api.presence_ping``), which answers the exact same way (one SQL function,
``eventlive.ping_core``, holds the logic of both).

If a batch fails as a whole for a reason of the database other than a lost connection
(statement timeout, deadlock, an unforeseen error), each of its pings is retried alone
on the single path, so one bad element cannot decide another caller's answer.

Measured: server CPU per ping (``bench/hot_path_cpu.py``, the backend's own CPU time)
273 us alone (prepared), 83 us in batches of 10, 57 us in batches of 50; through the shim
under closed-loop load (``python -m bench``, 64 connections) Postgres spent 0.12-0.14 ms
per ping against 0.44-0.50 ms when pgbench sends the same pings one per transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import psycopg

from shim.http import exchange

log = logging.getLogger("eventlive.shim")

BATCH_ROLE = "eventlive_batcher"
_PING_BATCH = b"select eventlive.presence_ping_batch($1::bigint[], $2::uuid[], $3::uuid[])"
_CLAIMS = json.dumps({"role": BATCH_ROLE}).encode()

# One queued ping: (webinar id, user id, session id, the caller's future).
_Item = tuple[int, str, str, "asyncio.Future[dict[str, Any] | None]"]


class Slots:
    """Batches in flight at once, at most ``slots``, and how a batch forms (module doc):
    a call that finds a slot free takes it, lets one turn of the event loop pass (the
    calls read in the same turn join it) and sends the first batch in its own task; while
    calls wait, the slot goes on, batch after batch, in a task of its own. A subclass
    says what waits (``_waiting``, ``_backlog``) and sends one batch of it (``_send_next``).

    ``fill``: while a batch is in flight, another one starts only for at least ``fill``
    waiting calls; fewer wait for a batch in flight to end, which then takes them. So a
    lone call still goes at once, and under load the batches grow instead of several
    small ones going out side by side: a batch's fixed cost (a transaction, its commit,
    the exchange) is paid for more calls. 1: any waiting call takes a free slot."""

    def __init__(self, slots: int, fill: int = 1) -> None:
        self._slots = slots
        self._fill = fill
        self._busy = 0
        self._forming = False  # a slot is taken and its batch is still gathering

    def _waiting(self) -> bool:
        raise NotImplementedError

    def _backlog(self) -> int:
        raise NotImplementedError

    async def _send_next(self) -> None:
        raise NotImplementedError

    def _may_start(self) -> bool:
        """A new batch may start now: no slot is gathering, and none is in flight or one
        is free and enough calls wait to fill it (``fill``)."""
        if self._forming:
            return False
        return self._busy == 0 or (self._busy < self._slots and self._backlog() >= self._fill)

    def _goes_on(self) -> bool:
        """A slot whose batch ended takes the next one: calls wait, and it is the only slot
        in flight or enough wait to fill a batch beside the others."""
        return self._waiting() and (self._busy == 1 or self._backlog() >= self._fill)

    async def _lead(self) -> None:
        """Take the free slot, gather for one turn, send the first batch, then hand over
        (no task switch at low load; the caller's answer never waits for later batches)."""
        self._busy += 1
        self._forming = True
        try:
            await asyncio.sleep(0)
        except BaseException:
            self._forming = False
            self._handover()
            raise
        self._forming = False
        try:
            await self._send_next()
        finally:
            self._handover()

    def _handover(self) -> None:
        """Free the slot, or hand what waits to a task of its own (what waits is left to
        a batch still in flight when it cannot fill one: ``fill``)."""
        if self._goes_on():
            asyncio.get_running_loop().create_task(self._continue())
        else:
            self._busy -= 1

    async def _continue(self) -> None:
        try:
            while True:
                await self._send_next()
                if not self._goes_on():
                    break
        finally:
            self._busy -= 1


class Coalescer(Slots):
    """Batches ``ping`` calls (see module doc) over ``link``, the process's way to the
    database (pool, timeouts, prepare, health: ``shim.http.database.Database``)."""

    def __init__(
        self, link: exchange.Link, *, slots: int, max_batch: int, statement_timeout: str
    ) -> None:
        super().__init__(slots)
        self._link = link
        self._max = max_batch
        self._settings = batch_settings(statement_timeout)
        self._pending: list[_Item] = []
        self.batches = 0  # statements sent (tests and metrics read it)
        self.pings = 0  # pings they carried

    async def ping(self, webinar_id: int, user_id: str, session_id: str) -> dict[str, Any] | None:
        """None when accepted; else the PostgREST error body (a dict) of this ping.
        Raises what the exchange raises when the batch as a whole failed."""
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._pending.append((webinar_id, user_id, session_id, fut))
        if self._may_start():
            # The pings whose requests were read in the same turn join this batch
            # instead of taking the other slots alone.
            await self._lead()
        return await fut

    def _waiting(self) -> bool:
        return bool(self._pending)

    def _backlog(self) -> int:
        return len(self._pending)

    async def _send_next(self) -> None:
        batch = self._pending[: self._max]
        del self._pending[: self._max]
        await self._send(batch)

    async def _send(self, batch: list[_Item]) -> None:
        try:
            raw = await exchange.run(
                self._link,
                self._settings,
                _PING_BATCH,
                [
                    ("{" + ",".join(str(w) for w, _, _, _ in batch) + "}").encode(),
                    ("{" + ",".join(u for _, u, _, _ in batch) + "}").encode(),
                    ("{" + ",".join(s for _, _, s, _ in batch) + "}").encode(),
                ],
                read_only=False,
                prepare_call=True,
            )
        except psycopg.Error as exc:
            if fails_whole(exc, len(batch)):
                # The batch as a whole failed; each ping gets its own answer alone.
                log.warning(
                    "ping batch of %d failed (%s); answering each alone", len(batch), exc.sqlstate
                )
                for _, _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(RETRY_ALONE)
                return
            _fail(batch, exc)
            return
        except BaseException as exc:  # pool timeout, db timeout, cancellation
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.batches += 1
        self.pings += len(batch)
        errors: dict[str, Any] = {} if raw is None or raw == b"{}" else json.loads(raw)
        for i, (_, _, _, fut) in enumerate(batch, 1):
            if not fut.done():
                fut.set_result(errors.get(str(i)))


# Marker answer: "send me alone on the single path" (a batch failed as a whole).
RETRY_ALONE: dict[str, Any] = {"retry_alone": True}


def retry_alone(answer: object) -> bool:
    """True when the batch could not answer this call and it must go alone."""
    return answer is RETRY_ALONE


def batch_settings(statement_timeout: str) -> list[bytes | None]:
    """The settings statement's values for a batch: role, claims, statement_timeout."""
    return [BATCH_ROLE.encode(), _CLAIMS, statement_timeout.encode()]


def fails_whole(exc: psycopg.Error, size: int) -> bool:
    """True when a batch of ``size`` that failed with ``exc`` is to be answered element by
    element alone: a database error of the batch as a whole (statement timeout, deadlock,
    an unforeseen error), not a lost connection or a shortage (08, 53, 57P: those are
    every element's answer), and more than one element (one alone would fail alike)."""
    state = exc.sqlstate or ""
    return size > 1 and bool(state) and not state.startswith(("08", "53", "57P"))


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for _, _, _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
