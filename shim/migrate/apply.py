"""Apply the project's SQL to a database: ``migrate``, and its read-only ``plan`` and ``status``.

What is due is decided by ``shim.migrate.plan`` (read its docstring for the rules: order,
drift, when repeatable files are re-applied). How it is applied:

- Everything runs on one autocommit connection holding the session-level migration lock
  (``shim.migrate.lock``): a second migrate waits up to ``lock_timeout`` seconds, then
  raises ``LockTimeoutError``. Drift is checked under the lock, before anything runs.
- Before each file the session is reset (``reset role; reset all``) and
  ``check_function_bodies`` is turned on, so no file inherits another's settings and a
  function naming a missing column fails when it is created.
- ``sql/``, ``functions/``, ``policies/`` files: each in its own transaction together with
  its history row; a failure rolls the file back and stops the run (``ApplyError`` with
  the file, line, column and Postgres' message). Files applied before it stay applied.
  With ``plpgsql_check`` available, the plpgsql functions a file created or replaced are
  checked in that transaction too (``shim.migrate.plpgsql_bodies``); otherwise migrate says once
  that they were not.
- ``indexes/`` files: outside any transaction, statement by statement (``create index
  concurrently`` refuses a transaction block); invalid indexes they name are dropped
  first with ``drop index concurrently``. Their statements must be idempotent (``if not
  exists``); after a failure the whole file runs again next time. To change an index's
  definition, give it a new name (an existing name is skipped by ``if not exists``).

``repair`` and ``baseline`` are the explicit ways to accept what migrate refuses:
``repair`` records the current checksum of drifted versioned files without running them;
``baseline`` records versioned files as present, without running them, in a database
whose schema was made by other means (only while no versioned file is recorded).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow

from shim.migrate import history, lock, plpgsql_bodies
from shim.migrate.errors import (
    ApplyError,
    DriftError,
    LockTimeoutError,
    MigrationError,
    SourceError,
    apply_error,
)
from shim.migrate.indexes import drop_statement, find_problems
from shim.migrate.plan import Assessment, Entry, Step, assess
from shim.migrate.source import SourceFile, load_source
from shim.migrate.split import chunks, split_statements

__all__ = [
    "AppliedFile",
    "ApplyError",
    "DriftError",
    "Entry",
    "LockTimeoutError",
    "MigrateResult",
    "MigrationError",
    "MigrationPlan",
    "SourceError",
    "Status",
    "baseline",
    "migrate",
    "plan",
    "repair",
    "status",
]

APPLICATION_NAME = "eventlive migrate"
# Sent before every file; printed by ``plan`` exactly as run.
SESSION_RESET = "reset role; reset all; set check_function_bodies = on;"
# Index files: give up after a minute of waiting for a lock (e.g. behind a long
# transaction) rather than hang the migration; an abandoned concurrent build leaves an
# invalid index, which the next migrate drops and rebuilds. A file may set its own.
INDEX_LOCK_TIMEOUT = "set lock_timeout = '1min'"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AppliedFile:
    """A file migrate ran: ``label`` is ``kind/name``; ``seconds`` its wall time."""

    label: str
    checksum: str
    reason: str
    seconds: float


@dataclass(frozen=True)
class MigrateResult:
    """What one ``migrate`` call did; ``applied`` is empty when nothing was due."""

    applied: tuple[AppliedFile, ...]
    lock_wait: float
    seconds: float

    @property
    def labels(self) -> list[str]:
        return [a.label for a in self.applied]


@dataclass(frozen=True)
class MigrationPlan:
    """The steps ``migrate`` would run now; ``sql()`` renders them as runnable SQL."""

    source: Path
    steps: tuple[Step, ...]
    revisions: tuple[SourceFile, ...] = ()
    setup: tuple[str, ...] = ()  # run once before the files (plpgsql_check's extension)

    def sql(self) -> str:
        """The SQL migrate would send, file by file, with headers as SQL comments.

        Transactional files appear between ``begin;`` and ``commit;`` as migrate runs
        them; index files appear statement by statement. The bookkeeping (lock, history
        rows) is described in the first comment, not printed.
        """
        out = [
            f"-- eventlive db plan: {len(self.steps)} file(s) to apply from {self.source}",
            "-- migrate also takes advisory lock "
            f"{lock.LOCK_KEY}, creates {history.TABLE} if absent and records each file there.",
        ]
        for f in self.revisions:
            out.append(
                f"-- {f.label}: an earlier text of it was applied; recorded as revised "
                f"(sha256 {f.checksum}), not run again"
            )
        if not self.steps:
            out.append("-- nothing to apply")
        if self.setup:
            out += ["", "-- ==== before the files: plpgsql_check, to check plpgsql bodies"]
            out += [statement + ";" for statement in self.setup]
        for step in self.steps:
            f = step.file
            out += ["", f"-- ==== {f.label} ({step.reason}) sha256 {f.checksum}"]
            if f.transactional:
                out += ["-- runs in its own transaction", "begin;", SESSION_RESET]
                out += [_terminated(f.text), "commit;"]
            else:
                out.append("-- runs outside a transaction, one statement at a time")
                for problem in step.drop_first:
                    out.append(f"-- {problem.describe()}: dropped, then rebuilt below")
                    out.append(drop_statement(problem).as_string() + ";")
                out.append(SESSION_RESET)
                out += [s.text + ";" for s in split_statements(f.text)]
        return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Status:
    """Every file's state (applied, pending, changed, drift, missing, removed).

    ``exit_code``: 0 nothing pending, 1 something pending, 2 drift.
    """

    source: Path
    entries: tuple[Entry, ...]
    errors: tuple[str, ...]
    exit_code: int
    database: str  # describe_database(): what the status is of


CHECKED = (
    "plpgsql function bodies were checked with plpgsql_check (every plpgsql function these "
    "files created or replaced): no error"
)


def migrate(
    conninfo: str,
    *,
    source: Path | None = None,
    lock_timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> MigrateResult:
    """Bring the database at ``conninfo`` up to date with ``source`` (default: ``shim.migrate.paths``).

    Blocks up to ``lock_timeout`` seconds for a concurrent migrate. ``progress`` receives
    one line per event (lock wait, file start, file done with its time). Raises
    ``SourceError``, ``DriftError`` (nothing applied), ``LockTimeoutError`` (nothing applied)
    or ``ApplyError`` (the failing file rolled back, earlier files kept); connection
    failures surface as ``psycopg.OperationalError``.
    """
    say: Progress = progress or _quiet
    src = load_source(source)
    started = time.monotonic()
    applied: list[AppliedFile] = []
    with _locked(conninfo, lock_timeout, say) as (conn, waited):
        say(f"migrating {describe_database(conn)} from {src.root}")
        history.ensure(conn)
        assessment = assess(conn, src)
        _refuse_errors(assessment)
        for f in assessment.revisions:
            history.record(conn, f, "revise")
            say(f"{f.label}: an earlier text was applied; recorded as revised (not run again)")
        if not assessment.steps:
            say("nothing to apply: the database is up to date")
        checker = plpgsql_bodies.ensure(conn) if assessment.steps else None
        if assessment.steps and checker is None:
            say(plpgsql_bodies.NOT_CHECKED)
        for number, step in enumerate(assessment.steps, 1):
            say(f"[{number}/{len(assessment.steps)}] {step.file.label} ({step.reason}) ...")
            seconds = _apply(conn, step, say, checker)
            say(f"[{number}/{len(assessment.steps)}] {step.file.label} applied in {_ms(seconds)}")
            applied.append(AppliedFile(step.file.label, step.file.checksum, step.reason, seconds))
        if checker is not None:
            say(CHECKED)
    total = time.monotonic() - started
    if applied:
        say(f"{len(applied)} file(s) applied in {_ms(total)}")
    return MigrateResult(tuple(applied), waited, total)


def plan(conninfo: str, *, source: Path | None = None) -> MigrationPlan:
    """What ``migrate`` would run now, without running or changing anything.

    Raises ``DriftError`` where migrate would refuse, ``SourceError`` on a bad source.
    """
    src = load_source(source)
    with _read_only(conninfo) as conn:
        assessment = assess(conn, src)
        setup = plpgsql_bodies.setup_statements(conn) if assessment.steps else []
        rendered = tuple(statement.as_string(conn) for statement in setup)
    _refuse_errors(assessment)
    return MigrationPlan(src.root, assessment.steps, assessment.revisions, rendered)


def status(conninfo: str, *, source: Path | None = None) -> Status:
    """Every file's state, read-only; drift is reported in the result, not raised."""
    src = load_source(source)
    with _read_only(conninfo) as conn:
        assessment = assess(conn, src)
        database = describe_database(conn)
    return Status(src.root, assessment.entries, assessment.errors, assessment.exit_code, database)


