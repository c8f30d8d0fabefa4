"""What the shim nodes and the database say: one ``/metrics`` scrape and one ``/ready``
per node (in parallel), and the database's own statistics in one query.

The window: ``--window D`` is rounded up to the smallest window the shim keeps
(``eventlive_window_*``: 1m, 5m, 10m, 15m, 30m, 60m); ``--since T`` is the node's totals
since its start when T is at or before that start (a deploy restarts the nodes), else the
smallest kept window that covers T; neither means "since the deploy" (each node's start).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from shim.console.verdicts import Counts, counts_from
from shim.http.metrics import WINDOWS


class CannotCheckError(Exception):
    """A node or the database could not be read: verify exits 2 with this reason."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``45`` (minutes) -> seconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 90s, 1h)")
    unit = {"s": 1, "m": 60, "h": 3600, None: 60}[m.group(2)]
    return float(m.group(1)) * unit


def parse_since(text: str, now: dt.datetime | None = None) -> float:
    """An ISO 8601 time (naive = UTC) -> Unix time."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO 8601, e.g. 2026-02-07T02:48:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def window_for(seconds: float) -> str:
    """The smallest kept window covering ``seconds``."""
    for name, span in WINDOWS.items():
        if span >= seconds:
            return name
    raise ValueError(
        f"the shim keeps windows up to {max(WINDOWS.values()) // 60} minutes; "
        "use --since with the deploy time for a longer span"
    )


@dataclass
class Node:
    """One shim node: its URL, readiness, start time and parsed metrics."""

    url: str
    ready: bool
    ready_note: str
    started: float
    families: list[Any]

    def counts(self, window: float | None, since: float | None) -> Counts:
        """This node's counts for the requested span (see the module doc)."""
        if window is not None:
            return counts_from(self.families, window_for(window))
        if since is not None and since > self.started:
            age = time.time() - since
            if age <= max(WINDOWS.values()):
                return counts_from(self.families, window_for(age))
        return counts_from(self.families, None)


def scrape(urls: list[str], timeout: float = 5.0) -> list[Node]:
    """Every node's ``/metrics`` and ``/ready``, in parallel; ``CannotCheckError`` on any failure."""
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(lambda u: _scrape_one(u, timeout), urls))


def _scrape_one(url: str, timeout: float) -> Node:
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=timeout) as client:
            metrics = client.get(f"{base}/metrics")
            ready = client.get(f"{base}/ready")
    except httpx.HTTPError as exc:
        raise CannotCheckError(
            f"node {base} unreachable: {exc.__class__.__name__}: {exc}"
        ) from None
    if metrics.status_code != 200:
        raise CannotCheckError(f"node {base}: /metrics answered {metrics.status_code}")
    try:
        families = list(text_string_to_metric_families(metrics.text))
    except ValueError as exc:
        raise CannotCheckError(f"node {base}: /metrics is not Prometheus text: {exc}") from None
    started = next(
        (
            s.value
            for f in families
            for s in f.samples
            if s.name == "eventlive_process_start_time_seconds"
        ),
        None,
    )
    if started is None:
        raise CannotCheckError(f"node {base}: /metrics has no eventlive_process_start_time_seconds")
    note = (
        "ready" if ready.status_code == 200 else f"/ready {ready.status_code}: {ready.text[:120]}"
    )
    return Node(base, ready.status_code == 200, note, started, families)


def database_stats(dsn: str) -> dict[str, Any]:
    """The database's own statistics: reachable, connections, commits, rollbacks, deadlocks."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                """
                select d.numbackends,
                       current_setting('max_connections')::int,
                       (select count(*) from pg_stat_activity
                        where datname = current_database() and state = 'active'),
                       d.xact_commit, d.xact_rollback, d.deadlocks, d.stats_reset,
                       current_setting('server_version')
                from pg_stat_database as d where d.datname = current_database()
                """
            ).fetchone()
    except psycopg.Error as exc:
        raise CannotCheckError(f"database unreachable: {str(exc).strip()}") from None
    assert row is not None
    backends, max_conn, active, commits, rollbacks, deadlocks, reset, version = row
    return {
        "reachable": True,
        "server_version": version,
        "connections": backends,
        "max_connections": max_conn,
        "active": active,
        "commits": commits,
        "rollbacks": rollbacks,
        "deadlocks": deadlocks,
        "stats_since": reset.isoformat() if reset else None,
    }
