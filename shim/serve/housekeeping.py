"""The housekeeping runner: ends sessions whose viewers stopped pinging, removes
history past its retention and folds the registration counters' deltas into the
counters, by itself, in every shim process.

The work is SQL (``functions/70_housekeeping.sql``): ``eventlive.housekeeping_step`` does
one short batch in its own transaction and returns null when another runner's batch holds
the housekeeping advisory lock. So however many processes or nodes run this loop, one
works at a time and none waits: a runner that finds the lock taken skips to its next
tick. Each tick repeats batches while they find work, up to ``MAX_BATCHES``, so a
backlog drains over a few ticks without one long transaction.

Where the database has ``pg_cron`` (Supabase does), the same step can be scheduled there
instead -- ``select cron.schedule('eventlive-housekeeping', '* * * * *', $$select
eventlive.housekeeping_step('30 days', 1000)$$)`` -- and this loop turned off with
``EVENTLIVE_HOUSEKEEPING_INTERVAL=0``; both together are safe (the lock), merely redundant.

The runner logs in through the shim's pool as ``authenticator`` and switches to
``service_role`` for the call (the only role granted it), like a request would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shim.http.settings import Settings

log = logging.getLogger("eventlive.housekeeping")

MAX_BATCHES = 50  # per tick: a backlog drains over several ticks, in short transactions
_STEP = "select eventlive.housekeeping_step(%s, %s)"


@dataclass(frozen=True)
class Sweep:
    """What one tick did. ``skipped``: another runner held the lock."""

    expired: int = 0
    pruned: int = 0
    folded: int = 0
    batches: int = 0
    skipped: bool = False


class Housekeeper:
    """Runs ``housekeeping_step`` every ``settings.housekeeping_interval`` seconds."""

    def __init__(self, pool: AsyncConnectionPool[Any], settings: Settings) -> None:
        self._pool = pool
        self._retention = dt.timedelta(days=settings.history_retention_days)
        self._batch = settings.housekeeping_batch
        self._interval = settings.housekeeping_interval

    async def step(self) -> dict[str, int] | None:
        """One batch; None when another runner holds the lock."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("select pg_catalog.set_config('role', 'service_role', true)")
            cur = await conn.execute(_STEP, (self._retention, self._batch))
            row = await cur.fetchone()
        return None if row is None or row[0] is None else dict(row[0])

    async def run_once(self) -> Sweep:
        """Batches until one finds nothing to do (or ``MAX_BATCHES``)."""
        expired = pruned = folded = batches = 0
        while batches < MAX_BATCHES:
            done = await self.step()
            if done is None:
                return Sweep(expired, pruned, folded, batches, skipped=True)
            batches += 1
            expired += done["expired"]
            pruned += done["pruned"]
            folded += done["folded"]
            if max(done["expired"], done["pruned"], done["folded"]) < self._batch:
                break
        return Sweep(expired, pruned, folded, batches)

    async def run_forever(self) -> None:
        """The background task the app's lifespan starts (cancel it to stop)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                sweep = await self.run_once()
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("housekeeping failed, retrying next tick: %s", exc)
                continue
            if sweep.expired or sweep.pruned:
                log.info(
                    "housekeeping: %d sessions expired, %d history rows pruned",
                    sweep.expired,
                    sweep.pruned,
                )
            if sweep.folded:
                log.debug("housekeeping: %d counter deltas folded", sweep.folded)
