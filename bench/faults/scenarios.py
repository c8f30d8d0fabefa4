"""The faults: PostgreSQL restarted, frozen, the pool exhausted, clients stalled, the
shim SIGKILLed — each under load, each returning a ``FaultResult``."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from bench.faults.harness import CLIENT_TIMEOUT, Database, Shim, frozen
from bench.faults.load import Load, tokens
from bench.faults.results import FaultResult, summarize
from shim.pg.throwaway import TemporaryServer

# -- scenarios ----------------------------------------------------------------------------


async def _when(load: Load, fraction: float, timeout: float = 60.0) -> None:
    """Wait (polling) until ``fraction`` of the viewers are acknowledged."""
    target = fraction * len(load.tokens)
    deadline = time.monotonic() + timeout
    while len(load.acknowledged) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"load stalled: {len(load.acknowledged)} acknowledged")
        await asyncio.sleep(0.01)


async def postgres_restart(
    server: TemporaryServer,
    db: Database,
    *,
    webinar: int,
    viewers: int,
    rate: float,
    mode: str = "immediate",
    at: float = 0.3,
) -> FaultResult:
    """PostgreSQL stopped (``pg_ctl stop -m mode``) and started again under a paced load."""
    ids = db.webinar(webinar, viewers)
    with Shim(db.dsn, EVENTLIVE_POOL_MIN="4", EVENTLIVE_POOL_MAX="8") as shim:
        load = Load(shim.base, webinar, tokens(ids), rate=rate, deadline=viewers / rate + 60)
        task = asyncio.create_task(load.run())
        await _when(load, at)
        port = server.port
        down = load.now()
        await asyncio.to_thread(server.server.stop, mode=mode)
        await asyncio.to_thread(server.server.start)
        up = load.now()
        if server.port != port:
            raise RuntimeError(f"PostgreSQL came back on port {server.port}, not {port}")
        await task
    return summarize(
        f"postgres_restart[{mode}]",
        load,
        ids,
        db,
        fault_end=up,
        fault_seconds=up - down,
    )


async def _probe(base: str, path: str) -> tuple[int, float]:
    """One GET during a fault: (status or 0 without an answer, seconds)."""
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            status = (await client.get(base + path)).status_code
    except httpx.TransportError:
        status = 0
    return status, time.monotonic() - started


async def postgres_frozen(
    server: TemporaryServer,
    db: Database,
    *,
    webinar: int,
    viewers: int,
    rate: float,
    freeze: float,
    db_timeout: float,
    at: float = 0.3,
) -> FaultResult:
    """Postmaster and backends SIGSTOPped for ``freeze`` seconds under a paced load;
    ``/ready`` probed while frozen."""
    ids = db.webinar(webinar, viewers)
    env = {"EVENTLIVE_POOL_MIN": "4", "EVENTLIVE_POOL_MAX": "8"}
    with Shim(db.dsn, EVENTLIVE_DB_TIMEOUT=str(db_timeout), **env) as shim:
        load = Load(
            shim.base, webinar, tokens(ids), rate=rate, deadline=viewers / rate + freeze + 60
        )
        task = asyncio.create_task(load.run())
        await _when(load, at)
        down = load.now()
        with frozen(server) as processes:
            ready = asyncio.create_task(_probe(shim.base, "/ready"))
            await asyncio.sleep(freeze)  # the fault's duration, not a wait for readiness
        up = load.now()
        ready_status, ready_seconds = await ready
        await task
    return summarize(
        "postgres_frozen",
        load,
        ids,
        db,
        fault_end=up,
        fault_seconds=up - down,
        db_timeout=db_timeout,
        stopped_processes=processes,
        ready_during_freeze=ready_status,
        ready_latency=ready_seconds,
    )


async def pool_exhausted(
    db: Database,
    *,
    webinar: int,
    viewers: int,
    rate: float,
    pool_max: int,
    slow_calls: int,
    slow_seconds: float,
    pool_timeout: float = 0.5,
    at: float = 0.2,
) -> FaultResult:
    """``slow_calls`` calls of ``faults.slow`` hold every pool connection they may (all
    but those kept for heartbeat batches) for ``slow_seconds`` while viewers keep
    entering."""
    ids = db.webinar(webinar, viewers)
    env = {
        "EVENTLIVE_POOL_MIN": str(pool_max),
        "EVENTLIVE_POOL_MAX": str(pool_max),
        "EVENTLIVE_POOL_TIMEOUT": str(pool_timeout),
    }
    with Shim(db.dsn, **env) as shim:
        load = Load(
            shim.base, webinar, tokens(ids), rate=rate, deadline=viewers / rate + slow_seconds + 60
        )
        task = asyncio.create_task(load.run())
        await _when(load, at)
        down = load.now()
        slow_token = tokens([ids[0]])[0]
        headers = {"Authorization": f"Bearer {slow_token}", "Content-Profile": "faults"}
        limits = httpx.Limits(max_connections=slow_calls)
        async with httpx.AsyncClient(
            base_url=shim.base, timeout=CLIENT_TIMEOUT, limits=limits
        ) as client:
            slow = await asyncio.gather(
                *(
                    client.post("/rpc/slow", headers=headers, json={"seconds": slow_seconds})
                    for _ in range(slow_calls)
                )
            )
        up = load.now()
        await task
    return summarize(
        "pool_exhausted",
        load,
        ids,
        db,
        fault_end=up,
        fault_seconds=up - down,
        pool_timeout=pool_timeout,
        slow_outcomes=dict(Counter(r.status_code for r in slow)),
    )


@dataclass
class Stalled:
    """What became of a client that sent half a body: ``answer`` is the status line's code
    (0 when the server closed without one, -1 when still open at the end), after
    ``seconds``."""

    answer: int
    seconds: float


def _stall(base: str, path: str, token: str) -> socket.socket:
    """Headers announcing 1,000 bytes of body, then 10 of them."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        + b'{"client":'
    )
    return sock


