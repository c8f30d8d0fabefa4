"""``plpgsql-check`` findings: plpgsql functions of the checked schemas whose bodies name
what does not exist, found by the ``plpgsql_check`` extension when the database has it
(the same check ``eventlive db migrate`` runs at deploy time, ``shim.migrate.plpgsql_bodies``)."""

from __future__ import annotations

from psycopg import sql

from shim.doctor.model import Check, Conn, Finding, Scope, render
from shim.migrate.plpgsql_bodies import installed_schema, problems


def check_bodies(conn: Conn, scope: Scope) -> list[Finding]:
    """``eventlive doctor``: plpgsql functions of the checked schemas with an error
    (nothing when the extension is not installed: doctor adds a note)."""
    schema = installed_schema(conn)
    if schema is None:
        return []
    where = sql.SQL(
        "p.pronamespace in (select n.oid from pg_catalog.pg_namespace as n"
        " where n.nspname = any(%(schemas)s))"
    )
    return [
        Finding(
            "plpgsql-check",
            f"function {p.function}",
            f"plpgsql_check{f' (body line {p.lineno})' if p.lineno else ''}: "
            f"{p.sqlstate or 'error'} {p.message}: it fails when that statement runs",
            "-- fix the body and re-run `eventlive db migrate`; check it with: "  # noqa: S608 - composed
            + render(
                conn,
                sql.SQL("select * from {}.plpgsql_check_function({});").format(
                    sql.Identifier(schema), sql.Literal(p.function)
                ),
            ),
        )
        for p in problems(conn, schema, where, {"schemas": scope.all_schemas})
    ]


PLPGSQL_CHECKS: tuple[Check, ...] = (Check(("plpgsql-check",), check_bodies),)
