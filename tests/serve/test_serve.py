"""``eventlive serve`` with DATABASE_URL: uvicorn with the app, 2 workers, JSON access
lines on stdout, a clean exit on SIGTERM."""

from __future__ import annotations

import contextlib
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


def _scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(sample: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in sample.items() if n == name and labels.items() <= dict(ls).items()
    )


def _workers(shim: ShimProcess) -> list[int]:
    """uvicorn's worker processes (multiprocessing's spawned children, not its tracker)."""
    out = []
    for pid in shim.pids():
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"spawn_main" in fh.read():
                out.append(pid)
    return out


def test_with_two_workers_one_scrape_of_any_worker_is_the_nodes(shim_db: ShimDb) -> None:
    """Counters, histograms and the custom collectors' figures (pool, token cache) summed
    over the workers in every scrape, whichever worker answers; a worker killed and
    restarted keeps its counts but not its pool; the metrics directory goes at exit."""
    import glob
    import os
    import signal
    import tempfile
    import time

    pattern = os.path.join(tempfile.gettempdir(), "eventlive-metrics-*")
    before = set(glob.glob(pattern))
    shim = ShimProcess(
        {
            "DATABASE_URL": shim_db.dsn,
            "JWT_SECRET": SECRET,
            "EVENTLIVE_SCHEMAS": "test_api",
            "EVENTLIVE_POOL_MIN": "2",
            "EVENTLIVE_POOL_MAX": "2",
            "EVENTLIVE_HOUSEKEEPING_INTERVAL": "0",
        },
        workers=2,
    )
    calls = 60
    try:
        shim.start(timeout=30)
        assert set(glob.glob(pattern)) - before, "no private metrics directory"
        for _ in range(calls):  # a new connection each: the kernel spreads them
            r = httpx.post(f"{shim.base}/rpc/whoami", headers=bearer(token()))
            assert r.status_code == 200
        time.sleep(1.5)  # every worker has published its pool and token cache since
        for _ in range(6):  # several scrapes, answered by either worker
            sample = _scrape(shim.base)
            assert _total(sample, "eventlive_requests_total", function="test_api.whoami") == calls
            assert (
                _total(sample, "eventlive_db_duration_seconds_count", function="test_api.whoami")
                == calls
            )
            assert _total(sample, "eventlive_token_cache_total") == calls
            assert _total(sample, "eventlive_pool_size") == 4  # 2 workers x 2 connections
            assert (
                _total(sample, "eventlive_window_requests", window="5m", function="test_api.whoami")
                == calls
            )
        workers = _workers(shim)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # uvicorn starts another worker
            alive = _workers(shim)
            if len(alive) == 2 and workers[0] not in alive:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{shim.base}/ready").status_code == 200:
                        break
            time.sleep(0.2)
        time.sleep(1.5)
        for _ in range(4):
            sample = _scrape(shim.base)
            assert _total(sample, "eventlive_requests_total", function="test_api.whoami") == calls
            assert _total(sample, "eventlive_pool_size") == 4, "a dead worker's pool counted"
    finally:
        assert shim.stop() == 0
        shim.close()
    assert set(glob.glob(pattern)) == before, "the metrics directory was left behind"
