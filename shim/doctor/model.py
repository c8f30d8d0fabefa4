"""What doctor's checks exchange: the ``Scope`` to look at, a ``Check`` and the ``Finding``s
it reports, and the helpers that write objects and fix SQL for people."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow


@dataclass(frozen=True)
class Finding:
    """One violation: ``check`` is the stable id, ``fix`` SQL (or a command) to repair it."""

    check: str
    object: str
    problem: str
    fix: str


@dataclass(frozen=True)
class Scope:
    """What to look at: managed schemas (tables, policies) and exposed API schemas."""

    schemas: tuple[str, ...]
    api_schemas: tuple[str, ...]

    @property
    def all_schemas(self) -> list[str]:
        return list(dict.fromkeys(self.schemas + self.api_schemas))


Conn = psycopg.Connection[TupleRow]
CheckFn = Callable[[Conn, Scope], list[Finding]]


@dataclass(frozen=True)
class Check:
    """A check function and the finding ids it can report."""

    ids: tuple[str, ...]
    run: CheckFn


def render(conn: Conn, statement: sql.Composable) -> str:
    return statement.as_string(conn)


def ident(qualified: tuple[str, ...]) -> sql.Identifier:
    return sql.Identifier(*qualified)


_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")


def display(conn: Conn, name: str) -> str:
    """``name`` for people: bare when plain, double-quoted otherwise (not for SQL)."""
    return name if _PLAIN_NAME.match(name) else render(conn, sql.Identifier(name))
