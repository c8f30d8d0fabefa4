"""The ``eventlive`` command.

Exit codes come from the errors and results that carry them (``ApplyError.exit_code``,
``Assessment.exit_code``, ``Report.exit_code`` ...); ``EXIT_CODES`` below puts them in
words for ``--help`` and the README, so they are stated once.

The database: ``--dsn``, else ``DATABASE_URL``, else the embedded PostgreSQL
(``shim.pg.embedded.ensure_running()``). Output (progress, status table, plan SQL) goes to
stdout, errors to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import psycopg
from psycopg.conninfo import make_conninfo

from shim import doctor
from shim import migrate as mig
from shim.doctor.diagnose import FINDINGS
from shim.migrate.plan import STATUS_DRIFT, STATUS_PENDING
from shim.serve import demo, devtoken, workers
from shim.verify import EXIT_CANNOT_CHECK as VERIFY_CANNOT
from shim.verify import EXIT_FAILED as VERIFY_FAILED
from shim.verify import EXIT_OK as VERIFY_OK
from shim.verify import command as verify_command

ERROR = mig.MigrationError.exit_code  # bad input, drift, no connection: nothing was done
EXIT_CODES = {
    "db migrate": (
        f"0 done / {mig.ApplyError.exit_code} a file failed (rolled back) / "
        f"{ERROR} drift or error, a transaction pooler included (nothing applied) / "
        f"{mig.LockTimeoutError.exit_code} lock timeout (nothing applied)"
    ),
    "db status": f"0 up to date / {STATUS_PENDING} pending / {STATUS_DRIFT} drift or error",
    "db plan": f"0 SQL printed / {ERROR} drift or error",
    "db repair, db baseline": (
        f"0 done / {ERROR} refused or error / {mig.LockTimeoutError.exit_code} lock timeout"
    ),
    "doctor": f"0 no finding / {FINDINGS} findings / {doctor.DoctorError.exit_code} cannot check",
    "verify": (
        f"{VERIFY_OK} all checks OK / {VERIFY_FAILED} a check failed (see the rollback verdict) / "
        f"{VERIFY_CANNOT} could not check (node unreachable, database or credentials refused)"
    ),
    "token": f"0 token printed / {devtoken.REFUSED} {devtoken.REFUSED_MEANS}",
}


def _exits(*commands: str) -> str:
    return "exit codes:\n" + "".join(f"  {c}: {EXIT_CODES[c]}\n" for c in commands)


_EPILOG_DB = (
    "database: --dsn, else $DATABASE_URL, else the embedded PostgreSQL (eventlive db up).\n"
    + _exits("db migrate", "db status", "db plan", "db repair, db baseline")
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eventlive`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return ERROR
    try:
        code: int = args.run(args)
    except mig.MigrationError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except psycopg.Error as exc:
        _err(f"error: database: {str(exc).strip()}")
        return ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventlive",
        description="eventlive-rpc: a Postgres-centric RPC layer and its database tooling.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP shim")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument(
        "--workers",
        type=workers.count,
        default=workers.DEFAULT,
        help="processes: a number, or auto (one per usable core; default: %(default)s)",
    )
    serve.set_defaults(run=_serve)

    _doctor_command(commands)
    verify_command.add(commands, EXIT_CODES["verify"], _exits("verify"), run=_verify)
    devtoken.add_command(
        commands, _exits("token"), secret_path=_dev_secret_path, default_sub=demo.DEMO_VIEWER
    )

    db = commands.add_parser(
        "db",
        help="database: embedded server, migrations",
        description="Manage the database: the embedded server and the migrations.",
        epilog=_EPILOG_DB,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    db.set_defaults(run=lambda _args: _usage(db))

    up = db_commands.add_parser(
        "up", help="start the embedded PostgreSQL, migrate it, print its DSN"
    )
    up.set_defaults(run=_db_up)
    down = db_commands.add_parser("down", help="stop the embedded PostgreSQL")
    down.set_defaults(run=_db_down)

    migrate = _db_command(
        db_commands,
        "migrate",
        "apply pending migrations, then new or changed functions, policies, indexes",
        "Apply sql/NNNN_*.sql once each in order, then (re)apply functions/, policies/ and "
        "indexes/ files that are new or changed (all of them when a versioned file was "
        "applied). Refuses on drift. Prints progress file by file.",
    )
    _lock_option(migrate)
    migrate.set_defaults(run=_db_migrate)

    status = _db_command(
        db_commands,
        "status",
        f"list applied / pending / changed files (exit {EXIT_CODES['db status']})",
        "List every file and its state: applied, pending, changed (repeatable, will be "
        "re-applied), drift (versioned file changed after it was applied), missing "
        "(applied but not in the source), removed (repeatable no longer in the source).",
    )
    status.set_defaults(run=_db_status)

    plan = _db_command(
        db_commands,
        "plan",
        "print the SQL migrate would run; runs nothing",
        "Print exactly the SQL migrate would run now, file by file with headers as SQL "
        "comments. Runs nothing (read-only connection).",
    )
    plan.set_defaults(run=_db_plan)

    repair = _db_command(
        db_commands,
        "repair",
        "accept changed versioned files: record their new checksum without running them",
        "Record the current checksum of versioned files that changed after they were "
        "applied, without running them. Use when the change is deliberate (e.g. a comment "
        "fixed) and the database already matches it.",
    )
    repair.add_argument(
        "--file", metavar="NAME", help="repair only this file (e.g. 0002_core_tables.sql)"
    )
    _lock_option(repair)
    repair.set_defaults(run=_db_repair)

    baseline = _db_command(
        db_commands,
        "baseline",
        "record versioned files as applied without running them (existing schema)",
        "For a database whose schema already exists but was not created by migrate: record "
        "the versioned files as present without running them. Refused once any is recorded.",
    )
    baseline.add_argument(
        "--up-to", type=int, metavar="VERSION", help="only files numbered <= VERSION (default: all)"
    )
    _lock_option(baseline)
    baseline.set_defaults(run=_db_baseline)
    return parser


def _db_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog=_EPILOG_DB,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--dsn", metavar="URL", help="PostgreSQL URL or conninfo string")
    command.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="directory holding sql/ functions/ policies/ indexes/ (default: the packaged SQL)",
    )
    return command


def _doctor_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help=f"check a live database against the rules (exit {EXIT_CODES['doctor']})",
        description=textwrap.fill(
            "Check a live database (ours, or a Supabase project) against the rules: row level "
            "security on every table, policy forms ((select auth.uid()), roles named), "
            "search_path of security definer functions, grants to PUBLIC and anon, foreign "
            "keys without an index, invalid indexes, pending migrations or drift. Prints each "
            "finding with its check id, the object, the problem and the SQL that fixes it. "
            "Reads only.",
            88,
        ),
        epilog="database: --dsn, else $DATABASE_URL, else the embedded PostgreSQL.\n"
        + _exits("doctor"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--dsn", metavar="URL", help="PostgreSQL URL or conninfo string")
    doctor.add_argument(
        "--schema",
        action="append",
        dest="schemas",
        metavar="NAME",
        help="schema whose tables, policies and grants are checked; repeatable (default: eventlive)",
    )
    doctor.add_argument(
        "--api-schema",
        action="append",
        dest="api_schemas",
        metavar="NAME",
        help="exposed schema whose functions are checked; repeatable (default: api)",
    )
    doctor.add_argument(
        "--format", choices=("text", "json"), default="text", help="output (default: %(default)s)"
    )
    doctor.set_defaults(run=_doctor)


def _lock_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for a concurrent migrate to finish (default: %(default)g)",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return ERROR


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _dsn(args: argparse.Namespace) -> str:
    """``--dsn``, else ``DATABASE_URL``, else the embedded server (started if needed)."""
    explicit: str | None = args.dsn or os.environ.get("DATABASE_URL")
    if explicit:
        return explicit
    from shim.pg import embedded  # noqa: PLC0415 - lazy: a server is only for this fallback

    _err("no --dsn and no DATABASE_URL: using the embedded PostgreSQL")
    return embedded.ensure_running()


def _serve(args: argparse.Namespace) -> int:
    # Lazy: db commands must not need the HTTP stack.
    try:
        server = importlib.import_module("shim.serve.server")
    except ModuleNotFoundError as exc:
        _err(f"error: the HTTP shim is not available in this build ({exc})")
        return ERROR
    embedded_default = not os.environ.get("DATABASE_URL")
    if embedded_default:
        _embedded_default(args.host, args.port)
        # uvicorn stops gracefully on SIGTERM, then raises it again: exit 0 through the
        # finally below (which says the database still runs), not death by signal.
        signal.signal(signal.SIGTERM, _exit_0)
    workers.share_secrets(args.workers, os.environ)
    try:
        server.run(args.host, args.port, args.workers)
    finally:
        if embedded_default:
            state = _embedded_state()
            where = f" (port {state[1]}, data in {state[0]})" if state else ""
            _err(
                f"eventlive serve stopped; the embedded PostgreSQL is still running{where}, so"
                " the next serve starts at once. Stop it with: eventlive db down"
            )
    return 0


def _exit_0(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _embedded_state() -> tuple[Path, int] | None:
    """Data directory and port of this directory's embedded PostgreSQL (its state file)."""
    from shim.pg import embedded  # noqa: PLC0415 - lazy: only the embedded default needs it

    state_path = embedded._state_path(embedded.DEFAULT_DATA_DIR.absolute())
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    return Path(state["data_dir"]), int(state["port"])


