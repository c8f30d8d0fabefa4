"""``eventlive serve`` with DATABASE_URL: uvicorn with the app, 2 workers, JSON access
lines on stdout, a clean exit on SIGTERM."""

from __future__ import annotations

import json
from typing import Any

import httpx
from shim_support import SECRET, ShimDb, bearer, token

from shim.testing.process import ShimProcess


def test_serve_runs_uvicorn_workers_with_the_app(shim_db: ShimDb, tmp_path: Any) -> None:
    log_path = tmp_path / "out.log"
    shim = ShimProcess(
        {
            "DATABASE_URL": shim_db.dsn,
            "JWT_SECRET": SECRET,
            "EVENTLIVE_SCHEMAS": "test_api",
            "EVENTLIVE_POOL_MIN": "1",
        },
        workers=2,
        log=log_path,
    )
    try:
        shim.start(timeout=30)
        assert len(shim.pids()) >= 3  # the supervisor and its two workers
        r = httpx.post(
            f"{shim.base}/rpc/whoami", headers={**bearer(token()), "X-Request-Id": "serve-1"}
        )
        assert r.status_code == 200, shim.log_tail()
        assert r.json()["user"] == "authenticated"
    finally:
        assert shim.stop() == 0
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    assert any(line["request_id"] == "serve-1" and line["status"] == 200 for line in lines)
