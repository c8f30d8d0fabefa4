"""Index checks: foreign keys without an index led by their columns, and invalid indexes
left by a failed concurrent build."""

from __future__ import annotations

import re

from psycopg import sql

from shim.doctor.model import Conn, Finding, Scope, display, ident, render

_FK_WITHOUT_INDEX = """
select n.nspname, c.relname, k.conname,
       array(select a.attname from unnest(k.conkey) with ordinality as u(attnum, pos)
             join pg_catalog.pg_attribute as a on a.attrelid = k.conrelid and a.attnum = u.attnum
             order by u.pos)::text[],
       k.confrelid::pg_catalog.regclass::text
from pg_catalog.pg_constraint as k
join pg_catalog.pg_class as c on c.oid = k.conrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where k.contype = 'f' and k.conparentid = 0 and n.nspname = any(%(schemas)s)
  and not exists (
      -- an index whose leading columns are the key's columns, in any order
      select from pg_catalog.pg_index as i
      where i.indrelid = k.conrelid and i.indisvalid and i.indpred is null
        and cardinality(k.conkey) <= i.indnkeyatts  -- key columns, not INCLUDE ones
        and (pg_catalog.string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)]
            operator(pg_catalog.@>) k.conkey
        and (pg_catalog.string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)]
            operator(pg_catalog.<@) k.conkey)
order by 1, 2, 3
"""


def check_fk_indexes(conn: Conn, scope: Scope) -> list[Finding]:
    """Every foreign key of the managed schemas has an index led by its columns."""
    findings = []
    for schema, table, constraint, columns, referenced in conn.execute(
        _FK_WITHOUT_INDEX, {"schemas": list(scope.schemas)}
    ):
        index = f"{table}_{'_'.join(columns)}_idx"[:63]
        fix = sql.SQL("create index concurrently if not exists {} on {} ({});").format(
            sql.Identifier(index),
            ident((schema, table)),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
        findings.append(
            Finding(
                "fk-without-index",
                f"constraint {display(conn, constraint)} on {schema}.{table}",
                f"foreign key ({', '.join(columns)}) references {referenced} with no index "
                "led by those columns: every delete or key update there scans this table",
                render(conn, fix),
            )
        )
    return findings


_INVALID_INDEXES = """
select n.nspname, c.relname, pg_catalog.pg_get_indexdef(i.indexrelid)
from pg_catalog.pg_index as i
join pg_catalog.pg_class as c on c.oid = i.indexrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where not i.indisvalid and n.nspname = any(%(schemas)s)
  and not exists (select from pg_catalog.pg_stat_progress_create_index as p
                  where p.index_relid = i.indexrelid)  -- being built right now
order by 1, 2
"""
_CREATE_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX ", re.IGNORECASE)


def check_invalid_indexes(conn: Conn, scope: Scope) -> list[Finding]:
    """No invalid index (left by a failed ``create index concurrently``) in our schemas."""
    findings = []
    for schema, index, definition in conn.execute(_INVALID_INDEXES, {"schemas": scope.all_schemas}):
        rebuild = _CREATE_INDEX.sub(
            lambda m: f"create {(m.group(1) or '').lower()}index concurrently ", definition
        )
        drop = sql.SQL("drop index concurrently if exists {};").format(ident((schema, index)))
        findings.append(
            Finding(
                "invalid-index",
                f"index {schema}.{index}",
                "invalid (a failed or interrupted concurrent build): the planner ignores it "
                "but every write still maintains it",
                f"{render(conn, drop)} {rebuild};  -- a unique one failed on duplicates: "
                "remove them first; for indexes/ files `eventlive db migrate` rebuilds it",
            )
        )
    return findings
