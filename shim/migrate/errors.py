"""The errors ``shim.migrate`` raises; each carries the CLI exit code that reports it.

- ``SourceError`` (2): the SQL source is unusable (missing folder, bad file name, not UTF-8).
- ``DriftError`` (2): the database and the source disagree in a way migrate will not
  resolve alone (an applied versioned file changed or vanished, a new one sorts before an
  applied one). Raised before anything is applied.
- ``ApplyError`` (1): a file failed; its transaction (if any) was rolled back and nothing
  after it ran. Names the file, the line and column, and Postgres' message.
- ``LockTimeoutError`` (3): another migrate held the migration lock for longer than allowed.
"""

from __future__ import annotations


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
