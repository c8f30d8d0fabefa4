"""The database as the request path sees it, built once: ``Database`` holds the pool, the
health of the last exchanges, the timeouts, whether statements are prepared, the
coalescer of heartbeats and the batchers of first entries and of re-confirmations, so
that a call passes only what varies per call (``Query``). Every failure of the pool or the database becomes the
caller's PostgREST error here, in one place (``failure``), for single calls, coalesced
heartbeats and batched entries alike.

**Heartbeats first.** Everything but the coalesced heartbeat batches (single calls,
entry batches, GETs) holds at most ``EVENTLIVE_POOL_MAX - EVENTLIVE_COALESCE_SLOTS``
connections at once (at least one), waited for in a queue of its own
(``exchange.Share``): a storm of entries can never take every connection, so a
heartbeat batch finds one without queueing behind them. An idle system sends a lone
call at once (a free place is a comparison, no wait).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from shim.http import coalesce, entries, errors, exchange
from shim.http.auth import Identity
from shim.http.errors import ApiError
from shim.http.respond import RequestContext
from shim.http.settings import Settings

log = logging.getLogger("eventlive.shim")

# A database that failed lately gets its 503s after this many seconds in the pool queue;
# a busy one makes requests wait up to EVENTLIVE_POOL_TIMEOUT.
QUICK_503 = 0.5
# Seconds /ready waits for a pooled connection (requests may wait longer: a busy database).
READY_WAIT = 0.5
# Seconds the start-up probe for a transaction pooler may take before the shim serves.
POOLER_PROBE_SECONDS = 2.0
# Pings per coalesced statement at most: past ~100 the batch's own transaction time
# (row locks held until its commit) outweighs the per-statement saving.
MAX_BATCH = 100
# Entries per batched statement at most: the SQL gives each its own subtransaction, and a
# transaction of more than 64 overflows PostgreSQL's subtransaction cache.
MAX_ENTRIES = 50


@dataclass(slots=True)
class Query:
    """What varies per call: the bound statement, its values, the caller's
    statement_timeout, read-only (GET), and ``hot`` (prepared per connection and role)."""

    statement: bytes
    values: list[bytes | None]
    timeout: str
    read_only: bool
    hot: bool = False


class Database:
    """The process's way to the database (see module doc); ``open`` in the lifespan."""

    def __init__(
        self,
        settings: Settings,
        observe_db: Callable[[str, float], None],
        observe_entries: Callable[[list[int], list[float]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.observe_db = observe_db  # (function, seconds): the database time histogram
        self.pool_timeout = settings.pool_timeout
        self.db_timeout = settings.db_timeout
        # Off until the start-up probe says DATABASE_URL is not a transaction pooler
        # (``detect``): a named statement there lives on one server connection, the next
        # transaction may get another (26000 / 42P05).
        self.prepare = False
        self.pooled: bool | None = None  # True: a transaction pooler; None: not probed yet
        self.health = exchange.Health(quick=min(QUICK_503, settings.pool_timeout))
        self.pool: AsyncConnectionPool[Any] | None = None
        self.coalescer = (
            coalesce.Coalescer(
                self,
                slots=settings.coalesce_slots,
                max_batch=MAX_BATCH,
                statement_timeout=settings.statement_timeout,
            )
            if settings.coalesce
            else None
        )
        # The connections everything but the heartbeat batches may hold (module doc).
        self.share = (
            exchange.Share(max(1, settings.pool_max - settings.coalesce_slots))
            if self.coalescer is not None
            else None
        )
        # Two batchers of one kind: first entries (a session to open: five rows each), and
        # re-confirmations of entered viewers, which never wait behind a first entries'
        # batch (its PostgreSQL time grows with its size) nor for its slot.
        batched = settings.entry_batch
        self.entries: entries.EntryBatcher | None = (
            self._batcher(observe_entries) if batched else None
        )
        self.reconfirms: entries.EntryBatcher | None = (
            self._batcher(observe_entries) if batched else None
        )

    @property
    def connections(self) -> AsyncConnectionPool[Any]:
        """The pool (``open`` made it)."""
        if self.pool is None:
            raise RuntimeError("the database pool is not open")
        return self.pool

    async def open(self) -> None:
        """Open the pool without waiting for the database."""
        s = self.settings
        self.pool = AsyncConnectionPool(
            s.database_url or "",
            min_size=s.pool_min,
            max_size=s.pool_max,
            timeout=s.pool_timeout,
            open=False,
            name="eventlive",
            # No server-side statements psycopg would prepare by itself after five runs
            # (the status sampler's, the catalog's): they break behind a transaction
            # pooler, and off the hot path (which talks to libpq itself) they save nothing.
            kwargs={"autocommit": True, "prepare_threshold": None},
            # Short: an outage must not push the next attempt minutes away.
            reconnect_timeout=5.0,
        )
        await self.pool.open(wait=False)

    async def detect(self, timeout: float = POOLER_PROBE_SECONDS) -> bool | None:
        """Probe ``DATABASE_URL`` for a transaction-mode pooler (``transaction_pooled``) and
        prepare statements only when it is not one and ``EVENTLIVE_PREPARE`` allows it.
        None when the database could not be reached in ``timeout`` (statements stay
        unprepared; call again later)."""
        pooled = await transaction_pooled(self.settings.database_url or "", timeout)
        if pooled is None:
            return None
        self.pooled = pooled
        self.prepare = self.settings.prepare and not pooled
        if pooled:
            log.info(
                "DATABASE_URL goes through a transaction-mode pooler: statements are not "
                "prepared (as with EVENTLIVE_PREPARE=0)"
            )
        return pooled

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def call(self, ctx: RequestContext, identity: Identity, query: Query) -> str | None:
        """One round trip as ``identity``: the first column of the function's row."""
        settings: list[bytes | None] = [
            identity.role.encode(),
            identity.claims.encode(),
            query.timeout.encode(),
        ]
        t0 = time.perf_counter()
        try:
            value = await exchange.run(
                self,
                settings,
                query.statement,
                query.values,
                read_only=query.read_only,
                prepare_call=query.hot,
                share=self.share,
            )
        except (psycopg.Error, PoolTimeout, PoolClosed, exchange.DbTimeoutError) as exc:
            raise self.failure(ctx, identity, exc) from None
        finally:
            ctx.db_ms = (time.perf_counter() - t0) * 1000
            self.observe_db(ctx.function, ctx.db_ms / 1000)
        return None if value is None else value.decode()

    def _batcher(
        self, observe: Callable[[list[int], list[float]], None] | None
    ) -> entries.EntryBatcher:
        settings = self.settings
        return entries.EntryBatcher(
            self,
            self.share,
            slots=settings.entry_slots,
            fill=settings.entry_fill,
            max_batch=MAX_ENTRIES,
            statement_timeout=settings.statement_timeout,
            observe=observe,
        )

    async def ping(
        self, ctx: RequestContext, identity: Identity, beat: tuple[int, str], alone: Query
    ) -> None:
        """A heartbeat (webinar id, session id) through the coalescer: returns for 204,
        raises this caller's ``ApiError`` otherwise, exactly as ``alone`` (the single
        call) would."""
        assert self.coalescer is not None
        assert identity.user_id is not None
        webinar_id, session_id = beat
        t0 = time.perf_counter()
        try:
            answer = await self.coalescer.ping(webinar_id, identity.user_id, session_id)
        except (psycopg.Error, PoolTimeout, PoolClosed, exchange.DbTimeoutError) as exc:
            ctx.db_ms = (time.perf_counter() - t0) * 1000
            raise self.failure(ctx, identity, exc) from None
        if coalesce.retry_alone(answer):
            await self.call(ctx, identity, alone)
            return
        ctx.db_ms = (time.perf_counter() - t0) * 1000
        self.observe_db(ctx.function, ctx.db_ms / 1000)
        if answer is not None:
            raise self.raised(identity, answer)

    async def enter(
        self,
        ctx: RequestContext,
        identity: Identity,
        entry: tuple[int, str | None, str | None],
        alone: Query,
    ) -> str | None:
        """An entry or re-confirmation (webinar id, session id, client JSON) through the
        entry batcher: this caller's JSON, or its ``ApiError`` raised, exactly as
        ``alone`` (the single call) would answer."""
        batcher = self.entries if entry[1] is None else self.reconfirms
        assert batcher is not None
        assert identity.user_id is not None
        t0 = time.perf_counter()
        try:
            answer = await batcher.enter(entry[0], identity.user_id, entry[1], entry[2])
        except (psycopg.Error, PoolTimeout, PoolClosed, exchange.DbTimeoutError) as exc:
            ctx.db_ms = (time.perf_counter() - t0) * 1000
            raise self.failure(ctx, identity, exc) from None
        if coalesce.retry_alone(answer):
            return await self.call(ctx, identity, alone)
        ctx.db_ms = (time.perf_counter() - t0) * 1000
        self.observe_db(ctx.function, ctx.db_ms / 1000)
        if isinstance(answer, str):
            return answer
        raise self.raised(identity, answer)

    def raised(self, identity: Identity, body: dict[str, Any]) -> ApiError:
        """A batch element's error body (an error our functions raised on purpose) as the
        very ``ApiError`` the single path builds from that error (``errors.from_database``)."""
        code = body["code"]
        status = errors.status_for_sqlstate(code, identity.anonymous)
        headers: dict[str, str] = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if status == 503:
            headers["Retry-After"] = str(self.settings.retry_after)
        return ApiError(
            status,
            code,
            body.get("message") or "",
            details=body.get("details") or None,
            hint=body.get("hint") or None,
            headers=headers,
            reason="database",
        )

    def failure(self, ctx: RequestContext, identity: Identity, exc: Exception) -> ApiError:
        """A pool or database failure as the caller's PostgREST error, logged once."""
        retry = self.settings.retry_after
        if isinstance(exc, PoolTimeout):
            return errors.unavailable(
                "PGRST003",
                "Timed out acquiring connection from connection pool.",
                retry,
                "pool_timeout",
            )
        if isinstance(exc, PoolClosed):
            return errors.unavailable(
                "PGRST000", "The server is shutting down", retry, "shutting_down"
            )
        if isinstance(exc, exchange.DbTimeoutError):
            return errors.unavailable(
                "PGRST000", "The database did not answer in time", retry, "db_timeout"
            )
        assert isinstance(exc, psycopg.Error)
        err = errors.from_database(exc, identity.anonymous, ctx.request_id, retry)
        if err.status == 503:
            log.warning("request %s: database unavailable: %s", ctx.request_id, exc)
        elif err.status >= 500 or errors.is_hidden(err):
            log.error("request %s: database error %s: %s", ctx.request_id, exc.sqlstate, exc)
        return err

    async def ready(self) -> None:
        """``select 1`` on a pooled connection, bounded like a request (pool timeout, then
        ``db_timeout``): a frozen database is "not ready" now, not when it thaws."""
        try:
            # Readiness answers at once: a wait as long as a request's would outlast a freeze.
            wait = min(self.pool_timeout, READY_WAIT)
            async with self.connections.connection(timeout=wait) as conn:
                try:
                    async with asyncio.timeout(self.db_timeout):
                        await exchange.ping(conn)
                except TimeoutError:
                    await conn.close()  # mid-exchange: never back into the pool
                    raise
        except (psycopg.Error, PoolTimeout, TimeoutError):
            raise errors.unavailable(
                "PGRST000",
                "Could not connect with the database",
                self.settings.retry_after,
                "database_down",
            ) from None


_PID = b"select pg_catalog.pg_backend_pid()"


async def _backend(conn: psycopg.AsyncConnection[Any]) -> int:
    row = await (await conn.execute(_PID)).fetchone()
    return int(row[0]) if row else 0


async def transaction_pooled(url: str, timeout: float = POOLER_PROBE_SECONDS) -> bool | None:
    """True when ``url`` reaches PostgreSQL through a transaction-mode pooler (PgBouncer
    ``pool_mode = transaction``, Supavisor on port 6543), False when each client
    connection is one server session (direct, a TCP proxy, a session-mode pooler), None
    when it could not tell within ``timeout`` (database unreachable).

    Two client connections: A runs ``pg_backend_pid()``, then B opens a transaction and
    asks the same, then A asks again. A server session belongs to one client connection
    for its life unless the pooler lends it per transaction, so B seeing A's backend (a
    pooler hands out the server connection just released) or A seeing another backend
    (A's went to B) proves transaction pooling; nothing else can produce either."""
    try:
        async with asyncio.timeout(timeout):
            kwargs: dict[str, Any] = {
                "autocommit": True,
                "prepare_threshold": None,
                "application_name": "eventlive pooler probe",
            }
            async with (
                await psycopg.AsyncConnection.connect(url, **kwargs) as a,
                await psycopg.AsyncConnection.connect(url, **kwargs) as b,
            ):
                first = await _backend(a)
                await b.execute(b"begin")
                if await _backend(b) == first:
                    return True
                for _ in range(3):  # a pooler that does not lend the last one released
                    if await _backend(a) != first:
                        return True
                await b.execute(b"rollback")
                return False
    except (psycopg.Error, TimeoutError, OSError):
        return None
