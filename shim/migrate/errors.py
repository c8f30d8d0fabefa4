"""The errors ``shim.migrate`` raises; each carries the CLI exit code that reports it.

- ``SourceError`` (2): the SQL source is unusable (missing folder, bad file name, not UTF-8).
- ``DriftError`` (2): the database and the source disagree in a way migrate will not
  resolve alone (an applied versioned file changed or vanished, a new one sorts before an
  applied one). Raised before anything is applied.
- ``ApplyError`` (1): a file failed; its transaction (if any) was rolled back and nothing
  after it ran. Names the file, the line and column, and Postgres' message.
- ``LockTimeoutError`` (3): another migrate held the migration lock for longer than allowed.
- ``PoolerError`` (2): the connection goes through a transaction-mode pooler, which cannot
  hold the session-level migration lock; refused at once, before anything is applied.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import psycopg


class MigrationError(Exception):
    """Base of every error of ``shim.migrate``; ``str(error)`` is the message for humans."""

    exit_code: int = 2


class SourceError(MigrationError):
    """The SQL source directory or one of its files cannot be used."""


class DriftError(MigrationError):
    """The database's history and the source disagree; nothing was applied."""


class LockTimeoutError(MigrationError):
    """The migration lock stayed taken by another session past the timeout."""

    exit_code = 3


class PoolerError(MigrationError):
    """The connection string reaches a transaction-mode pooler; nothing was applied."""


class ApplyError(MigrationError):
    """A file failed to apply. Attributes locate the failure for tools and tests."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        label: str,
        line: int | None,
        column: int | None,
        sqlstate: str | None,
        pg_message: str,
    ) -> None:
        super().__init__(message)
        self.label = label
        self.line = line
        self.column = column
        self.sqlstate = sqlstate
        self.pg_message = pg_message


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
INSUFFICIENT_PRIVILEGE = "42501"
_DENIED = re.compile(r"permission denied for (\w+) (\S+)")
_NOT_OWNER = re.compile(r"must be (?:the )?owner of (\w+(?: \w+)?) (\S+)")
_SCHEMA_PRIVILEGE = "CREATE (to create objects in it) or USAGE (to use them)"


def privilege_advice(pg_message: str, login: str | None) -> list[str]:
    """For a permission error: the object, the privilege the login lacks, what to do."""
    who = f"the login {login}" if login else "this login"
    if match := _NOT_OWNER.search(pg_message):
        kind, name = match.groups()
        lacks = f"ownership of {kind} {name} (only its owner may alter, comment on or drop it)"
    elif match := _DENIED.search(pg_message):
        kind, name = match.groups()
        privilege = _SCHEMA_PRIVILEGE if kind == "schema" else "the privilege the statement needs"
        lacks = f"{privilege} on {kind} {name}"
    else:
        return []
    return [
        f"  privilege: {who} lacks {lacks}",
        "  what to do: that object belongs to another role (on Supabase, to Supabase "
        "itself), and eventlive's own files never change an object the project did not "
        "create. If the statement is in a file of yours, remove it or guard it by "
        "ownership; if it is in eventlive's, it is a bug: report it with this message. "
        "Do not grant the privilege to make it pass (docs/supabase.md).",
    ]


class Located(Protocol):
    """What an error needs of a source file (``shim.migrate.source.SourceFile``)."""

    @property
    def label(self) -> str: ...

    @property
    def text(self) -> str: ...


def apply_error(
    f: Located,
    exc: psycopg.Error,
    offset: int,
    kept: str,
    *,
    statement: str | None = None,
    login: str | None = None,
) -> ApplyError:
    """An ``ApplyError`` locating ``exc`` in ``f``: Postgres' position when it gives one
    (``offset`` = where the text sent starts in the file), else the failing statement's
    first line when it ran alone (e.g. a unique violation while building an index)."""
    diag = exc.diag
    line = column = None
    position = diag.statement_position
    absolute: int | None = None
    if position and position.isdigit():
        absolute = offset + int(position) - 1
    elif statement is not None:
        noise = _LEADING_NOISE.match(statement)
        absolute = offset + (noise.end() if noise else 0)
    if absolute is not None:
        line = f.text.count("\n", 0, absolute) + 1
        column = absolute - (f.text.rfind("\n", 0, absolute) + 1) + 1
    pg_message = diag.message_primary or str(exc).strip()
    where = f"{f.label}, line {line}, column {column}" if line else f.label
    parts = [f"migration failed in {where}: {exc.sqlstate or 'error'} {pg_message}"]
    for label, value in (
        ("detail", diag.message_detail),
        ("hint", diag.message_hint),
        ("context", diag.context),
    ):
        if value:
            parts.append(f"  {label}: {value.strip()}")
    if line is not None:
        parts.append(f"  {line} | {f.text.splitlines()[line - 1] if f.text else ''}")
    if exc.sqlstate == INSUFFICIENT_PRIVILEGE:
        parts += privilege_advice(pg_message, login)
    parts.append(f"{f.label} was not recorded ({kept}); nothing after it ran.")
    return ApplyError(
        "\n".join(parts),
        label=f.label,
        line=line,
        column=column,
        sqlstate=exc.sqlstate,
        pg_message=pg_message,
    )
