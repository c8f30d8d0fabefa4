"""What an ``indexes/`` file builds, and which of those indexes need a rebuild.

A ``create index concurrently`` that fails or is interrupted leaves an INVALID index
behind (``pg_index.indisvalid = false``): the planner ignores it, writes still maintain
it, and ``create index ... if not exists`` would skip it forever. So before an index file
runs, every index it names that is invalid is dropped (``drop index concurrently``) and
the file rebuilds it. Indexes being built right now by another session are left alone.

An index file is also due when an index it names is missing although its table exists
(dropped by hand, or by a migration that recreated the table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shim.migrate.split import split_statements

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)'
_CREATE_INDEX = re.compile(
    rf"""^\s*create\s+(?:unique\s+)?index\s+(?:concurrently\s+)?(?:if\s+not\s+exists\s+)?
        (?:{_IDENT}\s*\.\s*)?(?P<index>{_IDENT})\s+on\s+(?:only\s+)?
        (?P<table>{_IDENT}(?:\s*\.\s*{_IDENT})?)""",
    re.IGNORECASE | re.VERBOSE,
)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class IndexTarget:
    """An index a file creates: its bare name and its table as written (maybe qualified)."""

    name: str
    table: str


@dataclass(frozen=True)
class IndexProblem:
    """An index of a file that is invalid (``schema`` set) or missing."""

    target: IndexTarget
    schema: str
    invalid: bool

    def describe(self) -> str:
        what = "invalid" if self.invalid else "missing"
        return f"{what} index {self.schema}.{self.target.name}"


def index_targets(text: str) -> list[IndexTarget]:
    """The named indexes created by the statements of an index file, in file order."""
    targets: list[IndexTarget] = []
    for statement in split_statements(text):
        match = _CREATE_INDEX.match(_COMMENTS.sub(" ", statement.text))
        if match is None:
            continue
        # An index always lives in its table's schema; keep only its bare name.
        targets.append(IndexTarget(_unquote(match["index"]), match["table"]))
    return targets


def _unquote(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


_PROBE = """
select n.nspname, i.indisvalid,
       exists (select from pg_catalog.pg_stat_progress_create_index p
               where p.index_relid = i.indexrelid) as building
from pg_catalog.pg_class t
join pg_catalog.pg_namespace n on n.oid = t.relnamespace
left join pg_catalog.pg_class c on c.relnamespace = t.relnamespace and c.relname = %(name)s
left join pg_catalog.pg_index i on i.indexrelid = c.oid
where t.oid = pg_catalog.to_regclass(%(table)s)
"""


def find_problems(conn: psycopg.Connection[TupleRow], text: str) -> list[IndexProblem]:
    """Indexes named in ``text`` that are invalid (and not being built) or missing.

    Indexes whose table does not exist are not reported: the file itself will say so.
    Read-only: safe outside the migration lock.
    """
    problems: list[IndexProblem] = []
    for target in index_targets(text):
        row = conn.execute(_PROBE, {"name": target.name, "table": target.table}).fetchone()
        if row is None:
            continue  # table absent
        schema, valid, building = str(row[0]), row[1], bool(row[2])
        if valid is None:
            problems.append(IndexProblem(target, schema, invalid=False))
        elif valid is False and not building:
            problems.append(IndexProblem(target, schema, invalid=True))
    return problems


def drop_statement(problem: IndexProblem) -> sql.Composed:
    """``drop index concurrently if exists schema.name``: must run outside a transaction."""
    return sql.SQL("drop index concurrently if exists {}.{}").format(
        sql.Identifier(problem.schema), sql.Identifier(problem.target.name)
    )
