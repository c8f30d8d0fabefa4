"""Entry batching: the concurrent ``track_access`` calls of one shim process (new entries
and re-confirmations) go to PostgreSQL as one statement per batch,
``eventlive.track_access_batch`` (functions/), and each HTTP caller still gets exactly its
own answer: its JSON (its session id, its ``first_ping_in``), or its own error body.

**Webinars take turns.** Entries wait in one queue per webinar; a batch is filled by
taking one entry from each waiting webinar in turn (round robin, the turn carried over
from batch to batch) until it holds ``max_batch`` or the queues are empty. So a webinar
whose storm has 20,000 entries waiting delays another webinar's entry by at most one
batch, not by its backlog, and within one webinar entries keep their order (a viewer's
two tabs are sent in the order they came).

**When a batch goes.** As the coalescer (``shim.http.coalesce``): no timer, no added wait
at low load. While fewer than ``slots`` batches are in flight an entry takes a free slot
and, after one turn of the event loop (the entries read in the same turn join it), the
slot waits for a connection and *then* forms its batch from the queues, so the batch
holds whatever arrived while it waited; while every slot is busy entries queue, and each
slot forms its next batch as soon as it has sent one. While a batch is in flight a second
slot starts only for at least ``fill`` waiting entries (``EVENTLIVE_ENTRY_FILL``); fewer
wait for the batch in flight to end (an entry batch's fixed cost is large: PostgreSQL's
CPU per entry is 0.87 ms alone, 0.48 ms in batches of 4, 0.25-0.28 ms from 16 up, ``python
-m bench.entry_cost --batch N``). The batch size follows the load: 1 when idle, up to
``max_batch`` under a storm. A slot takes its connection from the share
of the pool that heartbeat batches leave to everything else (``exchange.Share``).

**Deadlines.** An entry waits in its queue at most ``EVENTLIVE_POOL_TIMEOUT``, as a single
call waits for a connection: then it gets the same 503 PGRST003 with ``Retry-After`` (a
timer per queued entry, cancelled when a batch takes it). A database that looks down
fails the whole queue at once (the slot's wait for a connection ends after
``health.quick`` seconds, as every request's does).

**Answers.** The SQL function answers every position with ``{"ok": <api.track_access's
JSON>}``, ``{"error": {code, message, details, hint}}`` (an error the project's functions
raise; ``shim.http.database`` builds the same ``ApiError`` the single path would) or
``{"alone": true}`` (an unexpected failure of that element: it is sent again alone on the
single path, ``api.track_access``, whose answer is then exactly the single path's). The
statement asks PostgreSQL for each element's ``ok`` value as text (``jsonb_each``), so the
caller gets PostgreSQL's own rendering of its JSON, byte for byte what the single path
sends. A batch that fails as a whole for a reason of the database other than a lost
connection is answered alone, element by element, as the coalescer does.

Authorization as the coalescer's: the batch runs as ``eventlive_batcher`` with the user
ids of verified tokens (``shim.http.pipeline`` lets only those through); the function is
outside every exposed schema. At most 50 entries per batch: the SQL runs each element in
a subtransaction of its own, and a transaction of more than 64 overflows PostgreSQL's
per-backend subtransaction cache (every later snapshot then reads pg_subtrans).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout

from shim.http import coalesce, exchange

log = logging.getLogger("eventlive.shim")

# Each element's answer as a line "<position> ok <the JSON api.track_access returns>" or
# "<position> <the element's answer object>"; jsonb's text never holds a raw newline.
_ENTRY_BATCH = (
    b"select pg_catalog.string_agg(e.key || ' ' || coalesce('ok ' || (e.value -> 'ok')::text,"
    b" e.value::text), E'\\n') from pg_catalog.jsonb_each(eventlive.track_access_batch("
    b"$1::bigint[], $2::uuid[], $3::uuid[], $4::jsonb[])) as e"
)

# What a caller gets: its JSON (text), its error body, or ``coalesce.RETRY_ALONE``.
Answer = str | dict[str, Any]


@dataclass(slots=True, eq=False)
class _Entry:
    """One queued call: its arguments, its caller's future, when it was queued (loop
    time) and the timer of its deadline (None once a batch took it)."""

    webinar_id: int
    user_id: str
    session_id: str | None
    client: str | None
    future: asyncio.Future[Answer]
    queued_at: float
    timer: asyncio.TimerHandle | None = None


def _expire(entry: _Entry) -> None:
    """The deadline of an entry still queued: the pool timeout's answer."""
    entry.timer = None
    if not entry.future.done():
        entry.future.set_exception(PoolTimeout("an entry waited its whole pool timeout"))


