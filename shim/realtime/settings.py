"""Settings of the realtime hub, read once from the environment (``HubSettings.from_env``).

Declared like the shim's (``shim.envconfig.setting``): each variable once, with its cast,
default and meaning; ``ENV_DOC`` is its part of the README's Configuration table
(``tests/test_readme.py`` keeps them equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shim.envconfig import BOOL, FLOAT, INT, TEXT, build, env_doc, setting


@dataclass(frozen=True)
class HubSettings:
    """Immutable configuration of one process's hub (see ``ENV_DOC``)."""

    enabled: bool = setting(
        "EVENTLIVE_REALTIME",
        BOOL,
        True,
        "serve /realtime/v1/... and the SSE events route: 1 or 0",
    )
    pool_size: int = setting(
        "EVENTLIVE_REALTIME_POOL",
        INT,
        4,
        "database connections of the realtime hub per worker, besides its LISTEN connection",
    )
    tick: float = setting(
        "EVENTLIVE_REALTIME_TICK",
        FLOAT,
        1.0,
        "seconds between the hub's safety reads of active webinars",
    )
    queue: int = setting(
        "EVENTLIVE_REALTIME_QUEUE",
        INT,
        2000,
        "frames queued per subscriber before it is disconnected as a laggard",
    )
    max_frame: int = setting(
        "EVENTLIVE_REALTIME_MAX_FRAME",
        INT,
        65_536,
        "largest client frame in bytes; larger ones are refused",
    )
    max_channels: int = setting(
        "EVENTLIVE_REALTIME_MAX_CHANNELS", INT, 100, "channels one connection may join"
    )
    joins_per_second: int = setting(
        "EVENTLIVE_REALTIME_JOINS_PER_SECOND",
        INT,
        10,
        "joins one connection may make per second before they are refused",
    )
    stats_seconds: float = setting(
        "EVENTLIVE_REALTIME_STATS_SECONDS",
        FLOAT,
        5.0,
        "seconds between two access_stats pushes to a webinar's admin topic",
    )
    deny_cache_seconds: float = setting(
        "EVENTLIVE_REALTIME_DENY_CACHE_SECONDS",
        FLOAT,
        5.0,
        "seconds a refused (token, topic) join is answered from memory",
    )
    ticket_secret: str | None = setting(
        "EVENTLIVE_REALTIME_TICKET_SECRET",
        TEXT,
        None,
        "key that signs SSE tickets; set the same value on every node",
        note="random per server: `eventlive serve --workers N` gives its workers one",
    )
    # Not from the environment: SSE keep-alive comments, ticket lifetime.
    keepalive_seconds: float = 15.0
    ticket_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from ``env`` (default ``os.environ``); unset variables keep defaults.
        Raises ``shim.envconfig.SettingsError`` on a value it cannot read."""
        return build(cls, env)


ENV_DOC = env_doc(HubSettings)
