"""The migration history: ``eventlive_migrations.history``, one row per recorded file.

Append-only. A row says a file (``kind``, ``name``) with ``checksum`` was:

- ``apply``: run by migrate (``duration`` = how long it took);
- ``repair``: accepted as is, without running (``eventlive db repair``);
- ``baseline``: declared already present, without running (``eventlive db baseline``).
- ``revise``: an earlier text of the file was applied and the file now revises it
  (``shim.migrate.source``): recorded by migrate, without running.

``objects`` is the one record of what the project created outside its own schemas (the
stand-ins for Supabase's ``auth`` and ``realtime`` objects on plain PostgreSQL): a
migration creates, alters, comments or drops such an object only when it is missing or
listed here (``sql/0001_supabase_compat.sql`` writes the rows).

The latest row per file is the state migrate compares the source against. A unique
index makes "a versioned file is applied once" a property of the database, not only of
the tool. ``applied_by`` is the database login, ``client`` the OS user and host.
Everything here runs only under the migration lock, except the read-only ``latest``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shim.migrate.source import SourceFile

SCHEMA = "eventlive_migrations"
TABLE = f"{SCHEMA}.history"
OBJECTS = f"{SCHEMA}.objects"
_IDS = {
    "schema": sql.Identifier(SCHEMA),
    "history": sql.Identifier(SCHEMA, "history"),
    "objects": sql.Identifier(SCHEMA, "objects"),
}
ACTIONS = ("apply", "repair", "baseline", "revise")

DDL = sql.SQL("""
create schema if not exists {schema};
comment on schema {schema} is 'Bookkeeping of eventlive db migrate: which SQL files were applied.';
revoke all on schema {schema} from public;
create table if not exists {history} (
    id bigint generated always as identity primary key,
    kind text not null check (kind in ('sql', 'functions', 'policies', 'indexes')),
    name text not null,
    checksum text not null check (checksum ~ '^[0-9a-f]{{64}}$'),
    action text not null default 'apply',
    applied_at timestamptz not null default now(),
    duration interval,
    applied_by text not null default session_user,
    client text
);
comment on table {history} is
    'Append-only log of SQL files applied (or repaired / baselined) by eventlive db migrate; '
    'the latest row per (kind, name) is current.';
create unique index if not exists history_versioned_once on {history} (name)
    where kind = 'sql' and action in ('apply', 'baseline');
create index if not exists history_file on {history} (kind, name, id);
alter table {history} drop constraint if exists history_action_check;
alter table {history} add constraint history_action_check check (action in ({actions}));
create table if not exists {objects} (
    kind text not null check (kind in ('schema', 'table', 'function')),
    identity text not null,
    created_by text not null,
    created_at timestamptz not null default now(),
    primary key (kind, identity)
);
comment on table {objects} is
    'Objects outside eventlive''s own schemas that its migrations created (stand-ins for '
    'Supabase''s auth and realtime objects): the only ones a migration may change there.';
""").format(actions=sql.SQL(", ").join(map(sql.Literal, ACTIONS)), **_IDS)


@dataclass(frozen=True)
class Recorded:
    """The latest history row of one file."""

    kind: str
    name: str
    checksum: str
    action: str
    applied_at: dt.datetime
    applied_by: str

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def ensure(conn: psycopg.Connection[TupleRow]) -> None:
    """Create the history schema and table if absent (in one transaction)."""
    with conn.transaction():
        conn.execute(DDL)


def latest(conn: psycopg.Connection[TupleRow]) -> dict[tuple[str, str], Recorded]:
    """The latest row per (kind, name); empty when the history table does not exist."""
    row = conn.execute("select pg_catalog.to_regclass(%s) is not null", (TABLE,)).fetchone()
    if row is None or not row[0]:
        return {}
    rows = conn.execute(
        sql.SQL(
            """select distinct on (kind, name) kind, name, checksum, action, applied_at, applied_by
               from {history} order by kind, name, id desc"""
        ).format(**_IDS)
    ).fetchall()
    return {(r[0], r[1]): Recorded(*r) for r in rows}


def record(
    conn: psycopg.Connection[TupleRow],
    file: SourceFile,
    action: str,
    duration: dt.timedelta | None = None,
) -> None:
    """Append a row for ``file``; part of the caller's transaction when one is open."""
    conn.execute(
        sql.SQL(
            "insert into {history} (kind, name, checksum, action, duration, client)"
            " values (%s, %s, %s, %s, %s, %s)"
        ).format(**_IDS),
        (file.kind, file.name, file.checksum, action, duration, _client()),
    )


def _client() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"