class EntryBatcher(coalesce.Slots):
    """Batches ``enter`` calls (see module doc) over ``link`` (the process's way to the
    database, ``shim.http.database.Database``), taking connections from ``share``."""

    def __init__(
        self,
        link: exchange.Link,
        share: exchange.Share | None,
        *,
        slots: int,
        max_batch: int,
        statement_timeout: str,
        fill: int = 1,
        observe: Callable[[list[int], list[float]], None] | None = None,
    ) -> None:
        super().__init__(slots, fill)
        self._link = link
        self._share = share
        self._max = max_batch
        self._settings = coalesce.batch_settings(statement_timeout)
        # (webinar ids, seconds each entry waited) of every batch sent: metrics, tests.
        self.observe = observe
        self._queues: dict[int, deque[_Entry]] = {}
        self._turns: deque[int] = deque()  # the webinars with a queue, in turn order
        self._queued = 0  # entries in the queues (some may have expired)
        self.batches = 0  # statements sent
        self.entries = 0  # entries they carried

    @property
    def queued(self) -> int:
        """Entries waiting in the queues (one past its deadline until a batch passes it)."""
        return self._queued

    async def enter(
        self, webinar_id: int, user_id: str, session_id: str | None, client: str | None
    ) -> Answer:
        """The caller's JSON (text) or error body, or ``coalesce.RETRY_ALONE``. Raises
        what the exchange raises when the batch as a whole failed, PoolTimeout when the
        entry waited past its deadline."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        entry = _Entry(webinar_id, user_id, session_id, client, loop.create_future(), now)
        entry.timer = loop.call_at(now + self._link.pool_timeout, _expire, entry)
        queue = self._queues.get(webinar_id)
        if queue is None:
            queue = self._queues[webinar_id] = deque()
            self._turns.append(webinar_id)
        queue.append(entry)
        self._queued += 1
        if self._may_start():
            await self._lead()
        return await entry.future

    def _waiting(self) -> bool:
        return self._queued > 0

    def _backlog(self) -> int:
        return self._queued

    async def _send_next(self) -> None:
        """A connection, then the batch formed from the queues at that moment, sent."""
        link, share = self._link, self._share
        try:
            conn = await exchange.acquire(link, share)
        except (PoolTimeout, PoolClosed) as exc:
            # Down (or closing): every queued entry now. Busy: the entries reached their
            # deadlines (timers), later ones wait for the next try.
            if isinstance(exc, PoolClosed) or link.health.down():
                self._fail_queued(exc)
            else:
                self._drop_expired()
            return
        try:
            batch = self._take()
            if batch:
                await self._send(conn, batch)
        finally:
            await exchange.release(link, conn, share)

    def _take(self) -> list[_Entry]:
        """Up to ``max_batch`` live entries, one per webinar in turn (module doc)."""
        batch: list[_Entry] = []
        turns, queues = self._turns, self._queues
        while turns and len(batch) < self._max:
            webinar_id = turns.popleft()
            queue = queues[webinar_id]
            while queue:
                entry = queue.popleft()
                self._queued -= 1
                if not entry.future.done():  # not expired, its caller still waiting
                    if entry.timer is not None:
                        entry.timer.cancel()
                        entry.timer = None
                    batch.append(entry)
                    break
            if queue:
                turns.append(webinar_id)
            else:
                del queues[webinar_id]
        return batch

    def _drop_expired(self) -> None:
        """Forget the entries already answered (deadline passed, caller gone)."""
        for webinar_id in list(self._turns):
            queue = self._queues[webinar_id]
            live = deque(e for e in queue if not e.future.done())
            self._queued -= len(queue) - len(live)
            if live:
                self._queues[webinar_id] = live
            else:
                del self._queues[webinar_id]
                self._turns.remove(webinar_id)

    def _fail_queued(self, exc: BaseException) -> None:
        for queue in self._queues.values():
            for entry in queue:
                if entry.timer is not None:
                    entry.timer.cancel()
                if not entry.future.done():
                    entry.future.set_exception(exc)
        self._queues.clear()
        self._turns.clear()
        self._queued = 0

    async def _send(self, conn: Any, batch: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        values = [
            exchange.encode([e.webinar_id for e in batch]),
            exchange.encode([e.user_id for e in batch]),
            exchange.encode([e.session_id for e in batch]),
            exchange.encode([e.client for e in batch]),
        ]
        try:
            raw = await exchange.run_on(
                self._link, conn, self._settings, _ENTRY_BATCH, values,
                read_only=False, prepare_call=True,
            )  # fmt: skip
        except psycopg.Error as exc:
            if coalesce.fails_whole(exc, len(batch)):
                log.warning(
                    "entry batch of %d failed (%s); answering each alone", len(batch), exc.sqlstate
                )
                _answer(batch, lambda _: coalesce.RETRY_ALONE)
            else:
                _fail(batch, exc)
            return
        except BaseException as exc:  # no answer in time, or the sending caller went away
            cancelled = isinstance(exc, asyncio.CancelledError)
            # Cancelled mid-exchange: the others' outcome is unknown, as after a timeout.
            _fail(batch, exchange.DbTimeoutError() if cancelled else exc)
            if cancelled:
                raise
            return
        self.batches += 1
        self.entries += len(batch)
        answers = _answers(raw)
        _answer(batch, lambda i: answers.get(i, coalesce.RETRY_ALONE))
        if self.observe is not None:
            self.observe([e.webinar_id for e in batch], [sent - e.queued_at for e in batch])


def _answers(raw: bytes | None) -> dict[int, Answer]:
    """Position -> the JSON text of an ``ok`` element, or the error body of an ``error``
    one; positions that are ``alone`` (or absent, or unreadable) are left out."""
    out: dict[int, Answer] = {}
    if not raw:
        return out
    for line in raw.decode().split("\n"):
        position, _, rest = line.partition(" ")
        if rest.startswith("ok "):
            out[int(position)] = rest[3:]
            continue
        error = json.loads(rest).get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            out[int(position)] = error
    return out


def _answer(batch: list[_Entry], answer: Callable[[int], Answer]) -> None:
    for i, entry in enumerate(batch, 1):
        if not entry.future.done():
            entry.future.set_result(answer(i))


def _fail(batch: list[_Entry], exc: BaseException) -> None:
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(exc)
