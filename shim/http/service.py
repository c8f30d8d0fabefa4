"""What lives as long as the app: the database (pool, health, coalescer:
``shim.http.database``), the JWT keys, the catalog of callable functions, the shared GET
cache and room clock, the metrics and the access log. ``Service`` opens them in ``start``
(the app's lifespan) and closes them in ``stop``; nothing opens at import or
construction. The NOTIFY listener that reloads the catalog and moves the room clock is the
process's one listener (``shim.serve.listener``), which calls ``reload`` and ``rooms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import psycopg
from psycopg_pool import PoolTimeout

from shim.http import catalog as cat
from shim.http.accesslog import AccessLog
from shim.http.auth import Authenticator
from shim.http.cache import RoomClock, SharedCache
from shim.http.database import Database
from shim.http.metrics import Metrics
from shim.http.settings import Settings
from shim.http.turns import Turns

log = logging.getLogger("eventlive.shim")
LAG_PERIOD = 0.1  # seconds between two samples of the event loop's lag


class Service:
    """The app's long-lived parts; requests read them, only ``start``/``reload`` replace them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.cache = SharedCache(settings.cache_entries)
        self.rooms = RoomClock()
        self.catalog: cat.Catalog = cat.EMPTY
        self.database = Database(settings, self._observe_db, self._observe_entries)
        self.turns = Turns(settings.entry_turn) if settings.entry_turn > 0 else None
        self.metrics = Metrics(self._pool_stats, self._auth_stats)
        self.access_log = AccessLog() if settings.access_log else None
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()

    def _auth_stats(self) -> tuple[int, int, int]:
        a = self.auth
        return a.cache_hits, a.cache_misses, a.jwks_fetches

    def _observe_db(self, function: str, seconds: float) -> None:
        self.metrics.observe_db(function, seconds)

    def _observe_entries(self, webinars: list[int], waited: list[float]) -> None:
        self.metrics.observe_entries(waited)

    def _pool_stats(self) -> dict[str, int]:
        """The pool's figures; its waiting requests include those waiting in the share
        of the pool (``exchange.Share``) and the entries queued for a batch."""
        database = self.database
        pool = database.pool
        if pool is None:
            return {}
        stats = pool.get_stats()
        waiting = database.share.waiting if database.share is not None else 0
        for batcher in (database.entries, database.reconfirms):
            waiting += batcher.queued if batcher is not None else 0
        if waiting:
            stats["requests_waiting"] = stats.get("requests_waiting", 0) + waiting
        return stats

    async def start(self) -> None:
        """Open the pool (without waiting for the database), keys, catalog."""
        if not self.settings.database_url:
            raise RuntimeError("DATABASE_URL is not set (eventlive serve sets it)")
        await self.database.open()
        await self.auth.load_keys()
        try:
            await self.reload()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("catalog not loaded at start (%s); the listener retries", exc)
        if self.access_log is not None:
            self._tasks.append(asyncio.create_task(self.access_log.run()))
        self._tasks.append(asyncio.create_task(self._watch_loop()))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: self._tasks.append(asyncio.create_task(self.safe_reload()))
            )

    async def _watch_loop(self) -> None:
        """The loop's lag (``eventlive_loop_lag_seconds``): a 0.1 s timer's lateness."""
        loop = asyncio.get_running_loop()
        observe = self.metrics.loop_lag.observe
        while True:
            due = loop.time() + LAG_PERIOD
            await asyncio.sleep(LAG_PERIOD)
            observe(max(0.0, loop.time() - due))

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
        await self.database.close()

    async def reload(self) -> None:
        """Re-read the catalog and role settings; replace them whole."""
        async with self._reload_lock, self.database.connections.connection(timeout=5.0) as conn:
            fresh = await cat.load(
                conn,
                self.settings.schemas,
                self.settings.jwt_roles,
                self.settings.statement_timeout,
            )
        self.catalog = fresh
        self.cache.clear()
        log.info("catalog loaded: %d functions", sum(len(v) for v in fresh.routines.values()))

    async def safe_reload(self) -> None:
        """``reload``, a failure logged (the listener tries again after reconnecting)."""
        try:
            await self.reload()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("catalog reload failed: %s", exc)
