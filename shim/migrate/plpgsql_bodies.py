"""Deploy-time checks of plpgsql bodies with the ``plpgsql_check`` extension.

``check_function_bodies`` validates ``language sql`` bodies when a function is created,
but a plpgsql body is only parsed; the names in its queries are resolved when a
statement first runs. A plpgsql function naming ``registrations.id`` -- the incident's
bug class -- therefore migrates cleanly and fails under load. ``plpgsql_check``
(Debian: ``postgresql-NN-plpgsql-check``; on Supabase an available extension) checks
every statement of a body against the catalog without running it.

- ``eventlive db migrate``: when the extension is available, migrate creates it (in
  schema ``extensions``, as Supabase places extensions; idempotent) and checks every
  plpgsql function a file creates or replaces, inside that file's transaction, after
  the file ran: an error refuses the file (``ApplyError`` naming the function, the line
  in the file and plpgsql_check's message) and the transaction rolls back, so the
  database stays as it was. Warnings do not refuse. When the extension is not available
  (e.g. the PostgreSQL 18 wheel), migrate says once that plpgsql bodies were not checked.
- ``eventlive doctor`` (``shim.doctor.plpgsql``): ``plpgsql-check`` findings for every
  plpgsql function of the checked schemas with an error, when the extension is installed
  in the database (doctor is read-only: it never creates it), else a note.

"Created or replaced by this file": the function's catalog row was written by the
file's transaction (``pg_proc.xmin`` is its xid). Trigger functions are checked against
the table of one of their triggers; a trigger function with no trigger yet is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shim.migrate.errors import ApplyError
from shim.migrate.source import SourceFile

EXTENSION = "plpgsql_check"
SCHEMA = "extensions"  # where migrate creates it (Supabase's place for extensions)
NOT_CHECKED = (
    "plpgsql_check is not available on this server: plpgsql function bodies were not "
    "checked (Debian/Ubuntu: apt-get install postgresql-<major>-plpgsql-check)"
)

Conn = psycopg.Connection[TupleRow]


@dataclass(frozen=True)
class Problem:
    """One error plpgsql_check found in a function body."""

    function: str  # regprocedure text
    source: str  # the body (prosrc), to place ``lineno`` in a file
    lineno: int | None  # line within the body
    sqlstate: str | None
    message: str
    detail: str | None
    query: str | None

    def describe(self) -> str:
        where = f" line {self.lineno}" if self.lineno else ""
        return f"{self.function}{where}: {self.sqlstate or 'error'} {self.message}"


def installed_schema(conn: Conn) -> str | None:
    """The schema holding plpgsql_check in this database, or None."""
    row = conn.execute(
        "select n.nspname from pg_catalog.pg_extension as x"
        " join pg_catalog.pg_namespace as n on n.oid = x.extnamespace"
        " where x.extname = %s",
        (EXTENSION,),
    ).fetchone()
    return str(row[0]) if row else None


def setup_statements(conn: Conn) -> list[sql.Composed]:
    """What ``ensure`` would run in this database: nothing when plpgsql_check is installed
    or not available, else creating its schema and the extension (``db plan`` prints them)."""
    if installed_schema(conn) is not None:
        return []
    if not conn.execute(
        "select 1 from pg_catalog.pg_available_extensions where name = %s", (EXTENSION,)
    ).fetchone():
        return []
    return [
        sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)),
        sql.SQL("create extension if not exists {} with schema {}").format(
            sql.Identifier(EXTENSION), sql.Identifier(SCHEMA)
        ),
    ]


def ensure(conn: Conn) -> str | None:
    """Make plpgsql_check usable (autocommit ``conn``): the schema holding it, or None
    when the server does not have it (or this role may not create it)."""
    statements = setup_statements(conn)
    if statements:
        try:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
        except psycopg.Error:  # e.g. a role that may not create it: migrate says unchecked
            return None
    return installed_schema(conn)


def problems(
    conn: Conn, schema: str, where: sql.Composable, params: dict[str, object]
) -> list[Problem]:
    # Errors only: warnings (unused variables, ...) are advice, not a reason to refuse.
    query = sql.SQL(
        """
        select p.oid::pg_catalog.regprocedure::text, p.prosrc,
               c.lineno, c.sqlstate, c.message, c.detail, c.query
        from pg_catalog.pg_proc as p
        join pg_catalog.pg_language as l on l.oid = p.prolang
        cross join lateral (
            select coalesce(
                (select t.tgrelid from pg_catalog.pg_trigger as t
                 where t.tgfoid = p.oid order by t.tgrelid limit 1), 0) as relid
        ) as trig
        cross join lateral {}.plpgsql_check_function_tb(p.oid, trig.relid) as c
        where l.lanname = 'plpgsql' and p.prokind in ('f', 'p')
          and (p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype or trig.relid <> 0)
          and p.prorettype <> 'pg_catalog.event_trigger'::pg_catalog.regtype
          and c.level = 'error'
          and ({})
        order by 1, c.lineno
        """
    ).format(sql.Identifier(schema), where)
    return [
        Problem(str(fn), str(src), lineno, sqlstate, str(message), detail, q)
        for fn, src, lineno, sqlstate, message, detail, q in conn.execute(query, params)
    ]


def check_file(conn: Conn, schema: str, f: SourceFile) -> None:
    """Inside the file's transaction, after it ran: raise ``ApplyError`` when a plpgsql
    function it created or replaced has an error (the caller's transaction then rolls
    back)."""
    found = problems(
        conn,
        schema,
        sql.SQL(
            "p.xmin::text = pg_catalog.mod(pg_catalog.pg_current_xact_id()::text::bigint, 4294967296)::text"
        ),
        {},
    )
    if not found:
        return
    first = found[0]
    line = _file_line(f.text, first)
    where = f"{f.label}, line {line}" if line else f.label
    parts = [f"migration failed in {where}: plpgsql_check: {first.describe()}"]
    for label, value in (("detail", first.detail), ("query", first.query)):
        if value:
            parts.append(f"  {label}: {value.strip()}")
    if line is not None:
        parts.append(f"  {line} | {f.text.splitlines()[line - 1]}")
    parts += [f"  also: {p.describe()}" for p in found[1:]]
    parts.append(
        f"{f.label} was not recorded (its transaction was rolled back); nothing after it ran."
    )
    raise ApplyError(
        "\n".join(parts),
        label=f.label,
        line=line,
        column=None,
        sqlstate=first.sqlstate,
        pg_message=first.describe(),
    )


def _file_line(text: str, problem: Problem) -> int | None:
    """The line of ``text`` where the body's line ``problem.lineno`` is."""
    at = text.find(problem.source) if problem.source.strip() else -1
    if at < 0 or not problem.lineno:
        return None
    return text.count("\n", 0, at) + problem.lineno
