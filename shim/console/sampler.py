"""One sampler per worker behind every open status page: every ``interval`` seconds it
reads the database once (live webinars with their current viewers and entries in the
last minute, in one round trip as service_role) and its own metrics registry, and keeps
the latest ``Snapshot``. Pages read the snapshot; however many are open, the database
answers once per interval. It runs only while someone looks (stops after ``idle_after``
seconds without a reader) and costs nothing otherwise.

What a page shows is filled from the first snapshot, whenever it is opened: requests and
errors per function come from the metrics' one-minute window (``eventlive_window_*``,
15-second slots kept by ``shim.http.metrics``), the 4xx/5xx trend from the same slots
minute by minute over the last 15 minutes. Only database latency needs two samples (its
histogram counts since start): since start until the sampler has watched a minute, then
over that minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from shim.console.verdicts import Counts, Verdict, counts_from, evaluate
from shim.http.metrics import SLOT_SECONDS, Recent
from shim.http.service import Service

log = logging.getLogger("eventlive.status")

# One simple-protocol round trip: the role switch is transaction-local to the implicit
# transaction of the two statements. The query is SQL's (functions/75_status.sql).
# The functions table's window (a label of eventlive_window_*) and the trend's minutes.
WINDOW = "1m"
TREND_MINUTES = 15
LATENCY_AFTER = 60.0

LIVE_WEBINARS = """
select pg_catalog.set_config('role', 'service_role', true);
select s.webinar_id, s.title, s.viewers, s.entries from eventlive.status_sample() as s
"""


@dataclass
class FunctionStats:
    """One function over the last minute (or since start, when younger): requests per
    second and errors by reason from the window, database latency as ``Snapshot.latency``
    says."""

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
    span: float = 0.0  # seconds the rates and errors cover (a minute, or since start)
    latency: str = "since start"  # what db p50/p99 cover: "since start" or "last 1 min"
    # 4xx and 5xx answers per minute, oldest first, the last one the current minute
    trend: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Sample:
    """The database latency histograms (cumulative) at ``at``, by function."""

    at: float
    buckets: dict[str, list[tuple[float, float]]]


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
        stats = s.metrics.pool_stats()  # waiting: in the pool, its share and entry queues
        snap.pool = {
            "size": stats.get("pool_size", 0),
            "in_use": stats.get("pool_size", 0) - stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
            "max": s.settings.pool_max,
        }
        snap.uptime = snap.taken_at - s.metrics.started
        snap.verdicts = evaluate(counts_from(families, "5m", now=snap.taken_at))
        self._history.append(_sample(families, snap.taken_at))
        window = counts_from(families, WINDOW, now=snap.taken_at)
        snap.span = window_span(snap.taken_at, snap.uptime)
        latency = _latency(self._history, snap.uptime)
        snap.latency = "last 1 min" if latency is not None else "since start"
        snap.functions = _function_stats(window, snap.span, latency or self._history[-1].buckets)
        snap.trend = error_trend(s.metrics.recent_errors)
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
    out = _Sample(at, {})
    for fam in families:
        for smp in fam.samples:
            if smp.name == "eventlive_db_duration_seconds_bucket" and smp.labels.get("function"):
                out.buckets.setdefault(smp.labels["function"], []).append(
                    (float(smp.labels["le"]), smp.value)
                )
    return out


def window_span(now: float, uptime: float) -> float:
    """Seconds the one-minute window really covers: ``Recent.totals(60)`` sums the slots
    overlapping the last minute (the current one, partly, and the three before), never
    more than the worker has been up."""
    slots = math.ceil(60 / SLOT_SECONDS)
    return max(1e-3, min(uptime, (slots - 1) * SLOT_SECONDS + now % SLOT_SECONDS))


def error_trend(errors: Recent, minutes: int = TREND_MINUTES) -> list[tuple[int, int]]:
    """(4xx, 5xx) answers per minute over the last ``minutes``, oldest first: the
    difference of the slot sums over k and k-1 minutes."""
    totals: list[dict[tuple[str, ...], int]] = [{}]
    totals += [errors.totals(60 * k) for k in range(1, minutes + 1)]
    out = []
    for k in range(minutes, 0, -1):
        n4 = n5 = 0
        for key, n in totals[k].items():
            d = n - totals[k - 1].get(key, 0)
            if key[1].startswith("5"):
                n5 += d
            elif key[1].startswith("4"):
                n4 += d
        out.append((n4, n5))
    return out


def _latency(history: deque[_Sample], uptime: float) -> dict[str, list[tuple[float, float]]] | None:
    """Per function, the latency histogram's counts over the sampler's last minute; None
    while it has watched less than ``LATENCY_AFTER`` seconds (then: since start)."""
    new, old = history[-1], history[0]
    if new.at - old.at < min(LATENCY_AFTER, uptime) - 1e-6 or len(history) < 2:
        return None
    out = {}
    for fn, buckets in new.buckets.items():
        before = dict(old.buckets.get(fn, []))
        out[fn] = [(le, c - before.get(le, 0)) for le, c in buckets]
    return out


def _function_stats(
    window: Counts, span: float, buckets: dict[str, list[tuple[float, float]]]
) -> list[FunctionStats]:
    """One row per function answered or failed in the window (``Counts``)."""
    names = {fn for fn, n in window.requests.items() if n > 0}
    names |= {fn for (fn, _s, _c, _r), n in window.errors.items() if n > 0 and fn}
    out = []
    for fn in names:
        e4: dict[str, int] = {}
        e5: dict[str, int] = {}
        for (f, status, _code, reason), n in window.errors.items():
            if f == fn and n > 0:
                target = e5 if status.startswith("5") else e4
                target[reason] = target.get(reason, 0) + int(n)
        hist = sorted(buckets.get(fn, []))
        out.append(
            FunctionStats(
                fn,
                window.requests.get(fn, 0) / span,
                _quantile(hist, 0.5),
                _quantile(hist, 0.99),
                e4,
                e5,
            )
        )
    out.sort(key=lambda f: (-f.rps, f.name))
    return out


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
