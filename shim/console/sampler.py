"""One sampler per worker behind every open status page: every ``interval`` seconds it
reads the database once (live webinars with their current viewers and entries in the
last minute, in one round trip as service_role) and its own metrics registry, and keeps
the latest ``Snapshot``. Pages read the snapshot; however many are open, the database
answers once per interval. It runs only while someone looks (stops after ``idle_after``
seconds without a reader) and costs nothing otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from shim.console.verdicts import Verdict, counts_from, evaluate
from shim.http.service import Service

log = logging.getLogger("eventlive.status")

# One simple-protocol round trip: the role switch is transaction-local to the implicit
# transaction of the two statements. The query is SQL's (functions/75_status.sql).
LIVE_WEBINARS = """
select pg_catalog.set_config('role', 'service_role', true);
select s.webinar_id, s.title, s.viewers, s.entries from eventlive.status_sample() as s
"""


@dataclass
class FunctionStats:
    """One function over the last minute (or since start, when younger)."""

    name: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors_4xx: dict[str, int]
    errors_5xx: dict[str, int]


@dataclass
class Snapshot:
    """What a status page shows, taken at ``taken_at``."""

    taken_at: float
    database_ok: bool
    database_error: str = ""
    webinars: list[tuple[int, str, int, int]] = field(default_factory=list)
    pool: dict[str, int] = field(default_factory=dict)
    functions: list[FunctionStats] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    uptime: float = 0.0
    span: float = 0.0


@dataclass
class _Sample:
    at: float
    requests: dict[str, float]
    buckets: dict[str, list[tuple[float, float]]]
    errors: dict[tuple[str, str, str], float]


class Sampler:
    """See the module doc. ``queries`` counts the database reads it made."""

    def __init__(self, service: Service, interval: float = 2.0, idle_after: float = 30.0) -> None:
        self.service = service
        self.interval = interval
        self.idle_after = idle_after
        self.queries = 0
        self.latest: Snapshot | None = None
        self._wanted = 0.0
        self._task: asyncio.Task[None] | None = None
        self._fresh = asyncio.Event()
        self._history: deque[_Sample] = deque(maxlen=int(60 / interval) + 2)

    async def snapshot(self) -> Snapshot:
        """The latest snapshot; starts the loop (and waits for its first one) if idle."""
        self._wanted = time.monotonic()
        if self._task is None or self._task.done():
            self._fresh.clear()
            self._task = asyncio.create_task(self._loop())
        if self.latest is None:
            await self._fresh.wait()
        assert self.latest is not None
        return self.latest

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                self.latest = await self._take()
            except Exception:  # the page must show something, never take the loop down
                log.exception("status sample failed")
                if self.latest is None:
                    self.latest = Snapshot(time.time(), False, "the status sample failed (logged)")
            self._fresh.set()
            await asyncio.sleep(self.interval)
            if time.monotonic() - self._wanted > self.idle_after:
                self.latest = None
                self._history.clear()
                return

    async def _take(self) -> Snapshot:
        s = self.service
        snap = Snapshot(time.time(), database_ok=False)
        try:
            snap.webinars = await self._read_database()
            snap.database_ok = True
        except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
            snap.database_error = (
                str(exc).strip().splitlines()[0][:200] if str(exc) else type(exc).__name__
            )
        families = list(s.metrics.registry.collect())
        stats = s.database.pool.get_stats() if s.database.pool is not None else {}
        snap.pool = {
            "size": stats.get("pool_size", 0),
            "in_use": stats.get("pool_size", 0) - stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
            "max": s.settings.pool_max,
        }
        snap.uptime = snap.taken_at - s.metrics.started
        snap.verdicts = evaluate(counts_from(families, "5m", now=snap.taken_at))
        self._history.append(_sample(families, snap.taken_at))
        snap.functions, snap.span = _function_stats(self._history, snap.uptime)
        return snap

    async def _read_database(self) -> list[tuple[int, str, int, int]]:
        pool = self.service.database.pool
        assert pool is not None
        timeout = self.service.settings.db_timeout
        async with pool.connection(timeout=self.service.settings.pool_timeout) as conn:
            self.queries += 1
            async with asyncio.timeout(timeout):
                cur = await conn.execute(LIVE_WEBINARS)
                cur.nextset()
                rows = await cur.fetchall()
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


def _sample(families: list[Any], at: float) -> _Sample:
    out = _Sample(at, {}, {}, {})
    for fam in families:
        for smp in fam.samples:
            name, lb, v = smp.name, smp.labels, smp.value
            if name == "eventlive_requests_total" and lb.get("function"):
                out.requests[lb["function"]] = out.requests.get(lb["function"], 0) + v
            elif name == "eventlive_db_duration_seconds_bucket" and lb.get("function"):
                le = float(lb["le"])
                out.buckets.setdefault(lb["function"], []).append((le, v))
            elif name == "eventlive_errors_total" and lb.get("function"):
                key = (lb["function"], lb["status"], lb["reason"])
                out.errors[key] = out.errors.get(key, 0) + v
    return out


def _function_stats(history: deque[_Sample], uptime: float) -> tuple[list[FunctionStats], float]:
    """Rates and percentiles between the oldest and newest samples (about a minute); with
    a single sample, since the worker started."""
    new = history[-1]
    old = history[0] if len(history) > 1 else _Sample(new.at - uptime, {}, {}, {})
    span = max(new.at - old.at, 1e-3)
    out = []
    for fn, n in new.requests.items():
        calls = n - old.requests.get(fn, 0)
        before = dict(old.buckets.get(fn, []))
        buckets = sorted((le, c - before.get(le, 0)) for le, c in new.buckets.get(fn, []))
        e4: dict[str, int] = {}
        e5: dict[str, int] = {}
        for (f, status, reason), v in new.errors.items():
            d = int(v - old.errors.get((f, status, reason), 0))
            if f == fn and d > 0:
                target = e5 if status.startswith("5") else e4
                target[reason] = target.get(reason, 0) + d
        if calls <= 0 and fn not in _recent_names(history):
            continue
        out.append(
            FunctionStats(
                fn, calls / span, _quantile(buckets, 0.5), _quantile(buckets, 0.99), e4, e5
            )
        )
    out.sort(key=lambda f: (-f.rps, f.name))
    return out, span


def _recent_names(history: deque[_Sample]) -> set[str]:
    return set(history[0].requests) if history else set()


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs, in ms."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le * 1000
            width = c - prev_c
            frac = (rank - prev_c) / width if width > 0 else 1.0
            return (prev_le + (le - prev_le) * frac) * 1000
        prev_le, prev_c = le, c
    return prev_le * 1000
