"""The embedded PostgreSQL of ``eventlive serve`` / ``eventlive db up|down``: one
project-local dev server whose state (port, data directory) is kept next to its data.

A project under ``/root`` is not searchable by the server user, so as root its data
directory moves to ``/tmp/eventlive-<uid>-<hash of the project path>/pgdata`` (printed on
stderr).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from shim.migrate import migrate as apply_migrations
from shim.pg.binaries import (
    check_private_dir,
    find_binaries,
    runnable_binaries,
    traversable_by,
)
from shim.pg.ports import free_port
from shim.pg.server import Server, server_os_user

PROJECT_DB = "eventlive"
DEFAULT_DATA_DIR = Path(".eventlive") / "pgdata"


def _state_path(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.state.json"


def resolve_data_dir(requested: Path, os_user: pwd.struct_passwd | None) -> Path:
    """Where the cluster for ``requested`` really lives: ``requested`` itself unless the
    server user cannot reach its parent (e.g. a project under /root run as root); then
    ``/tmp/eventlive-<uid>-<hash of requested>/pgdata``, a directory private to us."""
    requested = requested.absolute()
    if os_user is None or traversable_by(requested.parent, os_user):
        return requested
    digest = hashlib.sha256(str(requested).encode()).hexdigest()[:12]
    root = Path("/tmp") / f"eventlive-{os.geteuid()}-{digest}"
    try:
        root.mkdir(mode=0o755)
    except FileExistsError:
        check_private_dir(root)
    return root / "pgdata"


@contextlib.contextmanager
def _project_lock(data_dir: Path) -> Iterator[None]:
    """Serialize up/down on one data directory across processes."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _project_server(data_dir: Path | None) -> tuple[Server, Path]:
    """The project server for ``data_dir`` (default ``./.eventlive/pgdata``) from its
    state file, or a new description if there is none. Returns (server, state path)."""
    requested = (data_dir or DEFAULT_DATA_DIR).absolute()
    state_path = _state_path(requested)
    os_user = server_os_user()
    state: dict[str, object] = {}
    if state_path.exists():
        state = json.loads(state_path.read_text())
    real_dir = Path(str(state.get("data_dir", "")))
    if "data_dir" not in state or not real_dir.exists():  # e.g. /tmp was cleared on reboot
        real_dir = resolve_data_dir(requested, os_user)
    bins = find_binaries()
    if os_user is not None:
        bins = runnable_binaries(bins, os_user)
    port = int(str(state["port"])) if "port" in state else free_port()
    return Server(bins, real_dir, port, os_user), state_path


def _save_state(server: Server, state_path: Path) -> None:
    state = {
        "data_dir": str(server.data_dir),
        "port": server.port,
        "bindir": str(server.bins.bindir),
    }
    state_path.write_text(json.dumps(state, indent=2) + "\n")


def _ensure_database(server: Server, dbname: str) -> None:
    with psycopg.connect(server.admin_dsn(), autocommit=True) as conn:
        if conn.execute("select from pg_database where datname = %s", (dbname,)).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))


def ensure_running(data_dir: Path | None = None, *, migrate: bool = False) -> str:
    """Superuser DSN of the project server's ``eventlive`` database, initializing and
    starting the server first if needed (idempotent; safe to call concurrently).

    With ``migrate=True`` also applies pending migrations (``shim.migrate.migrate``).
    Nothing is printed except, once, where a relocated data directory lives.
    """
    requested = (data_dir or DEFAULT_DATA_DIR).absolute()
    with _project_lock(requested):
        server, state_path = _project_server(requested)
        if server.data_dir != requested and not server.initialized:
            print(
                f"eventlive: {requested.parent} is not reachable by OS user "
                f"{server.os_user.pw_name if server.os_user else '?'}; "
                f"the data directory is {server.data_dir}",
                file=sys.stderr,
            )
        if not server.initialized:
            server.init()
        if not server.is_running():
            server.start()
        _save_state(server, state_path)
        _ensure_database(server, PROJECT_DB)
        dsn = server.admin_dsn(PROJECT_DB)
        if migrate:
            # Progress on stderr: stdout carries only the DSN, for $(eventlive db up).
            apply_migrations(dsn, progress=lambda line: print(line, file=sys.stderr))
    return dsn


def up(data_dir: Path | None = None) -> str:
    """``eventlive db up``: start the project server if needed, migrate it, print and
    return the superuser DSN of its ``eventlive`` database."""
    dsn = ensure_running(data_dir, migrate=True)
    print(dsn)
    return dsn


def down(data_dir: Path | None = None) -> None:
    """``eventlive db down``: stop the project server if it runs; the data is kept."""
    requested = (data_dir or DEFAULT_DATA_DIR).absolute()
    if not _state_path(requested).exists():
        return
    with _project_lock(requested):
        server, _state = _project_server(requested)
        server.stop(mode="fast")
