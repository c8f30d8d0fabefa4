"""One round trip out: the pipelined exchange with PostgreSQL.

``call`` sends the whole transaction in one pipeline: statement 1 switches role, claims,
statement_timeout (and read-only for GET); statement 2 calls the function. Everything
before the pipeline's single Sync is one implicit transaction (PostgreSQL protocol,
"Pipelining"), so the settings are transaction-local, an error rolls everything back, and
the exchange costs one network round trip whether it succeeds or fails. Each statement is
parsed after the previous one ran, so the call is privilege-checked as the switched role:
one statement that switched role and called the function would be checked as the login
role, which may not use the API schema.

The exchange talks to libpq directly (psycopg's ``pgconn``) rather than through cursors:
it is the hot path, and psycopg's pipeline machinery costs about twice the client CPU
(measured: ~90 vs ~220 us per call). Values travel as text parameters (``encode``).
The settings statement is prepared once per connection (it is parsed as the login role,
which may run it). The call is sent unnamed (parsed after the role switch), except on the
hot path (``prepare_call``): there it is prepared per connection *and per role*, in the
same pipeline right after the settings statement, so its Parse runs as the switched role
(privileges on schemas are checked at parse time, as the role of that moment) and later
executions skip parse and plan. A statement prepared as one role is never executed as
another: the name is keyed by (role, text), so a call as ``anon`` cannot reuse what
``authenticated`` parsed. Measured (``bench/hot_path_cpu.py``, the backend's own CPU
time, 3,000 calls): presence_ping 317 -> 273 us per call (-14 %), a track_access
re-confirmation 870 -> 810 us (-7 %).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result as errors_from_result
from psycopg_pool import AsyncConnectionPool, PoolTimeout

_SETTINGS = (
    b"select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), "
    b"set_config('statement_timeout', $3, true)"
)
_SET_RO = _SETTINGS + b", set_config('transaction_read_only', 'on', true)"
_PREPARED = {
    False: (b"eventlive_settings_rw", _SETTINGS),
    True: (b"eventlive_settings_ro", _SET_RO),
}
# Connections on which the settings statements are prepared (server-side, per session).
_prepared_on: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
# Call statements prepared per connection: (role, text) -> statement name.
_calls_on: weakref.WeakKeyDictionary[Any, dict[tuple[str, bytes], bytes]] = (
    weakref.WeakKeyDictionary()
)
_MAX_CALLS_PER_CONNECTION = 64


class _VanishedError(Exception):
    """The prepared settings statement was gone; nothing ran, so trying again is safe."""


class DbTimeoutError(Exception):
    """The database did not answer within ``EVENTLIVE_DB_TIMEOUT``."""


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    text = encode(value)
    assert text is not None
    return '"' + text.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode(value: Any) -> bytes | None:
    """A checked value as Postgres text input (None is SQL null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return ("{" + ",".join(_array_item(v) for v in value) + "}").encode()
    return str(value).encode()


async def _wait(fd: int, write: bool = False) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _results(pg: Any) -> list[Any]:
    """Every result of the pipeline up to its Sync, waiting on the socket, not blocking."""
    while pg.flush():
        await _wait(pg.socket, write=True)
    results: list[Any] = []
    while True:
        pg.consume_input()
        while not pg.is_busy():
            res = pg.get_result()
            if res is None:
                continue
            if res.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            results.append(res)
        await _wait(pg.socket)


async def _pipeline(pg: Any, send: Callable[[], None]) -> list[Any]:
    """Enter pipeline mode, ``send()`` the statements, Sync, and collect the results;
    the connection always leaves pipeline mode, even when the wait is cancelled."""
    pg.enter_pipeline_mode()
    try:
        send()
        pg.pipeline_sync()
        return await _results(pg)
    finally:
        if pg.pipeline_status != pq.PipelineStatus.OFF:
            with contextlib.suppress(psycopg.Error):
                pg.exit_pipeline_mode()


async def _exchange(
    conn: Any,
    settings: list[bytes | None],
    call: tuple[bytes, list[bytes | None]],
    *,
    read_only: bool,
    prepare: bool,
    prepare_call: bool = False,
) -> bytes | None:
    """Pipeline: [prepare settings], settings, [prepare call], call, Sync: one flush, one
    read loop."""
    pg = conn.pgconn
    name, text = _PREPARED[read_only]
    done = _prepared_on.setdefault(conn, set())
    preparing = prepare and name not in done
    statement, values = call
    call_name: bytes | None = None
    new_call = False
    if prepare and prepare_call:
        calls = _calls_on.setdefault(conn, {})
        key = (settings[0].decode() if settings[0] else "", statement)
        call_name = calls.get(key)
        if call_name is None and len(calls) < _MAX_CALLS_PER_CONNECTION:
            call_name = b"eventlive_call_%d" % len(calls)
            new_call = True

    def send() -> None:
        if not prepare:  # e.g. behind a transaction-mode pooler: no named statements
            pg.send_query_params(text, settings)
        else:
            if preparing:
                pg.send_prepare(name, text)
            pg.send_query_prepared(name, settings)
        if call_name is None:
            pg.send_query_params(statement, values)
            return
        if new_call:  # parsed here, after the role switch above has run
            pg.send_prepare(call_name, statement)
        pg.send_query_prepared(call_name, values)

    results = await _pipeline(pg, send)
    if preparing and results[0].status == pq.ExecStatus.COMMAND_OK:
        done.add(name)
    if new_call:
        prep = results[int(preparing) + 1] if len(results) > int(preparing) + 1 else None
        if prep is not None and prep.status == pq.ExecStatus.COMMAND_OK:
            assert call_name is not None
            _calls_on[conn][key] = call_name
    for index, res in enumerate(results):
        if res.status == pq.ExecStatus.FATAL_ERROR:
            exc = errors_from_result(res, conn.info.encoding)
            if exc.diag.sqlstate == "26000":
                # A statement of ours vanished (DISCARD ALL, a pooler): nothing ran.
                if index == int(preparing):
                    done.discard(name)
                _calls_on.pop(conn, None)
                raise _VanishedError from exc
            raise exc
    last = results[-1]
    return last.get_value(0, 0) if last.ntuples else None


async def ping(conn: Any) -> None:
    """``select 1`` talking to libpq the way ``call`` does, so that ``asyncio.timeout`` can
    abandon it: psycopg's ``execute``, when cancelled, sends a cancel request and then waits
    for the server's answer, which a frozen (SIGSTOPped) server never gives."""
    pg = conn.pgconn
    results = await _pipeline(pg, lambda: pg.send_query_params(b"select 1", None))
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            raise errors_from_result(res, conn.info.encoding)


class Health:
    """What the last exchanges said about the database: a busy database keeps answering
    (requests then wait their turn up to the pool timeout), a down one fails (requests
    waiting for a connection then get their 503 after ``quick`` seconds, not the whole
    wait). Two timestamps, no timers."""

    def __init__(self, quick: float) -> None:
        self.quick = quick
        self.last_ok = 0.0
        self.last_failure = 0.0

    def down(self) -> bool:
        """True when the latest news from the database is a failure."""
        return self.last_failure > self.last_ok

    def failed(self) -> None:
        self.last_failure = time.monotonic()


class Link(Protocol):
    """How this process reaches the database, held once (``shim.http.database.Database``):
    the pool and the knobs every exchange obeys."""

    pool_timeout: float
    db_timeout: float
    prepare: bool
    health: Health

    @property
    def connections(self) -> AsyncConnectionPool[Any]: ...


class Share:
    """A share of the pool: at most ``size`` connections held at once by the calls that
    take it, which wait their turn in a queue of their own (first come, first served)
    rather than in the pool's. The calls that do not take it (the coalesced heartbeats)
    keep ``pool_max - size`` connections that no burst of the others can hold.

    ``take`` is a comparison when a place is free; a wait is bounded as the pool's is
    (``acquire``). A place is handed from the call that leaves to the first one waiting,
    so a late arrival never overtakes the queue."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(not f.done() for f in self._waiting)

    def take(self) -> bool:
        """A place now, if one is free and nobody waits for it."""
        if self.held < self.size and not self._waiting:
            self.held += 1
            return True
        return False

    async def wait(self, health: Health, deadline: float) -> None:
        """A place by ``deadline`` (``time.monotonic``), waited for in slices of
        ``health.quick`` seconds as ``acquire`` waits for the pool: PoolTimeout at the
        deadline, or after a slice when the database looks down."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            while True:
                left = deadline - time.monotonic()
                done, _ = await asyncio.wait((fut,), timeout=max(0.001, min(health.quick, left)))
                if done:
                    return
                if left <= health.quick or health.down():
                    raise PoolTimeout("no connection of the share in time")
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.leave()  # handed a place while giving up: pass it on
            else:
                fut.cancel()
            raise

    def leave(self) -> None:
        """Give the place back: to the first caller still waiting, else free."""
        waiting = self._waiting
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.held -= 1


async def acquire(link: Link, share: Share | None = None) -> Any:
    """A connection within ``pool_timeout`` (with ``share``: a place in it first, within
    the same time), waited for in slices of ``health.quick`` seconds: after each slice a
    database that looks down (or a pool with no connection at all) ends the wait with
    PoolTimeout, so a queue never outlives an outage's detection by more than one slice."""
    if share is None:
        return await _getconn(link, link.pool_timeout)
    started = time.monotonic()
    if not share.take():
        await share.wait(link.health, started + link.pool_timeout)
    try:
        return await _getconn(link, link.pool_timeout - (time.monotonic() - started))
    except BaseException:
        share.leave()
        raise


async def _getconn(link: Link, timeout: float) -> Any:
    pool, health = link.connections, link.health
    if timeout <= health.quick:
        return await pool.getconn(timeout=max(0.001, timeout))
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return await pool.getconn(timeout=max(0.001, min(health.quick, left)))
        except PoolTimeout:
            if left <= health.quick:
                raise
            if health.down() or pool.get_stats().get("pool_size", 1) == 0:
                health.failed()
                raise


async def release(link: Link, conn: Any, share: Share | None = None) -> None:
    """Back to the pool, and the place in ``share`` to the next caller."""
    if share is not None:
        share.leave()
    await link.connections.putconn(conn)


async def run(
    link: Link,
    settings: list[bytes | None],
    statement: bytes,
    values: list[bytes | None],
    *,
    read_only: bool,
    prepare_call: bool = False,
    share: Share | None = None,
) -> bytes | None:
    """The exchange as the settings given (role, claims, statement_timeout) on a
    connection of the pool (of ``share``, when given): the raw first column of the call's
    row. Raises ``psycopg_pool.PoolTimeout`` (no connection in time), ``psycopg.Error``
    (the database's error, transaction already rolled back) or ``DbTimeoutError``."""
    conn = await acquire(link, share)
    try:
        return await run_on(
            link, conn, settings, statement, values, read_only=read_only, prepare_call=prepare_call
        )
    finally:
        if share is not None:
            share.leave()
        await link.connections.putconn(conn)


async def run_on(
    link: Link,
    conn: Any,
    settings: list[bytes | None],
    statement: bytes,
    values: list[bytes | None],
    *,
    read_only: bool,
    prepare_call: bool = False,
) -> bytes | None:
    """``run`` on a connection the caller acquired (and gives back)."""
    health = link.health
    prepare = link.prepare
    try:
        async with asyncio.timeout(link.db_timeout):
            try:
                value = await _exchange(
                    conn, settings, (statement, values),
                    read_only=read_only, prepare=prepare, prepare_call=prepare_call,
                )  # fmt: skip
            except _VanishedError:
                # Nothing ran (the pipeline aborted at a vanished statement); again.
                value = await _exchange(
                    conn, settings, (statement, values),
                    read_only=read_only, prepare=prepare, prepare_call=prepare_call,
                )  # fmt: skip
    except TimeoutError:
        # The connection is mid-exchange; close it (the pool then drops it).
        await conn.close()
        health.failed()
        raise DbTimeoutError from None
    except psycopg.Error as exc:
        if exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")):
            health.failed()
        raise
    health.last_ok = time.monotonic()
    return value
