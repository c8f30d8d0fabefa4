"""What lives as long as the app: the connection pool, the JWT keys, the catalog of
callable functions and the NOTIFY listener that reloads it, the shared GET cache and the
metrics, and the housekeeping runner. ``Service`` opens them in ``start`` (the app's lifespan) and closes them in
``stop``; nothing opens at import or construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shim.http import catalog as cat
from shim.http.accesslog import AccessLog
from shim.http.auth import Authenticator
from shim.http.cache import RoomClock, SharedCache
from shim.http.coalesce import Coalescer
from shim.http.exchange import Health
from shim.http.housekeeping import Housekeeper
from shim.http.metrics import Metrics
from shim.http.settings import Settings
from shim.realtime.hub import ROOM_CHANNEL

log = logging.getLogger("eventlive.shim")

QUICK_503 = 0.5
# Pings per coalesced statement at most: past ~100 the batch's own transaction time
# (row locks held until its commit) outweighs the per-statement saving.
MAX_BATCH = 100


class Service:
    """The app's long-lived parts; requests read them, only ``start``/``reload`` replace them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.cache = SharedCache(settings.cache_entries)
        self.rooms = RoomClock()
        self.catalog: cat.Catalog = cat.EMPTY
        self.pool: AsyncConnectionPool[Any] | None = None
        self.metrics = Metrics(self._pool_stats, self._auth_stats)
        # A database that failed lately gets its 503s after QUICK_503 seconds in the pool
        # queue; a busy one makes requests wait up to EVENTLIVE_POOL_TIMEOUT.
        self.health = Health(quick=min(QUICK_503, settings.pool_timeout))
        self.coalescer: Coalescer | None = (
            Coalescer(
                lambda: self.pool,
                slots=settings.coalesce_slots,
                max_batch=MAX_BATCH,
                statement_timeout=settings.statement_timeout,
                pool_timeout=settings.pool_timeout,
                db_timeout=settings.db_timeout,
                prepare=settings.prepare,
                health=self.health,
            )
            if settings.coalesce
            else None
        )
        self.access_log = AccessLog() if settings.access_log else None
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        # Set while the NOTIFY listener holds its LISTEN (tests wait on it).
        self.listening = asyncio.Event()

    def _auth_stats(self) -> tuple[int, int, int]:
        a = self.auth
        return a.cache_hits, a.cache_misses, a.jwks_fetches

    def _pool_stats(self) -> dict[str, int]:
        return self.pool.get_stats() if self.pool is not None else {}

    async def start(self) -> None:
        """Open the pool (without waiting for the database), keys, catalog, listener."""
        s = self.settings
        if not s.database_url:
            raise RuntimeError("DATABASE_URL is not set (eventlive serve sets it)")
        self.pool = AsyncConnectionPool(
            s.database_url,
            min_size=s.pool_min,
            max_size=s.pool_max,
            timeout=s.pool_timeout,
            open=False,
            name="eventlive",
            kwargs={"autocommit": True},
            # Short: an outage must not push the next attempt minutes away.
            reconnect_timeout=5.0,
        )
        await self.pool.open(wait=False)
        await self.auth.load_keys()
        try:
            await self.reload()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("catalog not loaded at start (%s); the listener retries", exc)
        self._tasks.append(asyncio.create_task(self._listen()))
        if s.housekeeping_interval > 0:  # stopped with the other tasks in stop()
            self._tasks.append(asyncio.create_task(Housekeeper(self.pool, s).run_forever()))
        if self.access_log is not None:
            self._tasks.append(asyncio.create_task(self.access_log.run()))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: self._tasks.append(asyncio.create_task(self._safe_reload()))
            )

    async def stop(self) -> None:
        """Cancel background tasks and close the pool."""
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.access_log is not None:
            self.access_log.flush()
        if self.pool is not None:
            await self.pool.close()

    async def reload(self) -> None:
        """Re-read the catalog and role settings; replace them whole."""
        assert self.pool is not None
        async with self._reload_lock, self.pool.connection(timeout=5.0) as conn:
            fresh = await cat.load(
                conn,
                self.settings.schemas,
                self.settings.jwt_roles,
                self.settings.statement_timeout,
            )
        self.catalog = fresh
        self.cache.clear()
        log.info("catalog loaded: %d functions", sum(len(v) for v in fresh.routines.values()))

    async def _safe_reload(self) -> None:
        try:
            await self.reload()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("catalog reload failed: %s", exc)

    async def _listen(self) -> None:
        """LISTEN on a dedicated connection: reload the catalog on each NOTIFY of its
        channel and after reconnecting; tell the room clock of each room change."""
        assert self.settings.database_url is not None
        delay = 0.5
        missed = not self.catalog.loaded
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True
                ) as conn:
                    await conn.execute(f"listen {cat.RELOAD_CHANNEL}")
                    await conn.execute(f"listen {ROOM_CHANNEL}")
                    self.rooms.moved_all()
                    self.listening.set()
                    delay = 0.5
                    if missed:  # notifications may have been missed while disconnected
                        await self._safe_reload()
                    missed = True
                    async for note in conn.notifies():
                        if note.channel == ROOM_CHANNEL:
                            with contextlib.suppress(ValueError):
                                self.rooms.changed(int(note.payload))
                        else:
                            await self._safe_reload()
            except psycopg.Error as exc:
                log.debug("listener: %s; retrying in %.1fs", exc, delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
