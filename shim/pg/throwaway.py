"""Throwaway servers for tests and benchmarks (``TemporaryServer``): a fresh cluster in a
temporary directory, removed by ``stop()``, at exit, or by the next start anywhere when the
process that made it was killed (``reap_orphans``)."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from shim.pg.binaries import (
    PgBinaries,
    find_binaries,
    runnable_binaries,
    traversable_by,
)
from shim.pg.ports import free_port
from shim.pg.server import SUPERUSER, EmbeddedError, Server, server_os_user


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

    def __init__(self, bins: PgBinaries | None = None, *, superuser: str = SUPERUSER) -> None:
        self._bins = bins
        self._superuser = superuser
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

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A libpq URL for ``user`` (default the superuser) on ``dbname`` (trust)."""
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
        server = Server(
            bins, self._root / "data", free_port(), os_user, throwaway=True,
            superuser=self._superuser,
        )  # fmt: skip
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
