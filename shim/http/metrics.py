"""Prometheus metrics of one worker, in a registry of its own (one per app instance).

Requests by route / function / status, latency histograms, pool size / in use /
waiting (read from psycopg_pool at scrape time), 503s by reason, rejected tokens by
reason, cache results. With ``--workers N`` each worker answers for itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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


class Metrics:
    """Counters and histograms; ``observe`` is the one call per request."""

    def __init__(self, pool_stats: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        r.register(_PoolCollector(pool_stats))
        self._children: dict[tuple[str, ...], Any] = {}

    def observe(self, route: str, function: str, status: int, seconds: float) -> None:
        """Count one finished request (children cached: labels() costs a lock and a hash)."""
        key = (route, function, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(*key), self.latency.labels(route))
        child[0].inc()
        child[1].observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
