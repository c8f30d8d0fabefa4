"""The database vanishes mid-run (a TCP proxy between shim and Postgres is cut): requests
get 503 + Retry-After within a second, the process stays up, and once the database is
back requests succeed again without restarting the shim. Real uvicorn on loopback."""

from __future__ import annotations

import time

import httpx
from shim_support import NO_HUB, ShimDb, TcpProxy, bearer, settings_for, token, uvicorn_server

from shim.serve.app import create_app


def test_database_down_gives_quick_503s_and_recovery_without_restart(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    app = create_app(settings_for(proxy.dsn, pool_min=2, pool_max=2), NO_HUB)
    auth = bearer(token())
    with uvicorn_server(app) as base, httpx.Client(base_url=base, timeout=5) as client:
        assert client.post("/rpc/whoami", headers=auth).status_code == 200
        assert client.get("/ready").status_code == 200
        proxy.cut()
        for _ in range(6):
            started = time.monotonic()
            r = client.post("/rpc/whoami", headers=auth)
            elapsed = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert elapsed < 1.0
            assert r.headers["Retry-After"] == "1"
            assert r.json()["code"] in ("PGRST000", "PGRST003")
        r = client.get("/ready")
        assert r.status_code == 503
        assert client.get("/health").status_code == 200  # the process is alive
        proxy.restore()
        deadline = time.monotonic() + 15
        while True:
            r = client.post("/rpc/whoami", headers=auth)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.status_code == 503
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "authenticated"
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
        assert "eventlive_unavailable_total{reason=" in metrics
