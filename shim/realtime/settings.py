"""Settings of the realtime hub, read once from the environment (``HubSettings.from_env``).

Its variables are in the README's Configuration table like the shim's (``ENV_DOC``;
``tests/test_readme.py`` keeps them equal).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_DOC = {
    "EVENTLIVE_REALTIME": "serve /realtime/v1/... and the SSE events route: 1 or 0 (1)",
    "EVENTLIVE_REALTIME_POOL": "database connections of the realtime hub per worker, besides "
    "its LISTEN connection (4)",
    "EVENTLIVE_REALTIME_TICK": "seconds between the hub's safety reads of active webinars (1)",
    "EVENTLIVE_REALTIME_QUEUE": "frames queued per subscriber before it is disconnected as a "
    "laggard (2000)",
    "EVENTLIVE_REALTIME_MAX_FRAME": "largest client frame in bytes; larger ones are refused (65536)",
    "EVENTLIVE_REALTIME_MAX_CHANNELS": "channels one connection may join (100)",
    "EVENTLIVE_REALTIME_JOINS_PER_SECOND": "joins one connection may make per second before "
    "they are refused (10)",
    "EVENTLIVE_REALTIME_STATS_SECONDS": "seconds between two access_stats pushes to a "
    "webinar's admin topic (5)",
    "EVENTLIVE_REALTIME_DENY_CACHE_SECONDS": "seconds a refused (token, topic) join is "
    "answered from memory (5)",
    "EVENTLIVE_REALTIME_TICKET_SECRET": "key that signs SSE tickets; set the same value on "
    "every node (random per server: `eventlive serve --workers N` gives its workers one)",
}


@dataclass(frozen=True)
class HubSettings:
    """Immutable configuration of one process's hub (see ``ENV_DOC``)."""

    enabled: bool = True
    pool_size: int = 4
    tick: float = 1.0
    queue: int = 2000
    max_frame: int = 65_536
    max_channels: int = 100
    joins_per_second: int = 10
    stats_seconds: float = 5.0
    deny_cache_seconds: float = 5.0
    ticket_secret: str | None = None
    # Not from the environment: SSE keep-alive comments, ticket lifetime.
    keepalive_seconds: float = 15.0
    ticket_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from ``env`` (default ``os.environ``); unset variables keep defaults."""
        e = os.environ if env is None else env
        d = cls()

        def get(name: str) -> str | None:
            value = e.get(name)
            return value if value not in (None, "") else None

        return cls(
            enabled=(get("EVENTLIVE_REALTIME") or "1") not in ("0", "false", "off"),
            pool_size=int(get("EVENTLIVE_REALTIME_POOL") or d.pool_size),
            tick=float(get("EVENTLIVE_REALTIME_TICK") or d.tick),
            queue=int(get("EVENTLIVE_REALTIME_QUEUE") or d.queue),
            max_frame=int(get("EVENTLIVE_REALTIME_MAX_FRAME") or d.max_frame),
            max_channels=int(get("EVENTLIVE_REALTIME_MAX_CHANNELS") or d.max_channels),
            joins_per_second=int(get("EVENTLIVE_REALTIME_JOINS_PER_SECOND") or d.joins_per_second),
            stats_seconds=float(get("EVENTLIVE_REALTIME_STATS_SECONDS") or d.stats_seconds),
            deny_cache_seconds=float(
                get("EVENTLIVE_REALTIME_DENY_CACHE_SECONDS") or d.deny_cache_seconds
            ),
            ticket_secret=get("EVENTLIVE_REALTIME_TICKET_SECRET"),
        )