def _stall_headers(base: str, path: str) -> socket.socket:
    """Half a request line and headers, then nothing (the classic slowloris)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Le".encode())
    return sock


def _outcome(sock: socket.socket, started: float, bound: float) -> Stalled:
    """Wait up to ``bound`` seconds from ``started`` for an answer or a close."""
    remaining = bound - (time.monotonic() - started)
    try:
        sock.settimeout(max(remaining, 0.01))
        data = sock.recv(4096)
    except TimeoutError:
        return Stalled(-1, time.monotonic() - started)
    except OSError:
        return Stalled(0, time.monotonic() - started)
    finally:
        sock.close()
    if not data:
        return Stalled(0, time.monotonic() - started)
    parts = data.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return Stalled(status, time.monotonic() - started)


async def stalled_clients(
    db: Database,
    *,
    webinar: int,
    viewers: int,
    rate: float,
    stalled: int,
    bound: float,
    body_timeout: float | None = None,
) -> FaultResult:
    """``stalled`` clients send half a body and stop (and as many stop inside their
    headers), on a shim with a single pool connection; viewers enter meanwhile (a stalled
    request holding the connection would turn them into 503s). Each stalled client is
    watched for ``bound`` seconds from the start."""
    ids = db.webinar(webinar, viewers)
    env = {"EVENTLIVE_POOL_MIN": "1", "EVENTLIVE_POOL_MAX": "1"}
    if body_timeout is not None:
        env["EVENTLIVE_BODY_TIMEOUT"] = str(body_timeout)
    with Shim(db.dsn, **env) as shim:
        toks = tokens(ids)
        path = f"/api/webinars/{webinar}/access/track"
        started = time.monotonic()
        socks = [_stall(shim.base, path, toks[0]) for _ in range(stalled)]
        headers_only = [_stall_headers(shim.base, path) for _ in range(stalled)]
        load = Load(shim.base, webinar, toks[1:], rate=rate)
        await load.run()
        served = load.now()
        outcomes = await asyncio.gather(
            *(asyncio.to_thread(_outcome, s, started, bound) for s in socks)
        )
        header_outcomes = await asyncio.gather(
            *(asyncio.to_thread(_outcome, s, started, bound) for s in headers_only)
        )
    answers = Counter(o.answer for o in outcomes)
    return summarize(
        "stalled_clients",
        load,
        ids[1:],
        db,
        fault_end=0.0,
        fault_seconds=served,
        stalled=stalled,
        stalled_answers=dict(answers),
        stalled_max_seconds=max(o.seconds for o in outcomes),
        # Stalled inside the headers: the app never sees them, uvicorn has no timeout for
        # them (-1: still open when we stopped watching). Informational, see README.
        header_stalled_answers=dict(Counter(o.answer for o in header_outcomes)),
    )


async def shim_killed(
    db: Database,
    *,
    webinar: int,
    viewers: int,
    concurrency: int = 32,
    at: float = 0.4,
    workers: int = 1,
) -> FaultResult:
    """A join storm (every viewer at once, ``concurrency`` requests open); the shim's
    process group SIGKILLed when ``at`` of them are acknowledged and started again."""
    ids = db.webinar(webinar, viewers)
    shim = Shim(db.dsn, workers=workers)
    try:
        shim.start()
        load = Load(shim.base, webinar, tokens(ids), concurrency=concurrency, deadline=180)
        task = asyncio.create_task(load.run())
        await _when(load, at)
        down = load.now()
        acked_at_kill = len(load.acknowledged)
        await asyncio.to_thread(shim.kill)
        await asyncio.to_thread(shim.start)
        up = load.now()
        await task
    finally:
        shim.close()
    return summarize(
        "shim_killed",
        load,
        ids,
        db,
        fault_end=up,
        fault_seconds=up - down,
        acked_at_kill=acked_at_kill,
    )
