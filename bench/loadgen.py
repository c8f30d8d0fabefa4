"""The Python load generator: HTTP/1.1 keep-alive over raw asyncio streams (uvloop).

Run as its own process (``python -m bench.loadgen SPEC.json OUT.json``) so that it does
not share an interpreter with the orchestrator; on 2 cores it still competes for CPU
with the shim and PostgreSQL, and the report says so.

Modes (``spec["mode"]``):

- ``closed``: ``connections`` workers, each sends its next request when the previous
  answer arrived, for ``duration`` seconds: the maximum throughput. ``descending``:
  viewers last line first instead of shuffled (the steady state's warm-up).
- ``open``: requests are *scheduled* at a fixed ``rate`` for ``duration`` seconds,
  whatever the answers; each takes an idle keep-alive connection or opens one (up to
  ``max_connections``, then it queues). Latency counts from the scheduled time, so an
  overloaded server shows as latency (no coordinated omission). ``mix_track``: that share
  of calls are re-tracks, drawn at random; ``track_every``: every n-th call is one.
- ``storm``: N viewers call track_access at uniform random moments within ``window``
  seconds, a fraction of them twice at the same moment; each then sends its first
  presence_ping ``first_ping_in / compress`` seconds after its answer.
- ``pollers``: admins GET the stats every ``interval`` seconds (staggered) while viewers
  heartbeat at ``rate`` (open model).

``start_at`` (wall-clock epoch seconds, optional): the clock starts then, after setup, so
that two generators run side by side (tenant isolation: a calm webinar's heartbeats in
one process, another webinar's storm in the other).

Every loop is bounded in time (``duration``/``window`` plus a drain deadline) and in
count; targets must be loopback addresses.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import ipaddress
import itertools
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONNECT_TIMEOUT = 5.0
# uvicorn closes a keep-alive connection after 5 s idle; reusing one that old would fail
# (status 0) through no fault of the server, so older idle connections are dropped.
IDLE_MAX = 4.0
REQUEST_TIMEOUT = 30.0  # a request that takes longer counts as status 0 (client timeout)
MAX_REQUESTS = 2_000_000


def check_loopback(host: str) -> None:
    """Refuse any target that is not a loopback address."""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to load {host}: loopback targets only")


# -- HTTP/1.1 ---------------------------------------------------------------------------


def build(method: str, path: str, token: str | None, body: bytes | None = None) -> bytes:
    """Raw request bytes (Host, Authorization, JSON body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + (body or b"")


class Conn:
    """One keep-alive connection; ``request`` returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.open = True
        self.idle_since = time.perf_counter()

    @classmethod
    async def connect(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CONNECT_TIMEOUT
        )
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"connection" and value.strip().lower() == b"close":
                self.open = False
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            return status, b"".join(parts)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.open = False
        self.writer.close()


@dataclass
class Pool:
    """Idle keep-alive connections, opened on demand up to ``limit``."""

    host: str
    port: int
    limit: int
    idle: collections.deque[Conn] = field(default_factory=collections.deque)
    count: int = 0
    waiters: collections.deque[asyncio.Future[Conn | None]] = field(
        default_factory=collections.deque
    )
    opening: set[asyncio.Future[None]] = field(default_factory=set)

    async def get(self) -> Conn | None:
        while self.idle:
            conn = self.idle.pop()
            if time.perf_counter() - conn.idle_since < IDLE_MAX:
                return conn
            conn.close()  # maybe closed by the server already: never reuse it
            self.count -= 1
        if self.count < self.limit:
            self.count += 1
            try:
                return await Conn.connect(self.host, self.port)
            except (OSError, TimeoutError):
                self.count -= 1
                return None
        fut: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return await fut

    def put(self, conn: Conn) -> None:
        if not conn.open:
            conn.close()
            self.count -= 1
            if self.waiters:  # a waiter may open a fresh one
                fut = self.waiters.popleft()
                if not fut.done():
                    self.count += 1
                    task = asyncio.ensure_future(self._open_for(fut))
                    self.opening.add(task)
                    task.add_done_callback(self.opening.discard)
            return
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        conn.idle_since = time.perf_counter()
        self.idle.append(conn)

    async def _open_for(self, fut: asyncio.Future[Conn | None]) -> None:
        try:
            conn: Conn | None = await Conn.connect(self.host, self.port)
        except (OSError, TimeoutError):
            self.count -= 1
            conn = None
        if not fut.done():
            fut.set_result(conn)

    async def prewarm(self, n: int) -> None:
        """Open ``n`` idle connections before the clock starts (as a running service has)."""
        n = min(n, self.limit - self.count)
        conns = await asyncio.gather(
            *(Conn.connect(self.host, self.port) for _ in range(n)), return_exceptions=True
        )
        for conn in conns:
            if isinstance(conn, Conn):
                self.count += 1
                self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Recorder:
    """(kind, scheduled offset s, latency ms, status, generator lag ms) per request;
    status 0 = no answer; lag = how late the generator itself started the request."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.wall0 = time.time()  # the wall clock at t0 (generators started together)
        self.rows: list[tuple[str, float, float, int, float]] = []

    def add(self, kind: str, scheduled: float, status: int, started: float | None = None) -> None:
        now = time.perf_counter()
        lag = 0.0 if started is None else max(0.0, started - scheduled)
        self.rows.append(
            (
                kind,
                round(scheduled - self.t0, 4),
                round((now - scheduled) * 1000, 3),
                status,
                round(lag * 1000, 3),
            )
        )


def start_clock(rec: Recorder, start_at: float | None = None) -> None:
    """Setup done (viewers loaded, connections open): wait for ``start_at`` (wall clock)
    when given, the moment another generator starts too. Freeze what exists out of the GC's
    sight (a full collection rescanning 300,000 viewer rows stalls the loop for tens of
    ms), then no collection at all while measuring: the rows and tasks a run makes still
    triggered collections that paused the generator for 30-110 ms (its lag, seen in
    steady-state probes), which the latencies then counted as the server's. The
    generator is a short-lived process; it exits after writing its result."""
    gc.collect()
    gc.freeze()
    gc.disable()
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    rec.t0 = time.perf_counter()
    rec.wall0 = time.time()


async def send(
    pool: Pool, raw: bytes, rec: Recorder | None = None, kind: str = "", scheduled: float = 0.0
) -> tuple[int, bytes]:
    """One request on a pooled connection; (0, b"") when there was no answer. With
    ``rec``, the outcome is recorded, also when the request is cancelled (status 0)."""
    status, body = 0, b""
    started = time.perf_counter()
    try:
        conn = await pool.get()
        if conn is None:
            return status, body
        try:
            status, body = await asyncio.wait_for(conn.request(raw), REQUEST_TIMEOUT)
        except (
            OSError, asyncio.IncompleteReadError, TimeoutError, ValueError,
            asyncio.LimitOverrunError, asyncio.CancelledError,
        ) as exc:  # fmt: skip
            conn.close()
            pool.put(conn)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return 0, b""
        pool.put(conn)
        return status, body
    finally:
        if rec is not None:
            rec.add(kind, scheduled, status, started)


# -- workloads ----------------------------------------------------------------------------


class Viewers:
    """Pre-entered viewers (token, session id) from a file: ``token session_id`` per line."""

    def __init__(
        self,
        path: str,
        webinar: int,
        *,
        mix_track: float = 0.0,
        seed: int = 1,
        limit: int = 0,
        track_every: int = 0,
        descending: bool = False,
    ) -> None:
        # Only the first ``limit`` lines are read: the steady state's file has 600,000.
        with Path(path).open() as fh:
            lines = itertools.islice(fh, limit) if limit else fh
            self.rows = [line.split() for line in lines if line.strip()]
        self.webinar = webinar
        self.mix_track = mix_track
        self.track_every = track_every
        self.calls = 0
        self.rng = random.Random(seed)  # noqa: S311 - load shaping, not secrets
        self.order = list(range(len(self.rows)))
        if descending:  # last line first (a warm-up: the first lines are the newest cached)
            self.order.reverse()
        else:
            self.rng.shuffle(self.order)
        self.pos = 0

    def next(self) -> tuple[str, bytes]:
        """The next viewer in a shuffled round robin: a ping, or a re-track (mix)."""
        idx = self.order[self.pos]
        self.pos = (self.pos + 1) % len(self.order)
        token, session = self.rows[idx]
        body = json.dumps({"session_id": session}).encode()
        self.calls += 1
        if (
            self.mix_track >= 1.0
            or (self.mix_track and self.rng.random() < self.mix_track)
            or (self.track_every and self.calls % self.track_every == 0)
        ):
            path = f"/api/webinars/{self.webinar}/access/track"
            return "track", build("POST", path, token, body)
        path = f"/api/webinars/{self.webinar}/presence/ping"
        return "ping", build("POST", path, token, body)


def fresh_track(webinar: int, token: str) -> bytes:
    """A new entry (no session id): what a page load sends."""
    return build("POST", f"/api/webinars/{webinar}/access/track", token, b"{}")


async def closed(spec: dict[str, Any], rec: Recorder) -> None:
    mix = 1.0 if spec.get("call") == "track" else spec.get("mix_track", 0.0)
    viewers = Viewers(
        spec["viewers"], spec["webinar"], mix_track=mix, limit=spec.get("limit", 0),
        descending=spec.get("descending", False),
    )  # fmt: skip
    pool = Pool(spec["host"], spec["port"], spec["connections"])
    await pool.prewarm(spec["connections"])
    start_clock(rec)
    deadline = rec.t0 + spec["duration"]
    # ``count``: stop after that many requests (a warm-up visits each viewer once)
    budget = [min(spec.get("count", MAX_REQUESTS), MAX_REQUESTS)]

    async def worker() -> None:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            label, raw = viewers.next()
            await send(pool, raw, rec, label, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    pool.close()


async def _open_schedule(
    rate: float,
    duration: float,
    t0: float,
    start_one: Any,
) -> list[asyncio.Task[None]]:
    """Call ``start_one(i, scheduled)`` at t0 + i/rate until ``duration``; returns tasks."""
    tasks: list[asyncio.Task[None]] = []
    total = min(int(rate * duration), MAX_REQUESTS)
    i = 0
    while i < total:
        now = time.perf_counter()
        due = t0 + i / rate
        if due > now:
            # uvloop runs a sleep under 0.5 ms as a busy loop: above ~2,000 requests/s the
            # generator spun a whole core of the two it shares with the shim and
            # PostgreSQL. At least 1 ms: requests due meanwhile start together, their
            # latency still counted from their scheduled time (and their lag reported).
            await asyncio.sleep(min(max(due - now, 0.001), 0.05))
            continue
        while i < total and t0 + i / rate <= now:
            tasks.append(asyncio.create_task(start_one(i, t0 + i / rate)))
            i += 1
    return tasks


async def open_model(spec: dict[str, Any], rec: Recorder) -> None:
    viewers = Viewers(
        spec["viewers"],
        spec["webinar"],
        mix_track=spec.get("mix_track", 0.0),
        seed=spec.get("seed", 1),
        limit=spec.get("limit", 0),
        track_every=spec.get("track_every", 0),
    )
    pool = Pool(spec["host"], spec["port"], spec.get("max_connections", 256))
    await pool.prewarm(spec.get("prewarm", 32))
    start_clock(rec, spec.get("start_at"))

    async def one(_i: int, scheduled: float) -> None:
        label, raw = viewers.next()
        await send(pool, raw, rec, label, scheduled)

    tasks = await _open_schedule(spec["rate"], spec["duration"], rec.t0, one)
    await _drain(tasks, spec.get("drain", 15.0))
    pool.close()


async def _drain(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()


@dataclasses.dataclass
class _Storm:
    """One join storm in flight: viewers enter (some with two tabs at once), then each
    pings once at its ``first_ping_in`` (divided by ``compress``)."""

    pool: Pool
    rec: Recorder
    webinar: int
    compress: float
    tokens: list[str]
    doubles: set[int]
    facts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    ping_tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)

    async def ping(self, token: str, session: str, scheduled: float) -> None:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.rec.add("ping", scheduled, 0)  # never sent: the drain deadline passed
                raise
        body = json.dumps({"session_id": session}).encode()
        raw = build("POST", f"/api/webinars/{self.webinar}/presence/ping", token, body)
        await send(self.pool, raw, self.rec, "ping", scheduled)

    async def enter(self, i: int, scheduled: float) -> None:
        token = self.tokens[i]
        raw = fresh_track(self.webinar, token)
        copies = 2 if i in self.doubles else 1
        answers = await asyncio.gather(
            *(send(self.pool, raw, self.rec, "track", scheduled) for _ in range(copies))
        )
        ok = []
        for status, body in answers:
            if status == 200:
                try:
                    ok.append(json.loads(body))
                except ValueError:
                    self.facts["unparsable_answer"] += 1
        if not ok:
            return
        # With two tabs, the active session is the one that superseded the other.
        chosen = ok[0]
        if len(ok) == 2:
            ids = {a.get("session_id") for a in ok}
            chosen = next((a for a in ok if a.get("superseded_session_id") in ids), ok[-1])
        session = chosen.get("session_id")
        first = chosen.get("first_ping_in")
        if session is None or first is None:
            self.facts["no_session_or_first_ping"] += 1
            return
        self.facts["pings_scheduled"] += 1
        at = time.perf_counter() + float(first) / self.compress
        self.ping_tasks.append(asyncio.create_task(self.ping(token, str(session), at)))


async def storm(spec: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    """Join storm; returns extra facts (sessions chosen, pings scheduled)."""
    tokens = [line.split()[0] for line in Path(spec["viewers"]).read_text().splitlines() if line]
    rng = random.Random(spec.get("seed", 7))  # noqa: S311 - load shaping, not secrets
    doubles = set(rng.sample(range(len(tokens)), int(len(tokens) * spec["double_fraction"])))
    starts = sorted((rng.uniform(0, spec["window"]), i) for i in range(len(tokens)))
    pool = Pool(spec["host"], spec["port"], spec.get("max_connections", 512))
    await pool.prewarm(spec.get("prewarm", 64))
    start_clock(rec, spec.get("start_at"))
    run = _Storm(pool, rec, spec["webinar"], spec["compress"], tokens, doubles)
    tasks: list[asyncio.Task[None]] = []
    for offset, i in starts:
        due = rec.t0 + offset
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(run.enter(i, due)))
    await _drain(tasks, spec.get("drain", 30.0))
    ping_window = spec.get("heartbeat", 120) / run.compress
    await _drain(run.ping_tasks, ping_window + spec.get("drain", 30.0))
    pool.close()
    run.facts["viewers"] = len(tokens)
    run.facts["doubles"] = len(doubles)
    return dict(run.facts)


async def pollers(spec: dict[str, Any], rec: Recorder) -> None:
    """Admins poll stats every ``interval`` s (staggered) while viewers heartbeat."""
    admins = [line.split()[0] for line in Path(spec["admins"]).read_text().splitlines() if line]
    admins = admins[: spec["admin_count"]]
    webinar = spec["webinar"]
    interval = spec["interval"]
    duration = spec["duration"]
    pool = Pool(spec["host"], spec["port"], spec.get("max_connections", 256))
    rng = random.Random(3)  # noqa: S311 - load shaping, not secrets
    viewers = Viewers(spec["viewers"], webinar)
    await pool.prewarm(min(len(admins), 100) + 16)
    start_clock(rec)

    async def admin(token: str) -> None:
        raw = build("GET", f"/api/webinars/{webinar}/stats/access", token)
        t = rec.t0 + rng.uniform(0, interval)
        while t < rec.t0 + duration:
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(pool, raw, rec, "stats", t)
            t += interval

    async def one(_i: int, scheduled: float) -> None:
        label, raw = viewers.next()
        await send(pool, raw, rec, label, scheduled)

    admin_tasks = [asyncio.create_task(admin(t)) for t in admins]
    tasks = await _open_schedule(spec["rate"], duration, rec.t0, one)
    await _drain(tasks + admin_tasks, spec.get("drain", 15.0))
    pool.close()


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    check_loopback(spec["host"])
    rec = Recorder(time.perf_counter())
    extra: dict[str, Any] = {}
    mode = spec["mode"]
    if mode == "closed":
        await closed(spec, rec)
    elif mode == "open":
        await open_model(spec, rec)
    elif mode == "storm":
        extra = await storm(spec, rec)
    elif mode == "pollers":
        await pollers(spec, rec)
    else:
        raise SystemExit(f"unknown mode {mode}")
    elapsed = time.perf_counter() - rec.t0
    return {"elapsed": elapsed, "rows": rec.rows, "extra": extra, "started_wall": rec.wall0}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator (uvicorn[standard] ships it)
    except ImportError:
        result = asyncio.run(main_async(spec))
    else:
        result = uvloop.run(main_async(spec))
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
