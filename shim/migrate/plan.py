"""What is due: the source compared with the database's history, read-only.

Rules (the contract of ``eventlive db migrate``):

- A versioned file (``sql/``) not in the history is due, in version order. One whose
  number is lower than an already applied one is an error (out of order): migrations
  run in order or not at all.
- A versioned file whose recorded checksum is one its text says it revises
  (``-- eventlive: revises sha256 …``, see ``shim.migrate.source``) is a revision: migrate
  records it without running the file again. Any other differing checksum is drift; so is a
  versioned file recorded in the history but absent from the source (the database is
  newer than this code). Drift stops migrate before it applies anything.
- A repeatable file (``functions/``, ``policies/``, ``indexes/``) is due when it is new or
  its checksum changed.
- When any versioned file is due, every repeatable file is due too: a table change can
  drop a policy or an index (table recreated) or invalidate a function body, and
  re-creating them is cheap and idempotent by convention (``create or replace``,
  ``drop policy if exists``, ``if not exists``).
- An index file is also due when an index it creates is invalid (a failed or interrupted
  ``create index concurrently``) or missing; invalid ones are dropped before it runs.
- A repeatable file recorded but no longer in the source is reported, never dropped:
  migrate cannot know what removing it should undo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg.rows import TupleRow

from shim.migrate import history
from shim.migrate.indexes import IndexProblem, find_problems
from shim.migrate.source import Source, SourceFile

APPLIED, PENDING, CHANGED, DRIFT, MISSING, REMOVED, REVISED = (
    "applied",
    "pending",
    "changed",
    "drift",
    "missing",
    "removed",
    "revised",
)


@dataclass(frozen=True)
class Step:
    """A file migrate will run, why, and the invalid indexes to drop first."""

    file: SourceFile
    reason: str
    drop_first: tuple[IndexProblem, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One line of ``status``: a file (or a history row without a file) and its state."""

    label: str
    state: str
    detail: str


# ``eventlive db status`` exit codes beyond 0 (nothing due).
STATUS_PENDING = 1
STATUS_DRIFT = 2


@dataclass(frozen=True)
class Assessment:
    """The whole comparison: per-file entries, the steps due, the revisions to record
    (applied earlier texts of revised versioned files), and the blocking errors."""

    entries: tuple[Entry, ...]
    steps: tuple[Step, ...]
    errors: tuple[str, ...] = field(default=())
    revisions: tuple[SourceFile, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        """0 nothing due, 1 something due, 2 drift (the ``status`` contract)."""
        if self.errors:
            return STATUS_DRIFT
        return STATUS_PENDING if self.steps or self.revisions else 0


def assess(conn: psycopg.Connection[TupleRow], source: Source) -> Assessment:
    """Compare ``source`` with the history in ``conn``'s database. Reads only."""
    recorded = history.latest(conn)
    out = _Collector()
    _versioned(source, recorded, out)
    versioned_due = bool(out.steps)
    for f in (f for f in source.files if not f.versioned):
        _repeatable(conn, f, recorded.get((f.kind, f.name)), versioned_due, out)
    _gone(source, recorded, out)
    return Assessment(tuple(out.entries), tuple(out.steps), tuple(out.errors), tuple(out.revisions))


@dataclass
class _Collector:
    entries: list[Entry] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    revisions: list[SourceFile] = field(default_factory=list)

    def error(self, label: str, state: str, message: str) -> None:
        self.errors.append(message)
        self.entries.append(Entry(label, state, message))


_Recorded = dict[tuple[str, str], history.Recorded]


def _versioned(source: Source, recorded: _Recorded, out: _Collector) -> None:
    versioned = [f for f in source.files if f.versioned]
    newest_applied = max((f.version for f in versioned if (f.kind, f.name) in recorded), default=-1)
    for f in versioned:
        rec = recorded.get((f.kind, f.name))
        if rec is None and f.version < newest_applied:
            out.error(
                f.label,
                DRIFT,
                f"{f.label} is new but sorts before already applied version "
                f"{newest_applied:04d} (out of order): renumber it after the newest "
                "applied migration",
            )
        elif rec is None:
            out.steps.append(Step(f, "new"))
            out.entries.append(Entry(f.label, PENDING, "new"))
        elif rec.checksum != f.checksum and rec.checksum in f.revises:
            out.revisions.append(f)
            out.entries.append(
                Entry(
                    f.label,
                    REVISED,
                    f"{_when(rec)} as an earlier text (sha256 {rec.checksum[:12]}) that this "
                    f"file revises; migrate records sha256 {f.checksum[:12]} without running it",
                )
            )
        elif rec.checksum != f.checksum:
            out.error(
                f.label,
                DRIFT,
                f"{f.label} changed after it was applied ({_when(rec)}; recorded sha256 "
                f"{rec.checksum[:12]}, file now {f.checksum[:12]}). Restore the file and put "
                "the change in a new migration, or accept it with "
                f"`eventlive db repair --file {f.name}`",
            )
        else:
            out.entries.append(Entry(f.label, APPLIED, _when(rec)))


def _repeatable(
    conn: psycopg.Connection[TupleRow],
    f: SourceFile,
    rec: history.Recorded | None,
    versioned_due: bool,
    out: _Collector,
) -> None:
    problems = tuple(find_problems(conn, f.text)) if f.kind == "indexes" else ()
    if rec is None:
        reason, state = "new", PENDING
    elif rec.checksum != f.checksum:
        reason, state = f"changed since {_when(rec)}", CHANGED
    elif versioned_due:
        reason, state = "re-applied after versioned migrations", PENDING
    elif problems:
        reason, state = ", ".join(p.describe() for p in problems), PENDING
    else:
        out.entries.append(Entry(f.label, APPLIED, _when(rec)))
        return
    out.steps.append(Step(f, reason, tuple(p for p in problems if p.invalid)))
    out.entries.append(Entry(f.label, state, reason))


def _gone(source: Source, recorded: _Recorded, out: _Collector) -> None:
    in_source = {(f.kind, f.name) for f in source.files}
    for key, rec in sorted(recorded.items()):
        if key in in_source:
            continue
        if rec.kind == "sql":
            out.error(
                rec.label,
                MISSING,
                f"{rec.label} was applied ({_when(rec)}) but is not in the source "
                f"{source.root}: is this build older than the database?",
            )
        else:
            out.entries.append(
                Entry(rec.label, REMOVED, f"no longer in the source; last {_when(rec)}")
            )


def _when(rec: history.Recorded) -> str:
    verb = {
        "apply": "applied",
        "repair": "repaired",
        "baseline": "baselined",
        "revise": "recorded as revised",
    }[rec.action]
    return f"{verb} {rec.applied_at:%Y-%m-%d %H:%M:%S %Z} by {rec.applied_by}"
