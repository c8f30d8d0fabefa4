"""One side of ``bench/inproc_ab.py``: the shim's ASGI app of one source tree, in this
process, driven directly (``app(scope, receive, send)``, no socket, no uvicorn), with
the process's own CPU time (``resource.getrusage``) around each block of requests.

Run by ``bench/inproc_ab.py`` as ``python -P bench/inproc_side.py`` with
``PYTHONPATH=<tree>``, so that ``shim`` is that tree's (this file imports nothing from
the repository at module level). The app is the one ``eventlive serve`` builds
(``app_from_env``: ``DATABASE_URL``, ``JWT_SECRET`` and shipped defaults), on uvloop as
under uvicorn, its lifespan run, the ``eventlive`` loggers writing to /dev/null at INFO
(the access line is formatted and written as in production).

Protocol: one JSON object per line. First line in: ``{"viewers": FILE, "webinar": W}``
(``FILE``: ``token session`` per line); out ``{"ready": true}`` once every viewer has
made each call once (token cache full, statements prepared). Then per line in
``{"call": C, "rounds": R, "concurrency": N}``: N tasks each make R requests in turn (a
closed loop of N clients), out ``{"n", "user_us", "sys_us", "wall_s", "statuses",
"batches"}`` of that block (``batches``: statements the heartbeat coalescer and the entry
batcher sent). ``C``: ``ping`` (legacy ``presence/ping``), ``rpc_ping``
(``/rpc/presence_ping``), ``track`` (legacy ``access/track``, a re-confirmation with the
session id), ``rpc_track``, or ``null``: the same client loop against an app that answers
204 at once (what the harness itself costs per request). ``INPROC_CPU``: the one core
this process may run on; ``INPROC_FREEZE``: ``gc.freeze()`` once warm (instruction counts).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _app() -> Any:
    """The tree's ``app_from_env`` (``shim.serve.app`` now, ``shim.http.app`` before
    issue #18's layout)."""
    for name in ("shim.serve.app", "shim.http.app"):
        try:
            return importlib.import_module(name).app_from_env()
        except ModuleNotFoundError:
            continue
    raise SystemExit("no shim app in " + os.environ.get("PYTHONPATH", "?"))


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An HTTP scope as uvicorn makes it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


Request = tuple[dict[str, Any], Callable[[], Awaitable[Message]]]


def _requests(call: str, webinar: int, viewers: list[tuple[str, str]]) -> list[Request]:
    """Each viewer's request for ``call``: its scope and a receive giving its body."""
    legacy = f"/api/webinars/{webinar}"
    path, keys = {
        "ping": (f"{legacy}/presence/ping", ("session_id",)),
        "null": (f"{legacy}/presence/ping", ("session_id",)),
        "rpc_ping": ("/rpc/presence_ping", ("webinar_id", "session_id")),
        "track": (f"{legacy}/access/track", ("session_id",)),
        "rpc_track": ("/rpc/track_access", ("webinar_id", "session_id")),
    }[call]
    out: list[Request] = []
    for token, session in viewers:
        values = {"webinar_id": webinar, "session_id": session}
        body = json.dumps({k: values[k] for k in keys}, separators=(",", ":")).encode()
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"inproc-ab"),
            (b"authorization", b"Bearer " + token.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        message: Message = {"type": "http.request", "body": body, "more_body": False}

        async def receive(message: Message = message) -> Message:
            return message

        out.append((_scope("POST", path, headers), receive))
    return out


async def _null(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _batchers(app: Any) -> list[Any]:
    """The app's batchers that count their statements (``batches``): the heartbeats'
    coalescer (the service's before issue #18, its database's after) and the entry
    batcher where there is one."""
    service = getattr(getattr(app, "state", None), "service", None)
    database = getattr(service, "database", None)
    found = [
        getattr(service, "coalescer", None) or getattr(database, "coalescer", None),
        getattr(database, "entries", None),
    ]
    return [b for b in found if b is not None and isinstance(getattr(b, "batches", None), int)]


async def _block(app: App, requests: list[Request], rounds: int, clients: int) -> dict[str, Any]:
    """``clients`` closed-loop clients, ``rounds`` requests each; CPU of the block, and
    the coalesced statements it sent (``batches``)."""
    statuses: dict[int, int] = {}
    batchers = _batchers(app)
    batches = sum(b.batches for b in batchers)
    n = len(requests)

    async def client(k: int) -> None:
        status = 0

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        for j in range(rounds):
            scope, receive = requests[(k + j * clients) % n]
            await app(dict(scope), receive, send)
            statuses[status] = statuses.get(status, 0) + 1

    gc.collect()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    done = rounds * clients
    return {
        "batches": sum(b.batches for b in batchers) - batches,
        "n": done,
        "user_us": (r1.ru_utime - r0.ru_utime) * 1e6 / done,
        "sys_us": (r1.ru_stime - r0.ru_stime) * 1e6 / done,
        "wall_s": t1 - t0,
        "statuses": statuses,
    }


async def _ready(app: App) -> None:
    """Until ``/ready`` answers 200 (the pool and the catalog are there)."""
    for _ in range(200):
        status = 0

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        await app(_scope("GET", "/ready", [(b"host", b"127.0.0.1:8000")]), receive, send)
        if status == 200:
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the app never became ready")


async def _serve(proto: Any) -> None:
    loop = asyncio.get_running_loop()

    async def line() -> dict[str, Any] | None:
        raw = await loop.run_in_executor(None, sys.stdin.readline)
        return json.loads(raw) if raw.strip() else None

    def say(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    first = await line()
    assert first is not None
    with open(first["viewers"], encoding="ascii") as fh:
        viewers = [(t, s) for t, s in (row.split() for row in fh if row.strip())]
    calls = ("ping", "rpc_ping", "track", "rpc_track", "null")
    requests = {c: _requests(c, first["webinar"], viewers) for c in calls}
    app = _app()
    async with app.router.lifespan_context(app):
        await _ready(app)
        for call in calls[:-1]:  # warm: every token verified once, statements prepared
            await _block(app, requests[call], len(viewers) // 32 + 1, 32)
        if os.environ.get("INPROC_FREEZE"):
            # Counting instructions: what startup left is no longer walked by the
            # collector, so a block's count does not depend on when a full collection
            # falls (blocks of one tree then agree within 0.5 %).
            gc.collect()
            gc.freeze()
        say({"ready": True, "pid": os.getpid()})
        while (command := await line()) is not None:
            target = _null if command["call"] == "null" else app
            say(
                await _block(
                    target, requests[command["call"]], command["rounds"], command["concurrency"]
                )
            )


def main() -> None:
    import uvloop  # noqa: PLC0415 - uvicorn's loop, as under eventlive serve

    # The protocol keeps the real stdout; anything the app prints goes to stderr.
    cpu = os.environ.get("INPROC_CPU")
    if cpu:  # one core of its own: PostgreSQL's backends do not share its caches
        os.sched_setaffinity(0, {int(cpu)})
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sink = logging.FileHandler(os.devnull)
    sink.setFormatter(logging.Formatter("%(message)s"))
    shim_log = logging.getLogger("eventlive")
    shim_log.addHandler(sink)
    shim_log.setLevel(logging.INFO)
    shim_log.propagate = False
    uvloop.run(_serve(proto))


if __name__ == "__main__":
    main()
