"""The shim as a separate process — ``eventlive serve`` in its own process group on a free
loopback port — the one way tests, benchmarks and fault drills run it.

``ShimProcess(env).start()`` polls ``/ready`` (or ``ready_path``) until it answers 200;
``stop()`` sends SIGTERM (SIGKILL after a grace period), ``kill()`` SIGKILLs the group as an
OOM killer would. The output goes to ``log`` (a temporary file unless one is given).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from shim.pg.ports import free_port


class ShimProcess:
    """``eventlive serve`` with ``env`` added to this process's environment."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 1,
        port: int | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self._own_log = log is None
        if log is None:
            fd, name = tempfile.mkstemp(prefix="eventlive-shim-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "shim.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip

    def start(self, timeout: float = 60.0, ready_path: str = "/ready") -> float:
        """Start and poll ``ready_path`` until it answers 200; the seconds it took."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        delay = 0.02
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base}{ready_path}", timeout=2).status_code == 200:
                    return time.monotonic() - started
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                self.stop()
                raise RuntimeError(f"the shim did not get ready:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def pids(self) -> list[int]:
        """The supervisor and its workers (the process group)."""
        if self.proc is None:
            return []
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the whole process group (supervisor and workers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop, and remove the log if it was ours."""
        self.stop()
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