def repair(
    conninfo: str,
    *,
    source: Path | None = None,
    file: str | None = None,
    lock_timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Accept drifted versioned files as they are now: record their checksum, run nothing.

    ``file`` (``0002_x.sql`` or ``sql/0002_x.sql``) limits the repair to one file. Returns
    the labels repaired (empty when nothing had drifted).
    """
    say: Progress = progress or _quiet
    src = load_source(source)
    wanted: SourceFile | None = None
    if file is not None:
        wanted = src.find(file)
        if wanted is None or not wanted.versioned:
            raise SourceError(f"{file} is not a versioned file of {src.root / 'sql'}")
    repaired: list[str] = []
    with _locked(conninfo, lock_timeout, say) as (conn, _waited):
        history.ensure(conn)
        recorded = history.latest(conn)
        with conn.transaction():
            for f in src.files:
                rec = recorded.get((f.kind, f.name))
                if not f.versioned or rec is None or rec.checksum == f.checksum:
                    continue
                if wanted is not None and f != wanted:
                    continue
                history.record(conn, f, "repair")
                repaired.append(f.label)
                say(f"{f.label}: recorded checksum {f.checksum[:12]} (was {rec.checksum[:12]})")
    if not repaired:
        say("nothing to repair: no versioned file has drifted" + (f" ({file})" if file else ""))
    return repaired


def baseline(
    conninfo: str,
    *,
    source: Path | None = None,
    up_to: int | None = None,
    lock_timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Record versioned files (those numbered ``<= up_to``, default all) as already present.

    For a database whose schema exists but was not made by migrate. Runs nothing; the
    next migrate applies the later versioned files and every repeatable file. Refuses
    (``DriftError``) once any versioned file is recorded. Returns the labels recorded.
    """
    say: Progress = progress or _quiet
    src = load_source(source)
    chosen = [f for f in src.files if f.versioned and (up_to is None or f.version <= up_to)]
    with _locked(conninfo, lock_timeout, say) as (conn, _waited):
        history.ensure(conn)
        if any(kind == "sql" for kind, _name in history.latest(conn)):
            raise DriftError(
                "baseline refused: this database already has versioned migrations recorded "
                f"in {history.TABLE}; use `eventlive db repair` to accept a changed file"
            )
        with conn.transaction():
            for f in chosen:
                history.record(conn, f, "baseline")
                say(f"{f.label}: baselined (not run)")
    return [f.label for f in chosen]


# -- internals ---------------------------------------------------------------------------


def _quiet(_line: str) -> None:
    pass


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def describe_database(conn: psycopg.Connection[TupleRow]) -> str:
    """``database D on H:P as U (PostgreSQL X.Y)``: what a command is talking to."""
    info = conn.info
    major, minor = divmod(info.server_version, 10000)
    return (
        f"database {info.dbname} on {info.host}:{info.port} as {info.user} "
        f"(PostgreSQL {major}.{minor})"
    )


def _refuse_errors(assessment: Assessment) -> None:
    if assessment.errors:
        raise DriftError(
            "refusing to migrate, nothing was applied:\n  " + "\n  ".join(assessment.errors)
        )


def _connect(conninfo: str) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(conninfo, autocommit=True, application_name=APPLICATION_NAME)


@contextmanager
def _locked(
    conninfo: str, timeout: float, say: Progress
) -> Iterator[tuple[psycopg.Connection[TupleRow], float]]:
    """An autocommit connection holding the migration lock, released on exit."""
    with _connect(conninfo) as conn:
        waited = lock.acquire(conn, timeout, say)
        if waited:
            say(f"migration lock acquired after {_ms(waited)}")
        try:
            yield conn, waited
        finally:
            lock.release(conn)


@contextmanager
def _read_only(conninfo: str) -> Iterator[psycopg.Connection[TupleRow]]:
    """A connection on which every transaction is read-only: plan and status change nothing."""
    with _connect(conninfo) as conn:
        conn.execute("set default_transaction_read_only = on")
        yield conn


def _apply(
    conn: psycopg.Connection[TupleRow], step: Step, say: Progress, checker: str | None = None
) -> float:
    """Run one file (see the module docstring); returns its wall time in seconds.
    ``checker``: the schema of plpgsql_check, which then checks the plpgsql functions the
    file created or replaced before it is recorded (``shim.migrate.plpgsql_bodies``)."""
    f = step.file
    started = time.monotonic()
    if f.transactional:
        failing: tuple[int, str | None] = (0, None)  # where the text that failed starts
        try:
            with conn.transaction():
                conn.execute(SESSION_RESET)
                for offset, text in chunks(f.text):
                    failing = (offset, text)
                    conn.execute(text.encode("utf-8"))
                if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
                    raise MigrationError(
                        f"{f.label} ended the transaction migrate runs it in (a commit or "
                        "rollback in the file): what ran before that is committed and the "
                        "file is not recorded. Remove transaction control from the file."
                    )
                if checker is not None:
                    failing = (0, None)
                    plpgsql_bodies.check_file(conn, checker, f)
                elapsed = time.monotonic() - started
                history.record(conn, f, "apply", dt.timedelta(seconds=elapsed))
        except psycopg.Error as exc:
            raise apply_error(
                f,
                exc,
                failing[0],
                "its transaction was rolled back",
                statement=failing[1],
                login=conn.info.user,
            ) from exc
        return elapsed
    # indexes/: outside a transaction. Re-check invalid indexes under the lock.
    for problem in find_problems(conn, f.text):
        if problem.invalid:
            say(f"  dropping {problem.describe()} (left by a failed build); rebuilding")
            conn.execute(drop_statement(problem))
    conn.execute(SESSION_RESET)
    conn.execute(INDEX_LOCK_TIMEOUT)
    for statement in split_statements(f.text):
        try:
            conn.execute(statement.text.encode("utf-8"))
        except psycopg.Error as exc:
            raise apply_error(
                f,
                exc,
                statement.offset,
                "statements before it in the file stay applied",
                statement=statement.text,
                login=conn.info.user,
            ) from exc
    elapsed = time.monotonic() - started
    history.record(conn, f, "apply", dt.timedelta(seconds=elapsed))
    return elapsed


def _terminated(text: str) -> str:
    """``text`` made safe to follow with another statement in a script (plan output)."""
    body = text.rstrip("\n")
    try:
        statements = split_statements(text)
    except ValueError:
        return body
    if statements:
        last = statements[-1]
        if not text[last.offset + len(last.text) :].lstrip().startswith(";"):
            body += "\n;"
    return body