def _dev_secret_path() -> Path:
    """The embedded default's development JWT secret: ``.eventlive/dev-jwt-secret``."""
    from shim.pg import embedded  # noqa: PLC0415 - lazy: only the embedded default needs it

    return embedded.DEFAULT_DATA_DIR.absolute().parent / "dev-jwt-secret"


def _embedded_default(host: str, port: int) -> None:
    """No DATABASE_URL: start and migrate the embedded PostgreSQL, make the demo webinar
    and development tokens, print the walk-through, and point the app at it as
    ``authenticator`` (the workers read the environment)."""
    from shim.pg import embedded  # noqa: PLC0415 - lazy: only without DATABASE_URL

    admin_dsn = embedded.ensure_running(migrate=True)
    secret_path = _dev_secret_path()
    secret = os.environ.get("JWT_SECRET") or demo.dev_secret(secret_path)
    walkthrough = demo.prepare(admin_dsn, secret)
    os.environ["DATABASE_URL"] = make_conninfo(admin_dsn, user="authenticator")
    os.environ["JWT_SECRET"] = secret
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a comparison
    print(demo.instructions(f"http://{shown}:{port}", walkthrough, secret_path), flush=True)


def _doctor(args: argparse.Namespace) -> int:
    try:
        report = doctor.diagnose(
            _dsn(args),
            schemas=args.schemas or ("eventlive",),
            api_schemas=args.api_schemas or ("api",),
        )
    except doctor.DoctorError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    sys.stdout.write(report.json() if args.format == "json" else report.text())
    return report.exit_code


