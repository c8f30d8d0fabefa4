"""Prometheus metrics of one worker, in a registry of its own (one per app instance).

Requests by route / function / status, latency histograms, pool size / in use /
waiting (read from psycopg_pool at scrape time), 503s by reason, rejected tokens by
reason, cache results. With ``--workers N`` each worker answers for itself.

For ``eventlive verify`` and ``/status``: errors by function, status, SQLSTATE and reason
(``eventlive_errors``; every label from a bounded set: routable function names, the
SQLSTATEs and reasons below, anything else ``other``), token cache hits and misses, JWKS
fetches (the only auth-server traffic), the process start time, and the same errors and
requests per function over the last 1..60 minutes (``eventlive_window_*``, from 15-second
slots kept for an hour) so a check "in the last 30 minutes" needs one scrape, not two.

**A node's workers as one** (``eventlive serve --workers N``, N > 1): ``eventlive serve``
gives its workers a private ``PROMETHEUS_MULTIPROC_DIR`` (``shim.serve.server``), and
prometheus-client's multiprocess mode writes every counter and histogram to a file per
worker there; ``registry`` (what ``/metrics`` renders and ``/status`` samples) is then a
``MultiProcessCollector`` over that directory, so one scrape of any worker answers for
the node. What the custom collectors computed from one worker's memory is published by
each worker (``publish``, every second and at every scrape) as multiprocess metrics:

- pool size / in use / waiting: gauges in ``livesum`` mode, the node's pool is the sum of
  its live workers' (a dead worker's connections are gone with it; ``max`` would hide
  that one worker's pool is exhausted while another idles);
- token cache hits / misses, JWKS fetches: counters (a dead worker's counts stay, as
  any counter's do);
- the start time: ``min`` (counters count since the node's first worker started);
- the ``eventlive_window_*`` sums: ``livesum`` (a killed worker's last hour leaves with
  it, at most a restart's worth of requests).

A worker's ``livesum`` files are removed once its pid is gone (``mark_process_dead``, at
each scrape), so a worker killed and restarted by uvicorn is not counted twice. With one
worker nothing of this runs: the in-memory metrics, as before.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Windows exposed as eventlive_window_* (label ``window``), in seconds.
WINDOWS = {"1m": 60, "5m": 300, "10m": 600, "15m": 900, "30m": 1800, "60m": 3600}
SLOT_SECONDS = 15
_SLOTS = max(WINDOWS.values()) // SLOT_SECONDS

# SQLSTATEs kept as labels; others are "other". PTnnn and PGRSTnnn are bounded by form.
SQLSTATES = frozenset(
    {
        "42703", "42P01", "42883", "42501", "23503", "23505", "25006", "57014",
        "40001", "40P01", "P0001", "22P02", "22003", "22021", "22023", "22004",
        "53300", "53400", "08006", "08001", "42P17", "XX000",
    }
)  # fmt: skip
_BOUNDED_CODE = re.compile(r"(PT|PGRST)[0-9A-Z]{3}")

# Reasons (``details`` of our functions, the shim's own) kept as labels; others "other".
# tests/http/test_metrics_errors.py checks every reason raised in functions/ is here.
REASONS = frozenset(
    """
    answer_too_long banned cannot_ban_staff chat_disabled client_too_large empty_message
    invalid_action invalid_after_seq invalid_entry invalid_heartbeat_seconds
    invalid_max_message_chars invalid_max_rows invalid_minutes invalid_role
    invalid_session_id invalid_slow_mode_seconds invalid_state invalid_status invalid_title
    invalid_track_seconds invalid_webinar_id invalid_window message_deleted
    message_not_found message_too_long not_authenticated not_host not_registered not_staff
    qa_disabled question_closed question_not_found rate_limited registration_key_immutable
    session_ended session_superseded too_many_ids user_id_required user_not_found
    webinar_closed webinar_not_found
    body_timeout body_too_large method_not_allowed unknown_function unknown_profile
    unsupported_media_type not_an_object invalid_batch batch_too_large invalid_retention
    not_service_role not_loaded not_readonly
    bad_issuer invalid_message invalid_messages invalid_ticket
    duplicate_argument duplicate_key invalid_unicode malformed_json nul_character wrong_type
    unknown_argument missing_argument out_of_range
    bad_algorithm bad_audience bad_role bad_signature expired invalid malformed
    not_yet_valid unknown_kid
    pool_timeout shutting_down db_timeout database_down database_busy catalog_not_loaded
    internal
    """.split()  # noqa: SIM905 - a word list reads better than 70 quoted strings
)


def bounded_sqlstate(code: str) -> str:
    """``code`` when it is a known SQLSTATE or a PTnnn / PGRSTnnn code, else ``other``."""
    if code in SQLSTATES or _BOUNDED_CODE.fullmatch(code):
        return code
    return "other"


def bounded_reason(reason: str | None) -> str:
    """``reason`` when it is a known one, ``none`` when empty, else ``other``."""
    if not reason:
        return "none"
    return reason if reason in REASONS else "other"


class Recent:
    """Counts per 15-second slot over the last hour, keyed by a bounded label tuple.

    ``add`` is a dict lookup and an increment; ``totals(seconds)`` sums the slots that
    started within the window (so a window is exact to one slot)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._slots: dict[int, dict[tuple[str, ...], int]] = {}

    def add(self, key: tuple[str, ...]) -> None:
        slot = int(self._clock() // SLOT_SECONDS)
        counts = self._slots.get(slot)
        if counts is None:
            counts = self._slots[slot] = {}
            for old in [s for s in self._slots if s <= slot - _SLOTS]:
                del self._slots[old]
        counts[key] = counts.get(key, 0) + 1

    def totals(self, seconds: float) -> dict[tuple[str, ...], int]:
        """Counts of the slots overlapping the last ``seconds`` (at most an hour)."""
        now = int(self._clock() // SLOT_SECONDS)
        first = now - min(_SLOTS, math.ceil(seconds / SLOT_SECONDS)) + 1
        out: dict[tuple[str, ...], int] = {}
        for slot, counts in list(self._slots.items()):
            if slot >= first:
                for key, n in counts.items():
                    out[key] = out.get(key, 0) + n
        return out


class _WindowCollector(Collector):
    """The ``Recent`` counts as gauges, one series per window; the start time; token cache."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        m = self._m
        yield GaugeMetricFamily(
            "eventlive_process_start_time_seconds",
            "When this worker started (Unix time): counters count since then",
            value=m.started,
        )
        errors = GaugeMetricFamily(
            "eventlive_window_errors",
            "Error answers in the last window, by function, status, SQLSTATE and reason",
            labels=["window", "function", "status", "sqlstate", "reason"],
        )
        requests = GaugeMetricFamily(
            "eventlive_window_requests",
            "Answers in the last window, by function",
            labels=["window", "function"],
        )
        for window, seconds in WINDOWS.items():
            for key, n in sorted(m.recent_errors.totals(seconds).items()):
                errors.add_metric([window, *key], n)
            for key, n in sorted(m.recent_requests.totals(seconds).items()):
                requests.add_metric([window, *key], n)
        yield errors
        yield requests
        cache = CounterMetricFamily(
            "eventlive_token_cache",
            "Verified-token cache lookups (hit, miss)",
            labels=["result"],
        )
        hits, misses, fetches = m.auth_stats()
        cache.add_metric(["hit"], hits)
        cache.add_metric(["miss"], misses)
        yield cache
        yield CounterMetricFamily(
            "eventlive_jwks_fetches",
            "JWKS fetches: the only requests the shim sends to an auth server",
            value=fetches,
        )


class _PoolCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily]:
        s = self._stats()
        size = s.get("pool_size", 0)
        available = s.get("pool_available", 0)
        yield GaugeMetricFamily("eventlive_pool_size", "Connections open", value=size)
        yield GaugeMetricFamily(
            "eventlive_pool_in_use", "Connections lent to requests", value=size - available
        )
        yield GaugeMetricFamily(
            "eventlive_pool_waiting",
            "Requests waiting for a connection",
            value=s.get("requests_waiting", 0),
        )


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode when this process runs in it (module doc)."""
    return os.environ.get(MULTIPROC_ENV) or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead(path: str) -> list[int]:
    """``mark_process_dead`` for every worker whose live gauges remain but whose pid is
    gone (killed, then restarted by uvicorn under another pid); the pids swept."""
    pids = set()
    for f in Path(path).glob("gauge_live*_*.db"):
        tail = f.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    dead = sorted(p for p in pids if p != os.getpid() and not _alive(p))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return dead


class _Shared:
    """What the custom collectors say, as multiprocess metrics of this worker (module doc)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.started = Gauge(
            "eventlive_process_start_time_seconds",
            "When this node's first worker started (Unix time): counters count since then",
            registry=r,
            multiprocess_mode="min",
        )
        self.pool = {
            name: Gauge(f"eventlive_pool_{name}", doc, registry=r, multiprocess_mode="livesum")
            for name, doc in (
                ("size", "Connections open"),
                ("in_use", "Connections lent to requests"),
                ("waiting", "Requests waiting for a connection"),
            )
        }
        self.cache = Counter(
            "eventlive_token_cache", "Verified-token cache lookups (hit, miss)", ["result"],
            registry=r,
        )  # fmt: skip
        self.jwks = Counter(
            "eventlive_jwks_fetches",
            "JWKS fetches: the only requests the shim sends to an auth server",
            registry=r,
        )
        self.window_errors = Gauge(
            "eventlive_window_errors",
            "Error answers in the last window, by function, status, SQLSTATE and reason",
            ["window", "function", "status", "sqlstate", "reason"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.window_requests = Gauge(
            "eventlive_window_requests",
            "Answers in the last window, by function",
            ["window", "function"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.counted = (0, 0, 0)  # auth stats published so far (the counters' deltas)
        self.windows: dict[tuple[Gauge, tuple[str, ...]], bool] = {}


class Metrics:
    """Counters and histograms; ``observe`` is the one call per request."""

    def __init__(
        self,
        pool_stats: Callable[[], dict[str, int]],
        auth_stats: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0),
    ) -> None:
        self.started = time.time()
        self.pool_stats = pool_stats
        self.auth_stats = auth_stats
        self.recent_errors = Recent()
        self.recent_requests = Recent()
        self.multiprocess_dir = multiprocess_dir()
        # This worker's metrics; with several workers its values go to the shared
        # directory and ``registry`` reads every worker's from there (module doc).
        self.own = CollectorRegistry(auto_describe=True)
        r = self.own
        self.requests = Counter(
            "eventlive_requests", "HTTP requests", ["route", "function", "status"], registry=r
        )
        self.latency = Histogram(
            "eventlive_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.db_latency = Histogram(
            "eventlive_db_duration_seconds",
            "Database round trip latency",
            ["function"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.unavailable = Counter(
            "eventlive_unavailable", "503 answers by reason", ["reason"], registry=r
        )
        self.rejected_tokens = Counter(
            "eventlive_rejected_tokens", "Tokens refused by reason", ["reason"], registry=r
        )
        self.cache = Counter(
            "eventlive_cache", "GET cache results (hit, shared, miss)", ["result"], registry=r
        )
        self.errors = Counter(
            "eventlive_errors",
            "Error answers by function, status, SQLSTATE (or PostgREST code) and reason",
            ["function", "status", "sqlstate", "reason"],
            registry=r,
        )
        self.entry_batches = Counter(
            "eventlive_entry_batches",
            "track_access batches sent as one statement (eventlive.track_access_batch)",
            registry=r,
        )
        self.entries_batched = Counter(
            "eventlive_entries_batched", "track_access calls those batches carried", registry=r
        )
        self.entry_wait = Histogram(
            "eventlive_entry_wait_seconds",
            "Time a batched track_access call waited in its webinar's queue",
            buckets=_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "eventlive_loop_lag_seconds",
            "How late the worker's event loop ran a timer due every 0.1 s: how long any "
            "request read then waited for its turn of the worker",
            buckets=_BUCKETS,
            registry=r,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._db_children: dict[str, Any] = {}
        self.shared: _Shared | None = None
        if self.multiprocess_dir is None:
            r.register(_PoolCollector(pool_stats))
            r.register(_WindowCollector(self))
            self.registry = r
        else:
            self.shared = _Shared(r)
            self.shared.started.set(self.started)
            self.registry = CollectorRegistry(auto_describe=True)
            multiprocess.MultiProcessCollector(self.registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def observe(self, route: str, function: str, status: int, seconds: float) -> None:
        """Count one finished request (children cached: labels() costs a lock and a hash)."""
        key = (route, function, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(*key), self.latency.labels(route))
        child[0].inc()
        child[1].observe(seconds)
        self.recent_requests.add((function,))

    def observe_db(self, function: str, seconds: float) -> None:
        """The database's share of one call (child cached, as in ``observe``)."""
        child = self._db_children.get(function)
        if child is None:
            child = self._db_children[function] = self.db_latency.labels(function)
        child.observe(seconds)

    def observe_entries(self, waited: list[float]) -> None:
        """One entry batch sent: ``waited`` are its entries' seconds in their queues."""
        self.entry_batches.inc()
        self.entries_batched.inc(len(waited))
        for seconds in waited:
            self.entry_wait.observe(seconds)

    def error(self, function: str, status: int, code: str, reason: str | None) -> None:
        """Count one error answer; every label bounded (see the module doc)."""
        key = (function, str(status), bounded_sqlstate(code), bounded_reason(reason))
        self.errors.labels(*key).inc()
        self.recent_errors.add(key)

    def publish(self) -> None:
        """With several workers: this worker's pool, token cache, JWKS and window figures
        into the shared directory (every second, and before each scrape); else nothing."""
        shared = self.shared
        if shared is None:
            return
        s = self.pool_stats()
        size = s.get("pool_size", 0)
        shared.pool["size"].set(size)
        shared.pool["in_use"].set(size - s.get("pool_available", 0))
        shared.pool["waiting"].set(s.get("requests_waiting", 0))
        now = self.auth_stats()
        hits, misses, fetches = (
            max(0, n - was) for n, was in zip(now, shared.counted, strict=True)
        )
        if hits:
            shared.cache.labels("hit").inc(hits)
        if misses:
            shared.cache.labels("miss").inc(misses)
        if fetches:
            shared.jwks.inc(fetches)
        shared.counted = now
        fresh: dict[tuple[Gauge, tuple[str, ...]], bool] = {}
        for window, seconds in WINDOWS.items():
            for gauge, recent in (
                (shared.window_errors, self.recent_errors),
                (shared.window_requests, self.recent_requests),
            ):
                for key, n in recent.totals(seconds).items():
                    gauge.labels(window, *key).set(n)
                    fresh[(gauge, (window, *key))] = True
        for gauge, labels in shared.windows.keys() - fresh.keys():
            gauge.labels(*labels).set(0)  # its slots expired: no longer counted here
        shared.windows = fresh

    def render(self) -> bytes:
        """The Prometheus text exposition (the node's, with several workers)."""
        if self.multiprocess_dir is not None:
            self.publish()
            sweep_dead(self.multiprocess_dir)
        return generate_latest(self.registry)
