"""Helpers for tests that exercise eventlive's SQL as real API roles.

They take a psycopg ``Connection`` -- usually the plugin's ``db`` (logged in as
``authenticator``) or ``admin_conn`` (superuser) fixtures -- and do exactly what the shim
does per request: switch role and set ``request.jwt.claims`` transaction-locally.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from psycopg import Connection, sql
from psycopg.pq import TransactionStatus


def create_user(
    conn: Connection[Any],
    *,
    email: str | None = None,
    meta: Mapping[str, Any] | None = None,
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a user into ``auth.users`` and return its id (random unless given).

    ``conn`` must be allowed to write ``auth.users``: use ``admin_conn`` (superuser,
    autocommit, so the user is visible to ``db`` at once). On a connection that is not
    in autocommit the row is part of the caller's transaction.
    """
    user_id = user_id or uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s::jsonb)",
        (user_id, email, json.dumps(dict(meta)) if meta is not None else None),
    )
    return user_id


@contextmanager
def act_as(
    conn: Connection[Any],
    user_id: uuid.UUID | str | None,
    *,
    role: str = "authenticated",
    claims: Mapping[str, Any] | None = None,
    commit: bool = False,
) -> Iterator[Connection[Any]]:
    """Run the block as ``role`` with JWT claims ``{"sub": user_id, "role": role, **claims}``,
    set with ``set_config(..., true)`` inside a transaction, as the shim and Supabase's
    ``authenticate_as`` do. Yields ``conn``.

    The transaction is **rolled back** at the end of the block unless ``commit=True``
    (then it commits, and the writes are visible to later blocks and to ``admin_conn``).
    An exception in the block always rolls back. If ``conn`` is already inside a
    transaction the block is a savepoint of it; role and claims are restored afterwards
    either way.

    ``conn`` must log in as a role that is a member of ``role`` (the plugin's ``db``
    fixture logs in as ``authenticator``); a superuser connection would bypass RLS.
    """
    payload: dict[str, Any] = {"role": role}
    if user_id is not None:
        payload["sub"] = str(user_id)
    payload.update(claims or {})
    nested = conn.info.transaction_status != TransactionStatus.IDLE
    with conn.transaction(force_rollback=not commit):
        prev = conn.execute(
            "select current_setting('role'),"
            " coalesce(current_setting('request.jwt.claims', true), '')"
        ).fetchone()
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(payload)),
        )
        yield conn
        if commit and nested and prev is not None:
            # A released savepoint keeps SET LOCAL until the outer commit: undo it here.
            conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (prev[0], prev[1]),
            )


@contextmanager
def as_anon(conn: Connection[Any], *, commit: bool = False) -> Iterator[Connection[Any]]:
    """``act_as`` for an anonymous request: role ``anon``, claims ``{"role": "anon"}``."""
    with act_as(conn, None, role="anon", commit=commit) as c:
        yield c


@contextmanager
def as_service_role(conn: Connection[Any], *, commit: bool = False) -> Iterator[Connection[Any]]:
    """``act_as`` for a service key: role ``service_role`` (bypasses RLS, like Supabase)."""
    with act_as(conn, None, role="service_role", commit=commit) as c:
        yield c


def freeze_now(admin_conn: Connection[Any], ts: dt.datetime | str) -> None:
    """Make ``eventlive.now()`` return ``ts`` in this database from now on.

    Our SQL reads the clock only through ``eventlive.now()``; this replaces that function
    (``create or replace`` keeps its grants). Only for a per-test clone database: it
    changes the schema. ``ts`` should be timezone-aware. Takes effect at once on an
    autocommit connection such as ``admin_conn``. ``unfreeze_now`` undoes it.
    """
    literal = (
        sql.Literal(ts)
        if isinstance(ts, dt.datetime)
        else sql.SQL("{}::timestamptz").format(sql.Literal(ts))
    )
    admin_conn.execute(
        sql.SQL(
            "create or replace function eventlive.now() returns timestamptz language sql stable"
            " set search_path = '' as $frozen$ select {} $frozen$"
        ).format(literal)
    )


def unfreeze_now(admin_conn: Connection[Any]) -> None:
    """Restore ``eventlive.now()`` to the transaction's ``pg_catalog.now()``."""
    admin_conn.execute(
        "create or replace function eventlive.now() returns timestamptz language sql stable "
        "set search_path = '' as $$ select pg_catalog.now() $$"
    )


def tables_without_rls(conn: Connection[Any], schema: str = "eventlive") -> tuple[list[str], int]:
    """(tables of ``schema`` without row level security, number of tables in ``schema``)."""
    rows = conn.execute(
        """
        select c.relname, c.relrowsecurity
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        where n.nspname = %s and c.relkind in ('r', 'p')
        order by c.relname
        """,
        (schema,),
    ).fetchall()
    return [f"{schema}.{name}" for name, enabled in rows if not enabled], len(rows)


def assert_rls_enabled(conn: Connection[Any], schema: str = "eventlive") -> None:
    """Fail unless every table of ``schema`` has row level security enabled.

    A schema with no tables fails too, so that a misspelt name cannot pass.
    """
    missing, count = tables_without_rls(conn, schema)
    assert count > 0, f"schema {schema!r} has no tables"
    assert not missing, f"row level security is off on: {', '.join(missing)}"