def _verify(args: argparse.Namespace) -> int:
    return verify_command.run(args, _dsn, _err)


def _db_up(_args: argparse.Namespace) -> int:
    from shim.pg import embedded  # noqa: PLC0415 - lazy: only db up/down need it

    embedded.up()  # prints the DSN on stdout (only it, for `$(eventlive db up)`)
    return 0


def _db_down(_args: argparse.Namespace) -> int:
    from shim.pg import embedded  # noqa: PLC0415 - lazy: only db up/down need it

    state = _embedded_state()
    if state is None:
        _out(f"no embedded PostgreSQL in {embedded.DEFAULT_DATA_DIR.absolute()}: nothing to stop")
        return 0
    data_dir, port = state
    was_running = (data_dir / "postmaster.pid").exists()
    embedded.down()
    if was_running and not (data_dir / "postmaster.pid").exists():
        _out(f"stopped the embedded PostgreSQL on port {port} (data kept in {data_dir})")
    else:
        _out(f"the embedded PostgreSQL (port {port}, data in {data_dir}) was not running")
    return 0


def _db_migrate(args: argparse.Namespace) -> int:
    mig.migrate(_dsn(args), source=args.source, lock_timeout=args.lock_timeout, progress=_out)
    return 0


def _db_status(args: argparse.Namespace) -> int:
    result = mig.status(_dsn(args), source=args.source)
    print(f"status of {result.database}")
    width = max((len(e.label) for e in result.entries), default=0)
    for entry in result.entries:
        print(f"{entry.state:<8} {entry.label:<{width}}  {entry.detail}")
    counts: dict[str, int] = {}
    for entry in result.entries:
        counts[entry.state] = counts.get(entry.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no files"
    print(f"-- {summary} (source {result.source})")
    for error in result.errors:
        _err(f"error: {error}")
    return result.exit_code


def _db_plan(args: argparse.Namespace) -> int:
    sys.stdout.write(mig.plan(_dsn(args), source=args.source).sql())
    return 0


def _db_repair(args: argparse.Namespace) -> int:
    mig.repair(
        _dsn(args),
        source=args.source,
        file=args.file,
        lock_timeout=args.lock_timeout,
        progress=_out,
    )
    return 0


def _db_baseline(args: argparse.Namespace) -> int:
    mig.baseline(
        _dsn(args),
        source=args.source,
        up_to=args.up_to,
        lock_timeout=args.lock_timeout,
        progress=_out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
