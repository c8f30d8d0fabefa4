"""``eventlive verify`` on the command line: its options, and the run that prints the
report in the chosen format and returns its exit code."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from shim.verify import EXIT_CANNOT_CHECK


def add(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    codes: str,
    exits: str,
    *,
    run: Callable[[argparse.Namespace], int],
) -> None:
    """The ``verify`` subcommand; ``run`` is the CLI's entry (it resolves the DSN)."""
    verify = commands.add_parser(
        "verify",
        help=f"answer the post-deploy checklist against live nodes (exit {codes})",
        description=textwrap.fill(
            "Answer the post-deploy checklist against a live deployment: DoD-1 errors from "
            "missing columns/objects by function, DoD-2 409s by function and reason as a rate "
            "(exploding or not), DoD-3 auth-server calls, token cache and rejected tokens "
            "(from every node's /metrics), DoD-4 the flows run for real in a throwaway "
            "webinar (created as service_role, removed afterwards), and the rollback "
            "triggers. The database DSN must be able to create users in auth.users and "
            "delete the webinar (the owner or a superuser).",
            88,
        ),
        epilog="database: --dsn, else $DATABASE_URL, else the embedded PostgreSQL.\n"
        "JWT secret: --jwt-secret-file, else $JWT_SECRET, else .eventlive/dev-jwt-secret.\n"
        + exits,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="BASE",
        help="a shim node, repeatable (default: http://127.0.0.1:8000)",
    )
    verify.add_argument("--dsn", metavar="URL", help="PostgreSQL URL (owner or superuser)")
    span = verify.add_mutually_exclusive_group()
    span.add_argument(
        "--since", metavar="TIME", help="the deploy time, ISO 8601 (default: each node's start)"
    )
    span.add_argument(
        "--window", metavar="DURATION", help="the last DURATION (e.g. 30m; kept up to 60m)"
    )
    verify.add_argument("--jwt-secret-file", type=Path, metavar="PATH", help="HS256 secret")
    verify.add_argument(
        "--no-flows", action="store_true", help="skip DoD-4 (read-only: metrics and statistics)"
    )
    verify.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="output (default: %(default)s)",
    )
    verify.set_defaults(run=run)


def run(
    args: argparse.Namespace,
    dsn: Callable[[argparse.Namespace], str],
    err: Callable[[str], None],
) -> int:
    """Parse the span, find the secret, verify, print; the report's exit code."""
    from shim.verify import nodes, run  # noqa: PLC0415 - lazy: httpx, psycopg, the checks

    try:
        window = nodes.parse_duration(args.window) if args.window else None
        if window is not None:
            nodes.window_for(window)
        since = nodes.parse_since(args.since) if args.since else None
    except ValueError as exc:
        err(f"error: {exc}")
        return EXIT_CANNOT_CHECK
    try:
        secret = _secret(args.jwt_secret_file)
    except OSError as exc:
        err(f"error: cannot read the JWT secret: {exc}")
        return EXIT_CANNOT_CHECK
    report = run.verify(
        args.urls or ["http://127.0.0.1:8000"],
        dsn(args),
        secret,
        window=window,
        since=since,
        flows=not args.no_flows,
    )
    render = {"json": report.json, "markdown": report.markdown}.get(args.format, report.text)
    sys.stdout.write(render())
    if report.cannot_check:
        err(f"error: cannot check: {report.cannot_check}")
    return report.exit_code


def _secret(path: Path | None) -> str | None:
    if path is not None:
        return path.read_text().strip()
    if os.environ.get("JWT_SECRET"):
        return os.environ["JWT_SECRET"]
    from shim.pg import embedded  # noqa: PLC0415 - lazy: only for the embedded default

    dev = embedded.DEFAULT_DATA_DIR.absolute().parent / "dev-jwt-secret"
    return dev.read_text().strip() if dev.exists() else None
