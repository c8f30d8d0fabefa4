"""Shim settings, read once from the environment (``Settings.from_env``).

Every field has a default so that ``eventlive serve`` works with no configuration; the
table of variables lives in the README (and in ``ENV_DOC`` below, printed by tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_DOC = {
    "DATABASE_URL": "libpq DSN of the login role `authenticator`; absent -> embedded Postgres",
    "EVENTLIVE_SCHEMAS": "exposed schemas, comma separated; the first is the default profile (api)",
    "JWT_SECRET": "HS256 shared secret; absent -> HS256 tokens are rejected",
    "JWKS_FILE": "path of a JWKS (ES256 / RS256 public keys)",
    "JWKS_URL": "URL of a JWKS, fetched at start and on an unknown kid (rate limited)",
    "JWT_AUD": "audience a token's aud must match when it has one (authenticated; empty = off)",
    "JWT_ISS": "issuers a token's iss must name when it has one, comma separated (unset = off)",
    "EVENTLIVE_JWT_LEEWAY": "seconds of clock skew allowed on exp / nbf (30)",
    "EVENTLIVE_JWT_ROLES": "roles a token may claim (anon,authenticated,service_role)",
    "EVENTLIVE_ANON_ROLE": "role of requests without a token (anon)",
    "EVENTLIVE_TOKEN_CACHE": "verified tokens kept in memory, per worker; about 0.5 kB each (300000)",
    "EVENTLIVE_JWKS_REFETCH_SECONDS": "minimum seconds between two JWKS refetches (30)",
    "EVENTLIVE_POOL_MIN": "connections kept open per worker (2)",
    "EVENTLIVE_POOL_MAX": "connections at most per worker (10)",
    "EVENTLIVE_POOL_TIMEOUT": "seconds a request may wait its turn for a connection while the database is busy, before 503 (2; a database that looks down gets its 503 after 0.5)",
    "EVENTLIVE_DB_TIMEOUT": "client-side bound on one database exchange, seconds (10)",
    "EVENTLIVE_STATEMENT_TIMEOUT": "statement_timeout for roles that have none of their own (5s)",
    "EVENTLIVE_MAX_BODY": "largest request body in bytes before 413 (65536)",
    "EVENTLIVE_BODY_TIMEOUT": "seconds a client may take to send its request body before 408 "
    "(10; the hot routes check it in a sweep every eighth of it, so within 11.25)",
    "EVENTLIVE_HEADER_TIMEOUT": "seconds a connection may take to deliver complete request "
    "headers before it is closed (10, checked every eighth of it; 0 = off)",
    "EVENTLIVE_RETRY_AFTER": "Retry-After seconds sent with 503 (1)",
    "EVENTLIVE_LEGACY_SCHEMA": "schema of the /api/webinars/... routes (api)",
    "EVENTLIVE_ACCESS_LOG": "one JSON log line per request: 1 or 0 (1)",
    "EVENTLIVE_CACHE_ENTRIES": "GET results kept in the shared cache, per worker (10000)",
    "EVENTLIVE_PREPARE": "prepare the settings statement per connection: 1 or 0 (1; 0 behind a "
    "transaction-mode pooler such as PgBouncer / Supavisor on port 6543)",
    "EVENTLIVE_COALESCE": "concurrent presence_ping calls of a worker sent as one statement: 1 or 0 (1)",
    "EVENTLIVE_COALESCE_SLOTS": "batches in flight at once per worker before new pings queue for the next (4)",
    "EVENTLIVE_CORS_ORIGINS": "origins browsers may call from, comma separated (*; empty = no CORS)",
    "EVENTLIVE_HOUSEKEEPING_INTERVAL": "seconds between housekeeping ticks: expire sessions, "
    "prune history (60; 0 = off, e.g. when pg_cron runs it)",
    "EVENTLIVE_HISTORY_RETENTION_DAYS": "days access_log (and chat history) is kept (30)",
    "EVENTLIVE_HOUSEKEEPING_BATCH": "rows per housekeeping batch, each its own transaction (1000)",
}


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Immutable configuration of one shim process (see ``ENV_DOC`` for meanings)."""

    database_url: str | None = None
    schemas: tuple[str, ...] = ("api",)
    jwt_secret: str | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    jwt_aud: str | None = "authenticated"
    jwt_iss: tuple[str, ...] = ()
    jwt_leeway: float = 30.0
    jwt_roles: tuple[str, ...] = ("anon", "authenticated", "service_role")
    anon_role: str = "anon"
    token_cache: int = 300_000
    jwks_refetch_seconds: float = 30.0
    pool_min: int = 2
    pool_max: int = 10
    pool_timeout: float = 2.0
    db_timeout: float = 10.0
    statement_timeout: str = "5s"
    max_body: int = 65_536
    body_timeout: float = 10.0
    header_timeout: float = 10.0
    retry_after: int = 1
    legacy_schema: str = "api"
    access_log: bool = True
    cache_entries: int = 10_000
    cors_origins: tuple[str, ...] = ("*",)
    prepare: bool = True
    housekeeping_interval: float = 60.0
    history_retention_days: float = 30.0
    housekeeping_batch: int = 1000
    coalesce: bool = True
    coalesce_slots: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unset variables keep defaults."""
        e = os.environ if env is None else env
        d = cls()

        def get(name: str) -> str | None:
            value = e.get(name)
            return value if value not in (None, "") else None

        aud = e.get("JWT_AUD")
        return cls(
            database_url=get("DATABASE_URL"),
            schemas=_split(e.get("EVENTLIVE_SCHEMAS", "")) or d.schemas,
            jwt_secret=get("JWT_SECRET"),
            jwks_file=get("JWKS_FILE"),
            jwks_url=get("JWKS_URL"),
            jwt_aud=d.jwt_aud if aud is None else (aud or None),
            jwt_iss=_split(e.get("JWT_ISS", "")),
            jwt_leeway=float(get("EVENTLIVE_JWT_LEEWAY") or d.jwt_leeway),
            jwt_roles=_split(e.get("EVENTLIVE_JWT_ROLES", "")) or d.jwt_roles,
            anon_role=get("EVENTLIVE_ANON_ROLE") or d.anon_role,
            token_cache=int(get("EVENTLIVE_TOKEN_CACHE") or d.token_cache),
            jwks_refetch_seconds=float(
                get("EVENTLIVE_JWKS_REFETCH_SECONDS") or d.jwks_refetch_seconds
            ),
            pool_min=int(get("EVENTLIVE_POOL_MIN") or d.pool_min),
            pool_max=int(get("EVENTLIVE_POOL_MAX") or d.pool_max),
            pool_timeout=float(get("EVENTLIVE_POOL_TIMEOUT") or d.pool_timeout),
            db_timeout=float(get("EVENTLIVE_DB_TIMEOUT") or d.db_timeout),
            statement_timeout=get("EVENTLIVE_STATEMENT_TIMEOUT") or d.statement_timeout,
            max_body=int(get("EVENTLIVE_MAX_BODY") or d.max_body),
            body_timeout=float(get("EVENTLIVE_BODY_TIMEOUT") or d.body_timeout),
            header_timeout=float(get("EVENTLIVE_HEADER_TIMEOUT") or d.header_timeout),
            retry_after=int(get("EVENTLIVE_RETRY_AFTER") or d.retry_after),
            legacy_schema=get("EVENTLIVE_LEGACY_SCHEMA") or d.legacy_schema,
            access_log=(get("EVENTLIVE_ACCESS_LOG") or "1") not in ("0", "false", "off"),
            cache_entries=int(get("EVENTLIVE_CACHE_ENTRIES") or d.cache_entries),
            prepare=(get("EVENTLIVE_PREPARE") or "1") not in ("0", "false", "off"),
            housekeeping_interval=float(
                get("EVENTLIVE_HOUSEKEEPING_INTERVAL") or d.housekeeping_interval
            ),
            history_retention_days=float(
                get("EVENTLIVE_HISTORY_RETENTION_DAYS") or d.history_retention_days
            ),
            housekeeping_batch=int(get("EVENTLIVE_HOUSEKEEPING_BATCH") or d.housekeeping_batch),
            coalesce=(get("EVENTLIVE_COALESCE") or "1") not in ("0", "false", "off"),
            coalesce_slots=int(get("EVENTLIVE_COALESCE_SLOTS") or d.coalesce_slots),
            cors_origins=(
                d.cors_origins
                if "EVENTLIVE_CORS_ORIGINS" not in e
                else _split(e["EVENTLIVE_CORS_ORIGINS"])
            ),
        )
