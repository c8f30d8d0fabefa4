"""PgBouncer in front of a test server, on loopback: the transaction pooler of a
deployment behind Supavisor / PgBouncer (port 6543 on Supabase), for the tests that prove
the shim works there (``tests/pooler``) and for the bench's pooler scenario.

``PgBouncer(host, port, users).start()`` writes a ``pgbouncer.ini`` (every database
forwarded to ``host:port``, ``pool_mode = transaction`` unless told otherwise, trust for
the ``users`` given, no unix socket) in a private directory and runs Debian's
``pgbouncer`` binary in the foreground; ``stop()`` ends it and removes the directory.
Run by root, it drops to the server's OS user (PgBouncer refuses to run as root).
``find_pgbouncer()`` is None when the binary is absent (``.ci/run`` installs it with apt;
the fixture then skips, saying so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from shim.pg.ports import free_port
from shim.pg.server import server_os_user

CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/bin/pgbouncer")
START_TIMEOUT = 15.0


def find_pgbouncer() -> str | None:
    """The pgbouncer binary (``PATH``, then Debian's ``/usr/sbin``), or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in CANDIDATES if os.access(p, os.X_OK)), None)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One PgBouncer on 127.0.0.1 (see module doc): ``.port``, ``.dsn(base_dsn)``."""

    def __init__(
        self,
        host: str,
        port: int,
        users: dict[str, str | None],
        *,
        mode: str = "transaction",
        pool_size: int = 20,
    ) -> None:
        self.target = (host, port)
        self.users = users
        self.mode = mode
        self.pool_size = pool_size
        self.port = free_port()
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dsn: str) -> str:
        """``dsn`` (any database, any listed user) going through this PgBouncer."""
        return make_conninfo(dsn, host="127.0.0.1", port=str(self.port))

    def ini(self, directory: Path) -> str:
        host, port = self.target
        lines = [
            "[databases]",
            f"* = host={host} port={port}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {directory / 'userlist.txt'}",
            f"pool_mode = {self.mode}",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 1000",
            "server_reset_query = DISCARD ALL",
            "ignore_startup_parameters = extra_float_digits",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
        os_user = server_os_user()
        if os_user is not None:  # run by root: PgBouncer drops to the server's user
            lines.append(f"user = {os_user.pw_name}")
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        binary = find_pgbouncer()
        if binary is None:
            raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.dir = Path(tempfile.mkdtemp(prefix="eventlive-pgbouncer-"))
        self.dir.chmod(0o755)  # readable by the server user PgBouncer drops to
        users = "".join(f"{_quote(u)} {_quote(p or '')}\n" for u, p in self.users.items())
        (self.dir / "userlist.txt").write_text(users)
        (self.dir / "pgbouncer.ini").write_text(self.ini(self.dir))
        for name in ("userlist.txt", "pgbouncer.ini"):
            (self.dir / name).chmod(0o644)
        log = (self.dir / "pgbouncer.log").open("wb")
        with log:
            self.proc = subprocess.Popen(
                [binary, str(self.dir / "pgbouncer.ini")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        user = next(iter(self.users))
        probe = make_conninfo(
            host="127.0.0.1", port=str(self.port), dbname="postgres", user=user,
            connect_timeout="2",
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(probe, autocommit=True, prepare_threshold=None) as conn:
                    conn.execute("select 1")
                return self
            except psycopg.Error:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start:\n{tail}") from None
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        if self.dir is None or not (self.dir / "pgbouncer.log").exists():
            return ""
        text = (self.dir / "pgbouncer.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # SIGINT: PgBouncer's fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def in_front_of(server: Any, authenticator_password: str | None) -> Iterator[PgBouncer]:
    """The ``eventlive_pgbouncer`` fixture's body: PgBouncer in front of the plugin's
    ``EventliveServer`` for its superuser, ``authenticator`` and the migrator; a skip
    saying why when the binary is absent."""
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    users = {
        server.user: server.password,  # first: PgBouncer's start probe connects as it
        "authenticator": authenticator_password,
    }
    users.setdefault(server.migrator, None)
    with PgBouncer(server.host, server.port, users) as bouncer:
        yield bouncer
