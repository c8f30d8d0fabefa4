"""Shim settings, read once from the environment (``Settings.from_env``).

Each field is declared once (``shim.envconfig.setting``): its variable, cast, default and
meaning. Every field has a default so that ``eventlive serve`` works with no
configuration; ``ENV_DOC`` below is the README's table of variables, built from the same
declarations (``tests/test_readme.py`` keeps them equal). A value that cannot be read
(``EVENTLIVE_COALESCE=maybe``) is a ``SettingsError`` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shim.envconfig import BOOL, FLOAT, INT, LIST, TEXT, SettingsError, build, env_doc, setting

__all__ = ["ENV_DOC", "Settings", "SettingsError"]


@dataclass(frozen=True)
class Settings:
    """Immutable configuration of one shim process (see ``ENV_DOC`` for meanings)."""

    database_url: str | None = setting(
        "DATABASE_URL",
        TEXT,
        None,
        "libpq DSN of the login role `authenticator`; absent -> embedded Postgres",
    )
    listen_url: str | None = setting(
        "EVENTLIVE_LISTEN_URL",
        TEXT,
        None,
        "libpq DSN of the process's one LISTEN connection (catalog reloads, the live room): "
        "direct or session mode, never a transaction pooler",
        note="unset = DATABASE_URL; behind a transaction pooler the shim warns at start",
    )
    schemas: tuple[str, ...] = setting(
        "EVENTLIVE_SCHEMAS",
        LIST,
        ("api",),
        "exposed schemas, comma separated; the first is the default profile",
    )
    jwt_secret: str | None = setting(
        "JWT_SECRET", TEXT, None, "HS256 shared secret; absent -> HS256 tokens are rejected"
    )
    jwks_file: str | None = setting(
        "JWKS_FILE", TEXT, None, "path of a JWKS (ES256 / RS256 public keys)"
    )
    jwks_url: str | None = setting(
        "JWKS_URL",
        TEXT,
        None,
        "URL of a JWKS, fetched at start and on an unknown kid (rate limited)",
    )
    jwt_aud: str | None = setting(
        "JWT_AUD",
        TEXT,
        "authenticated",
        "audience a token's aud must match when it has one",
        note="empty = off",
        if_empty=None,
    )
    jwt_iss: tuple[str, ...] = setting(
        "JWT_ISS",
        LIST,
        (),
        "issuers a token's iss must name when it has one, comma separated",
        note="unset = off",
    )
    jwt_leeway: float = setting(
        "EVENTLIVE_JWT_LEEWAY", FLOAT, 30.0, "seconds of clock skew allowed on exp / nbf"
    )
    jwt_roles: tuple[str, ...] = setting(
        "EVENTLIVE_JWT_ROLES",
        LIST,
        ("anon", "authenticated", "service_role"),
        "roles a token may claim",
    )
    anon_role: str = setting(
        "EVENTLIVE_ANON_ROLE", TEXT, "anon", "role of requests without a token"
    )
    token_cache: int = setting(
        "EVENTLIVE_TOKEN_CACHE",
        INT,
        600_000,
        "verified tokens kept in memory, per worker (above the 500,000-viewer target "
        "audience); about 0.63 kB each, ~380 MB when full",
    )
    jwks_refetch_seconds: float = setting(
        "EVENTLIVE_JWKS_REFETCH_SECONDS",
        FLOAT,
        30.0,
        "minimum seconds between two JWKS refetches",
    )
    pool_min: int = setting("EVENTLIVE_POOL_MIN", INT, 2, "connections kept open per worker")
    pool_max: int = setting("EVENTLIVE_POOL_MAX", INT, 10, "connections at most per worker")
    pool_timeout: float = setting(
        "EVENTLIVE_POOL_TIMEOUT",
        FLOAT,
        2.0,
        "seconds a request may wait its turn for a connection while the database is busy, "
        "before 503",
        note="a database that looks down gets its 503 after 0.5",
    )
    db_timeout: float = setting(
        "EVENTLIVE_DB_TIMEOUT",
        FLOAT,
        10.0,
        "client-side bound on one database exchange, seconds",
    )
    statement_timeout: str = setting(
        "EVENTLIVE_STATEMENT_TIMEOUT",
        TEXT,
        "5s",
        "statement_timeout for roles that have none of their own",
    )
    max_body: int = setting(
        "EVENTLIVE_MAX_BODY", INT, 65_536, "largest request body in bytes before 413"
    )
    body_timeout: float = setting(
        "EVENTLIVE_BODY_TIMEOUT",
        FLOAT,
        10.0,
        "seconds a client may take to send its request body before 408",
        note="the hot routes check it in a sweep every eighth of it, so within 11.25",
    )
    header_timeout: float = setting(
        "EVENTLIVE_HEADER_TIMEOUT",
        FLOAT,
        10.0,
        "seconds a connection may take to deliver complete request headers before it is closed",
        note="checked every eighth of it; 0 = off",
    )
    retry_after: int = setting("EVENTLIVE_RETRY_AFTER", INT, 1, "Retry-After seconds sent with 503")
    legacy_schema: str = setting(
        "EVENTLIVE_LEGACY_SCHEMA", TEXT, "api", "schema of the /api/webinars/... routes"
    )
    access_log: bool = setting(
        "EVENTLIVE_ACCESS_LOG", BOOL, True, "one JSON log line per request: 1 or 0"
    )
    cache_entries: int = setting(
        "EVENTLIVE_CACHE_ENTRIES",
        INT,
        10_000,
        "GET results kept in the shared cache, per worker",
    )
    prepare: bool = setting(
        "EVENTLIVE_PREPARE",
        BOOL,
        True,
        "prepare the settings statement per connection: 1 or 0",
        note="0 behind a transaction-mode pooler such as PgBouncer / Supavisor on port 6543",
    )
    coalesce: bool = setting(
        "EVENTLIVE_COALESCE",
        BOOL,
        True,
        "concurrent presence_ping calls of a worker sent as one statement: 1 or 0",
    )
    coalesce_slots: int = setting(
        "EVENTLIVE_COALESCE_SLOTS",
        INT,
        4,
        "batches in flight at once per worker before new pings queue for the next",
        note="also the connections kept for them: every other call holds at most "
        "EVENTLIVE_POOL_MAX minus this, at least 1",
    )
    entry_batch: bool = setting(
        "EVENTLIVE_ENTRY_BATCH",
        BOOL,
        True,
        "concurrent track_access calls of a worker sent as one statement, the webinars "
        "served in turn: 1 or 0",
    )
    entry_slots: int = setting(
        "EVENTLIVE_ENTRY_SLOTS",
        INT,
        2,
        "entry batches in flight at once per worker before new entries queue for the next",
    )
    entry_fill: int = setting(
        "EVENTLIVE_ENTRY_FILL",
        INT,
        10,
        "entries that must wait before a second entry batch goes out beside one in flight",
        note="fewer wait for the batch in flight to end; 1 = any entry takes a free slot",
    )
    entry_turn: int = setting(
        "EVENTLIVE_ENTRY_TURN",
        INT,
        2,
        "first entries (track_access without a session id) that may start per event-loop turn "
        "of a worker; the others wait for the next turns, webinars in turn, while heartbeats "
        "and re-confirmations go at once",
        note="0 = no turns (every call starts when it is read)",
    )
    cors_origins: tuple[str, ...] = setting(
        "EVENTLIVE_CORS_ORIGINS",
        LIST,
        ("*",),
        "origins browsers may call from, comma separated",
        note="empty = no CORS",
        if_empty=(),
    )
    housekeeping_interval: float = setting(
        "EVENTLIVE_HOUSEKEEPING_INTERVAL",
        FLOAT,
        60.0,
        "seconds between housekeeping ticks: expire sessions, prune history",
        note="0 = off, e.g. when pg_cron runs it",
    )
    history_retention_days: float = setting(
        "EVENTLIVE_HISTORY_RETENTION_DAYS",
        FLOAT,
        30.0,
        "days access_log (and chat history) is kept",
    )
    housekeeping_batch: int = setting(
        "EVENTLIVE_HOUSEKEEPING_BATCH",
        INT,
        1000,
        "rows per housekeeping batch, each its own transaction",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unset variables keep
        defaults. Raises ``SettingsError`` on a value it cannot read."""
        return build(cls, env)


ENV_DOC = env_doc(Settings)
