"""``eventlive serve`` with DATABASE_URL: uvicorn with the app, 2 workers, JSON access
lines on stdout, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
from shim_support import SECRET, ShimDb, bearer, free_port, token

pytest_plugins = ["shim_fixtures"]


def test_serve_runs_uvicorn_workers_with_the_app(shim_db: ShimDb, tmp_path: Any) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": shim_db.dsn,
        "JWT_SECRET": SECRET,
        "EVENTLIVE_SCHEMAS": "test_api",
        "EVENTLIVE_POOL_MIN": "1",
    }
    log_path = tmp_path / "out.log"
    with log_path.open("w") as out:
        _serve_and_call(port, env, out, log_path)
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    assert any(line["request_id"] == "serve-1" and line["status"] == 200 for line in lines)


def _serve_and_call(port: int, env: dict[str, str], out: Any, log_path: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shim.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/rpc/whoami",
                    headers={**bearer(token()), "X-Request-Id": "serve-1"},
                )
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert r.json()["user"] == "authenticated"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
