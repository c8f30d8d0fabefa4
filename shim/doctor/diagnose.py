"""``eventlive doctor``: check a live database against the project's rules.

Works on our own database and on a Supabase project: nothing is required but the schemas
named (``--schema``, default ``eventlive``; ``--api-schema``, default ``api``). Reads only
(every transaction is read-only). The rules and their finding ids are in
``shim.doctor.checks``; this module connects, adds the migration checks and reports.

Migration checks reuse ``shim.migrate.status()`` against the package's own SQL:
``migration-pending`` (a file migrate would apply), ``migration-changed`` (a repeatable
file changed since it was applied), ``migration-drift`` (a versioned file changed after it
was applied, or applied but absent from this build), ``migration-removed`` (a repeatable
file applied once but no longer in the source). A database without our history table
(e.g. a Supabase project managed by other means) gets a note instead.

Exit codes: ``Report.exit_code`` (0, or ``FINDINGS``); ``DoctorError.exit_code`` when it
cannot check.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from shim import migrate as mig
from shim.doctor.checks import CHECKS, Finding, Scope, run_checks
from shim.doctor.plpgsql import PLPGSQL_CHECKS
from shim.doctor.splinter import SPLINTER_CHECKS
from shim.doctor.supabase_checks import SUPABASE_CHECKS
from shim.migrate import history
from shim.migrate.apply import describe_database
from shim.migrate.plpgsql_bodies import NOT_CHECKED, installed_schema

# Our rules, the equivalents of Supabase's linter (splinter), plpgsql bodies, and
# Supabase's own objects left as Supabase made them.
ALL_CHECKS = CHECKS + SPLINTER_CHECKS + PLPGSQL_CHECKS + SUPABASE_CHECKS

__all__ = ["DoctorError", "Finding", "Report", "diagnose"]

APPLICATION_NAME = "eventlive doctor"
CONNECT_TIMEOUT = 10  # seconds, unless the DSN says otherwise
MIGRATION_IDS = ("migration-pending", "migration-changed", "migration-drift", "migration-removed")
_STATE_CHECK = {
    "pending": "migration-pending",
    "changed": "migration-changed",
    "drift": "migration-drift",
    "missing": "migration-drift",
    "removed": "migration-removed",
    "revised": "migration-pending",
}


def _state_finding(label: str, state: str, detail: str) -> Finding:
    name = label.split("/", 1)[-1]
    problem, fix = {
        "pending": (f"not applied yet ({detail})", "eventlive db migrate"),
        "changed": (f"{detail}: migrate re-applies it", "eventlive db migrate"),
        "revised": (f"applied {detail}", "eventlive db migrate"),
        "drift": (
            detail,
            f"restore {label} and put the change in a new migration, or, when the database "
            f"already matches it, eventlive db repair --file {name}",
        ),
        "missing": (detail, "deploy the build the database was migrated with, or a newer one"),
        "removed": (
            f"applied once, {detail}",
            "drop what it created, by a new migration, if it is no longer wanted",
        ),
    }[state]
    return Finding(_STATE_CHECK[state], label, problem, fix)


# ``eventlive doctor`` exit code when it found something.
FINDINGS = 1


class DoctorError(Exception):
    """The database cannot be checked as asked (e.g. a schema named does not exist)."""

    exit_code = 2


@dataclass(frozen=True)
class Report:
    """Findings in check order, notes (checks skipped and why) and what was checked."""

    database: str
    schemas: tuple[str, ...]
    api_schemas: tuple[str, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        """0 clean, 1 findings."""
        return FINDINGS if self.findings else 0

    def text(self) -> str:
        """One block per finding (id and object, problem, fix), notes, a summary line."""
        lines = [
            f"eventlive doctor: {self.database}; schemas {', '.join(self.schemas)}, "
            f"api schemas {', '.join(self.api_schemas)}"
        ]
        for f in self.findings:
            lines += [f"{f.check}  {f.object}", f"  problem: {f.problem}", f"  fix:     {f.fix}"]
        lines += [f"note: {note}" for note in self.notes]
        counts = Counter(f.check for f in self.findings)
        summary = ", ".join(f"{check} {n}" for check, n in counts.items())
        lines.append(
            f"-- {len(self.findings)} finding(s)" + (f": {summary}" if summary else ": all clear")
        )
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        """The report as one JSON object (``findings`` a list of objects)."""
        document = {
            "database": self.database,
            "schemas": list(self.schemas),
            "api_schemas": list(self.api_schemas),
            "findings": [asdict(f) for f in self.findings],
            "notes": list(self.notes),
            "exit_code": self.exit_code,
        }
        return json.dumps(document, indent=2) + "\n"


def diagnose(
    conninfo: str,
    *,
    schemas: Sequence[str] = ("eventlive",),
    api_schemas: Sequence[str] = ("api",),
) -> Report:
    """Run every check against the database at ``conninfo``; changes nothing.

    Raises ``DoctorError`` when a schema named does not exist (a misspelt name must not
    pass as clean); connection failures surface as ``psycopg.OperationalError``.
    """
    scope = Scope(tuple(dict.fromkeys(schemas)), tuple(dict.fromkeys(api_schemas)))
    notes: list[str] = []
    with _connect(conninfo) as conn:
        database = describe_database(conn)
        rows = conn.execute(
            "select s from unnest(%s::text[]) as s"
            " where pg_catalog.to_regnamespace(pg_catalog.quote_ident(s)) is null",
            (scope.all_schemas,),
        ).fetchall()
        if rows:
            missing = ", ".join(str(r[0]) for r in rows)
            raise DoctorError(
                f"schema(s) not found in {database}: {missing} "
                "(name the schemas to check with --schema / --api-schema)"
            )
        findings = run_checks(conn, scope, ALL_CHECKS)
        if installed_schema(conn) is None:
            notes.append(NOT_CHECKED.replace("on this server", "in this database"))
        row = conn.execute("select pg_catalog.to_regclass(%s) is not null", (history.TABLE,))
        has_history = bool((row.fetchone() or (False,))[0])
    if has_history:
        findings += _migration_findings(conninfo)
    else:
        notes.append(
            f"no migration history ({history.TABLE}): migration checks skipped "
            "(a database not managed by `eventlive db migrate`)"
        )
    return Report(database, scope.schemas, scope.api_schemas, tuple(findings), tuple(notes))


def check_ids() -> tuple[str, ...]:
    """Every finding id ``diagnose`` can report, in report order."""
    return tuple(i for check in ALL_CHECKS for i in check.ids) + MIGRATION_IDS


def _migration_findings(conninfo: str) -> list[Finding]:
    result = mig.status(conninfo)
    return [
        _state_finding(entry.label, entry.state, entry.detail)
        for entry in result.entries
        if entry.state in _STATE_CHECK
    ]


def _connect(conninfo: str) -> psycopg.Connection[TupleRow]:
    if "connect_timeout" not in conninfo_to_dict(conninfo):
        conninfo = make_conninfo(conninfo, connect_timeout=CONNECT_TIMEOUT)
    conn = psycopg.connect(conninfo, autocommit=True, application_name=APPLICATION_NAME)
    try:
        # Read-only, and an empty search_path so that catalog text (regclass, regprocedure,
        # deparsed policy expressions) is schema-qualified and cannot be shadowed.
        conn.execute("set default_transaction_read_only = on")
        conn.execute("set search_path = ''")
    except BaseException:
        conn.close()
        raise
    return conn
