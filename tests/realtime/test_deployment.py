"""The live room across a deployment (issue #20): two ``eventlive serve`` nodes (separate
processes on loopback, one worker each) and one ``eventlive serve --workers 2`` node, on
one database. What one process takes in reaches, or is decided for, every process:

- a service_role REST broadcast posted to A reaches WebSocket subscribers on B and on
  both workers of C, large ones (over a NOTIFY payload) too; broadcasts posted to A and
  B at once arrive in the same order everywhere;
- a client broadcast that the insert policies allow (a policy this test adds) sent on A
  reaches B's subscriber, and not the sender who asked for ``self: false``;
- an SSE ticket bought on A is accepted once on B, refused afterwards on B and on A;
  on C, used once and refused on both workers;
- chat sent through A reaches B's subscriber in seq order; a session superseded through
  B is told to the old device's socket on A;
- admins subscribed to ``webinar:{id}:admin`` on B and on both workers of C are pushed
  stats counting the viewers who entered through A (registrations, unique_viewers,
  current_participants), and on each worker of C those who entered through the other;
- 50 admins polling ``GET .../stats/access`` over A and B, and 50 over C's workers, cost
  each process at most one access_stats database call per cache interval (+1, the first
  fill), as each node's ``/metrics`` counts them (C's scrape sums its two workers).

Which worker of C answered is told by ``/realtime/v1/stats`` (``pid``); the tests open
connections until both workers have subscribers (or have answered), so the cross-worker
case is really exercised. An HTTP client holding one kept-alive connection stays on the
worker that took it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import ssl
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from live_support import Phx, RoomPeople, chat_topic, make_room, user_token
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from shim_support import SECRET, token
from websockets.asyncio.client import ClientConnection, connect

from shim.testing import as_service_role, create_user
from shim.testing.process import ShimProcess

pytestmark = pytest.mark.anyio


@dataclass
class Deployment:
    a: ShimProcess
    b: ShimProcess
    c: ShimProcess  # --workers 2
    people: RoomPeople
    admin_dsn: str


@pytest.fixture
def deployment(eventlive_db: Any) -> Iterator[Deployment]:
    env = {
        "DATABASE_URL": eventlive_db.dsn,
        "JWT_SECRET": SECRET,
        "EVENTLIVE_SCHEMAS": "api",
        "EVENTLIVE_POOL_MIN": "1",
        "EVENTLIVE_REALTIME_POOL": "3",
        "EVENTLIVE_REALTIME_TICK": "0.5",
        "EVENTLIVE_REALTIME_DENY_CACHE_SECONDS": "0",
        "EVENTLIVE_REALTIME_STATS_SECONDS": "0.5",
        # One key for every node: a ticket bought on A is signed for B too.
        "EVENTLIVE_REALTIME_TICKET_SECRET": "deployment-test-" + uuid.uuid4().hex,
        "EVENTLIVE_ACCESS_LOG": "0",
        "EVENTLIVE_HOUSEKEEPING_INTERVAL": "0",
    }
    nodes = [ShimProcess(env), ShimProcess(env), ShimProcess(env, workers=2)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda n: n.start(timeout=40), nodes))
        people = make_room(eventlive_db.admin_dsn)
        yield Deployment(*nodes, people, eventlive_db.admin_dsn)
    finally:
        for node in nodes:
            node.close()


def ws_url(node: ShimProcess) -> str:
    return node.base.replace("http://", "ws://") + "/realtime/v1/websocket?vsn=2.0.0"


async def subscriber(
    stack: contextlib.AsyncExitStack, node: ShimProcess, topic: str, tok: str, **broadcast: Any
) -> Phx:
    conn: ClientConnection = await stack.enter_async_context(connect(ws_url(node)))
    phx = Phx(conn, "2.0.0")
    reply = await phx.join(topic, tok, broadcast={"ack": False, "self": False, **broadcast})
    assert reply["payload"]["status"] == "ok", reply
    return phx


def worker_stats(node: ShimProcess, asks: int = 12) -> dict[int, dict[str, Any]]:
    """Each worker's /realtime/v1/stats as seen over ``asks`` fresh connections, opened at
    once (the workers race to accept them; one after another on a busy machine, one worker
    may take them all)."""

    def ask(_: int) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{node.base}/realtime/v1/stats", timeout=5).json()
        return data

    with ThreadPoolExecutor(asks) as pool:
        return {data["pid"]: data for data in pool.map(ask, range(asks))}


async def subscribers_on_both_workers(
    stack: contextlib.AsyncExitStack, node: ShimProcess, topic: str, tok: str
) -> list[Phx]:
    """Subscribers on ``node`` until both of its workers hold some (at most 24), connecting
    4 at a time (as ``worker_stats`` asks)."""
    subs: list[Phx] = []
    for _ in range(6):
        subs += await asyncio.gather(*(subscriber(stack, node, topic, tok) for _ in range(4)))
        busy = [s for s in worker_stats(node).values() if s["subscriptions"] > 0]
        if len(busy) >= 2:
            return subs
    pytest.fail("the connections all went to one worker")


def service_token() -> str:
    return token({"role": "service_role", "sub": None, "aud": None}, key=SECRET)


def rest_broadcast(node: ShimProcess, topic: str, event: str, payloads: list[Any]) -> None:
    body = {
        "messages": [
            {"topic": topic, "event": event, "payload": p, "private": True} for p in payloads
        ]
    }
    r = httpx.post(
        f"{node.base}/realtime/v1/api/broadcast",
        json=body,
        headers={"Authorization": f"Bearer {service_token()}"},
        timeout=10,
    )
    assert r.status_code == 202, r.text


async def broadcasts(phx: Phx, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    got = []
    for _ in range(n):
        msg = await phx.expect(event="broadcast", timeout=timeout)
        got.append(msg["payload"])
    return got


async def test_a_rest_broadcast_reaches_every_node_and_worker_in_one_order(
    deployment: Deployment, anyio_backend: str
) -> None:
    d = deployment
    w = d.people.webinar_id
    topic, tok = chat_topic(d.people), user_token(d.people.viewer)
    async with contextlib.AsyncExitStack() as stack:
        on_a = await subscriber(stack, d.a, topic, tok)
        on_b = await subscriber(stack, d.b, topic, tok)
        on_c = await subscribers_on_both_workers(stack, d.c, topic, tok)

        # A -> B, and to both workers of C: small (in the NOTIFY) and large (by a row).
        large = {"body": "x" * 20_000, "n": 2}
        await asyncio.to_thread(rest_broadcast, d.a, f"webinar:{w}:chat", "notice", [{"n": 1}])
        await asyncio.to_thread(rest_broadcast, d.a, f"webinar:{w}:chat", "notice", [large])
        for phx in (on_a, on_b, *on_c):
            got = await broadcasts(phx, 2)
            assert got == [
                {"type": "broadcast", "event": "notice", "payload": {"n": 1}},
                {"type": "broadcast", "event": "notice", "payload": large},
            ]

        # Posted to A and B at once: every subscriber sees the same order.
        def post(node: ShimProcess, tag: str) -> None:
            for i in range(10):
                rest_broadcast(node, f"webinar:{w}:chat", "tick", [{"from": tag, "i": i}])

        await asyncio.gather(asyncio.to_thread(post, d.a, "a"), asyncio.to_thread(post, d.b, "b"))
        orders = [[m["payload"] for m in await broadcasts(p, 20)] for p in (on_a, on_b, *on_c)]
        assert all(order == orders[0] for order in orders)
        for tag in ("a", "b"):  # and each sender's own order kept
            assert [m["i"] for m in orders[0] if m["from"] == tag] == list(range(10))


async def test_a_client_broadcast_the_policies_allow_reaches_other_nodes(
    deployment: Deployment, anyio_backend: str
) -> None:
    """With a permissive insert policy for the webinar's chat (added here: the project
    allows none), a host's client broadcast on A reaches B's subscriber; the sender
    (``self: false``) does not get it back."""
    d = deployment
    w = d.people.webinar_id
    with psycopg.connect(d.admin_dsn, autocommit=True) as conn:
        conn.execute('drop policy "No client broadcasts to a webinar topic" on realtime.messages')
        conn.execute(
            "create policy test_hosts_send on realtime.messages for insert to authenticated"
            f" with check (topic = 'webinar:{w}:chat')"
        )
    topic = chat_topic(d.people)
    async with contextlib.AsyncExitStack() as stack:
        on_b = await subscriber(stack, d.b, topic, user_token(d.people.viewer))
        sender = await subscriber(stack, d.a, topic, user_token(d.people.host), ack=True)
        ref = await sender.push(
            topic,
            "broadcast",
            {"type": "broadcast", "event": "wave", "payload": {"hi": 1}},
            join_ref="1",
        )
        assert (await sender.expect(ref=ref, event="phx_reply"))["payload"]["status"] == "ok"
        got = await broadcasts(on_b, 1)
        assert got == [{"type": "broadcast", "event": "wave", "payload": {"hi": 1}}]
        with pytest.raises(TimeoutError):
            await sender.expect(event="broadcast", timeout=0.5)


def buy_ticket(node: ShimProcess, webinar_id: int, tok: str) -> str:
    r = httpx.post(
        f"{node.base}/api/webinars/{webinar_id}/events/ticket",
        headers={"Authorization": f"Bearer {tok}"},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["ticket"])


def use_ticket(node: ShimProcess, webinar_id: int, ticket: str) -> int:
    """The status of an SSE request with the ticket (the stream is closed at once)."""
    url = f"{node.base}/api/webinars/{webinar_id}/events?ticket={ticket}"
    with httpx.stream("GET", url, timeout=5) as r:
        return r.status_code


async def test_an_sse_ticket_is_accepted_once_across_the_deployment(
    deployment: Deployment, anyio_backend: str
) -> None:
    d = deployment
    w, tok = d.people.webinar_id, user_token(d.people.viewer)

    def across_nodes() -> list[int]:
        ticket = buy_ticket(d.a, w, tok)
        return [use_ticket(d.b, w, ticket), use_ticket(d.b, w, ticket), use_ticket(d.a, w, ticket)]

    assert await asyncio.to_thread(across_nodes) == [200, 401, 401]

    def across_workers() -> tuple[list[int], int]:
        ticket = buy_ticket(d.c, w, tok)
        first = use_ticket(d.c, w, ticket)
        with ThreadPoolExecutor(9) as pool:  # at once: both workers take some (worker_stats)
            statuses = [first, *pool.map(lambda _: use_ticket(d.c, w, ticket), range(9))]
        used = [s["tickets_used"] for s in worker_stats(d.c).values()]
        return statuses, sum(1 for n in used if n > 0)

    statuses, workers = await asyncio.to_thread(across_workers)
    assert statuses == [200] + [401] * 9
    assert workers == 2  # both workers were asked (and the one that had not seen it refused)


async def test_chat_and_a_superseded_session_cross_nodes(
    deployment: Deployment, anyio_backend: str
) -> None:
    """Rows that worked before and must keep working: chat sent through A reaches B's
    subscriber in seq order; a session superseded by entering through B is told to the
    old device's socket on A at once."""
    d = deployment
    w, viewer = d.people.webinar_id, d.people.viewer
    async with contextlib.AsyncExitStack() as stack:
        chat_b = await subscriber(stack, d.b, chat_topic(d.people), user_token(viewer))
        user_a = await subscriber(
            stack, d.a, chat_topic(d.people, f"user:{viewer}"), user_token(viewer)
        )

        def send_and_enter() -> tuple[list[int], str, str]:
            auth = {"Authorization": f"Bearer {user_token(d.people.host)}"}
            seqs = []
            for i in range(5):
                r = httpx.post(
                    f"{d.a.base}/rest/v1/rpc/chat_send",
                    json={"webinar_id": w, "body": f"m{i}", "client_msg_id": str(uuid.uuid4())},
                    headers=auth,
                    timeout=5,
                )
                assert r.status_code == 200, r.text
                seqs.append(r.json()["seq"])
            me = {"Authorization": f"Bearer {user_token(viewer)}"}
            first, second = (
                httpx.post(
                    f"{node.base}/rest/v1/rpc/track_access",
                    json={"webinar_id": w},
                    headers=me,
                    timeout=5,
                ).json()["session_id"]
                for node in (d.a, d.b)
            )
            return seqs, first, second

        seqs, first, second = await asyncio.to_thread(send_and_enter)
        got = await broadcasts(chat_b, 5)
        assert [m["payload"]["seq"] for m in got] == seqs == sorted(seqs)
        assert [m["payload"]["body"] for m in got] == [f"m{i}" for i in range(5)]
        t0 = time.monotonic()
        told = (await broadcasts(user_a, 1))[0]
        assert time.monotonic() - t0 < 2.0
        assert told["event"] == "session_superseded"
        assert told["payload"]["session_id"] == first
        assert told["payload"]["superseded_by"] == second


# -- admin stats: pushed (live room) and polled (shared answer cache) ----------------------


def new_users(admin_dsn: str, n: int, *, staff_of: int | None = None) -> list[str]:
    """``n`` new users, hosts of webinar ``staff_of`` if given (committed)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        users = [str(create_user(conn)) for _ in range(n)]
        if staff_of is not None:
            with as_service_role(conn, commit=True):
                for uid in users:
                    conn.execute("select api.set_staff(%s, %s, 'host')", (staff_of, uid))
    return users


def shorten_cache(admin_dsn: str, seconds: int) -> None:
    """access_stats's ``@cache`` interval set to ``seconds`` (its comment, the rest of it
    kept), and every process told to reload its catalog."""
    fn = "api.access_stats(bigint)"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select pg_catalog.obj_description(%s::regprocedure, 'pg_proc')", (fn,)
        ).fetchone()
        assert row is not None
        comment, marks = re.subn(r"@cache\s+\d+", f"@cache {seconds}", row[0])
        assert marks == 1, row[0]
        conn.execute(
            sql.SQL("comment on function {} is {}").format(sql.SQL(fn), sql.Literal(comment))
        )
        conn.execute("notify eventlive_reload")


@functools.cache
def _tls() -> ssl.SSLContext:
    """One context for every client (unused over http; made per client it loads the CA
    bundle each time: 75 ms a client on a busy machine)."""
    return ssl.create_default_context()


def http_client(node: ShimProcess) -> httpx.AsyncClient:
    """A client holding one kept-alive connection (so one worker of ``node``)."""
    return httpx.AsyncClient(
        base_url=node.base, timeout=10, limits=httpx.Limits(max_connections=1), verify=_tls()
    )


async def worker_of(client: httpx.AsyncClient) -> int:
    """The pid of the worker that holds ``client``'s connection."""
    return int((await client.get("/realtime/v1/stats")).json()["pid"])


async def clients_on_workers(
    stack: contextlib.AsyncExitStack, node: ShimProcess, n: int, most: int = 128
) -> dict[int, list[httpx.AsyncClient]]:
    """``n`` clients of ``node`` (a connection each) by the worker that took them, taken in
    turn from every worker's. Connections are opened 16 at a time (the workers race to
    accept them; one at a time, a busy worker may never win) until every worker has some."""
    by_pid: dict[int, list[httpx.AsyncClient]] = {}
    opened = 0
    while opened < n or len(by_pid) < node.workers:
        if opened >= most:
            pytest.fail(f"{opened} connections all went to {len(by_pid)} of {node.workers} workers")
        batch = [await stack.enter_async_context(http_client(node)) for _ in range(16)]
        pids = await asyncio.gather(*(worker_of(c) for c in batch))
        for client, pid in zip(batch, pids, strict=True):
            by_pid.setdefault(pid, []).append(client)
        opened += len(batch)
    turns = itertools.chain.from_iterable(itertools.zip_longest(*by_pid.values()))
    chosen = list(itertools.islice((c for c in turns if c is not None), n))
    return {pid: [c for c in cs if c in chosen] for pid, cs in by_pid.items()}


async def enter(client: httpx.AsyncClient, webinar_id: int, users: list[str]) -> int:
    """Each user registers and enters (track_access) through ``client``; the worker that
    took them all (the same connection throughout: asked before and after)."""
    pid = await worker_of(client)
    for uid in users:
        auth = {"Authorization": f"Bearer {user_token(uid)}"}
        for fn in ("register", "track_access"):
            r = await client.post(
                f"/rest/v1/rpc/{fn}", json={"webinar_id": webinar_id}, headers=auth
            )
            assert r.status_code == 200, r.text
    assert await worker_of(client) == pid, "the connection moved to another worker"
    return pid


async def pushed_stats(phx: Phx, want: dict[str, int], timeout: float = 10.0) -> dict[str, Any]:
    """The first stats pushed to ``phx`` whose fields have the values in ``want``."""
    last = None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await phx.expect(event="broadcast", timeout=left)
        except TimeoutError:
            break
        assert msg["payload"]["event"] == "stats", msg
        stats: dict[str, Any] = msg["payload"]["payload"]
        if all(stats[k] == v for k, v in want.items()):
            return stats
        last = stats
    pytest.fail(f"no stats with {want} pushed in {timeout} s; the last: {last}")


async def test_pushed_admin_stats_count_viewers_who_entered_on_another_node_or_worker(
    deployment: Deployment, anyio_backend: str
) -> None:
    """Admins subscribed to ``webinar:{id}:admin`` on B and on both workers of C are pushed
    stats (every EVENTLIVE_REALTIME_STATS_SECONDS, 0.5 s here, the shared answer of a 1 s
    ``@cache``) that count the viewers who registered and entered through A; then those
    who entered through each of C's workers, on both workers. registrations and
    unique_viewers are exact counters; current_participants is the number of viewers
    present now."""
    d = deployment
    w = d.people.webinar_id
    shorten_cache(d.admin_dsn, 1)  # the pushes are the shared answer: at most 1 s old
    through_a, through_c = new_users(d.admin_dsn, 3), new_users(d.admin_dsn, 4)
    topic, host = chat_topic(d.people, "admin"), user_token(d.people.host)
    async with contextlib.AsyncExitStack() as stack:
        admins = [
            await subscriber(stack, d.b, topic, host),
            *await subscribers_on_both_workers(stack, d.c, topic, host),
        ]
        first = [await pushed_stats(phx, {}) for phx in admins]
        base = first[0]
        assert all(f["registrations"] == base["registrations"] for f in first)

        def counted(n: int) -> dict[str, int]:
            return {
                "registrations": base["registrations"] + n,
                "unique_viewers": base["unique_viewers"] + n,
            }

        on_a = await stack.enter_async_context(http_client(d.a))
        await enter(on_a, w, through_a)
        for phx in admins:  # on B and on both workers of C
            stats = await pushed_stats(phx, counted(3))
            assert stats["current_participants"] == base["current_participants"] + 3

        workers = await clients_on_workers(stack, d.c, 2)
        halves = (through_c[:2], through_c[2:])
        pids = [
            await enter(clients[0], w, half)
            for clients, half in zip(workers.values(), halves, strict=True)
        ]
        assert len(set(pids)) == 2
        for phx in admins:  # each of C's workers counts those who entered on the other
            stats = await pushed_stats(phx, counted(7))
            assert stats["current_participants"] == base["current_participants"] + 7


STATS_FN = "api.access_stats"


def node_counts(node: ShimProcess) -> tuple[float, float]:
    """(access_stats database calls, access_stats answers) in one scrape of ``node``'s
    /metrics: the node's, summed over its workers when it has several."""
    text = httpx.get(f"{node.base}/metrics", timeout=10).text
    calls = answers = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("function") != STATS_FN:
                continue
            if s.name == "eventlive_db_duration_seconds_count":
                calls += s.value
            elif s.name == "eventlive_requests_total":
                answers += s.value
    return calls, answers


async def reloaded(
    client: httpx.AsyncClient, path: str, auth: dict[str, str], cache_control: str
) -> None:
    """Until the worker holding ``client``'s connection answers ``path`` with
    ``cache_control`` (its catalog reloaded); that answer fills its cache."""
    deadline = time.monotonic() + 10
    while True:
        r = await client.get(path, headers=auth)
        assert r.status_code == 200, r.text
        if r.headers["Cache-Control"] == cache_control:
            return
        assert time.monotonic() < deadline, f"still {r.headers['Cache-Control']!r}"
        await asyncio.sleep(0.05)


async def test_fifty_admins_polling_stats_cost_one_database_call_per_interval_per_process(
    deployment: Deployment, anyio_backend: str
) -> None:
    """50 hosts polling ``GET /api/webinars/{id}/stats/access`` spread over A and B, and 50
    over both workers of C, at once: the shared answer (``@cache``, ``@readers``) costs each
    process at most one access_stats database call per interval (+1, the first fill): A
    and B each, C at most twice that (one cache per worker). Counted by each node's
    /metrics (``eventlive_db_duration_seconds_count``; C's scrape sums its workers), whose
    answer count matches the polls sent. The interval is 1 s here (the function's comment,
    reloaded by every process, which then answers ``max-age=1``), so the polls span a few
    intervals in 2.5 s."""
    d = deployment
    w = d.people.webinar_id
    admins = [
        {"Authorization": f"Bearer {user_token(u)}"} for u in new_users(d.admin_dsn, 50, staff_of=w)
    ]
    shorten_cache(d.admin_dsn, 1)
    path = f"/api/webinars/{w}/stats/access"
    async with contextlib.AsyncExitStack() as stack:
        on_ab = {
            node: [await stack.enter_async_context(http_client(node)) for _ in range(25)]
            for node in (d.a, d.b)
        }
        on_c = await clients_on_workers(stack, d.c, 50)
        for client in [*(cs[0] for cs in on_ab.values()), *(cs[0] for cs in on_c.values())]:
            await reloaded(client, path, admins[0], "private, max-age=1")
        nodes = (d.a, d.b, d.c)
        before = {node: node_counts(node) for node in nodes}

        async def poll(client: httpx.AsyncClient, auth: dict[str, str], until: float) -> int:
            polls = 0
            while time.monotonic() < until:
                r = await client.get(path, headers=auth)
                assert r.status_code == 200, r.text
                assert r.json()["webinar_id"] == w
                polls += 1
                await asyncio.sleep(0.2)
            return polls

        pollers = [(d.a, c) for c in on_ab[d.a]] + [(d.b, c) for c in on_ab[d.b]]
        pollers += [(d.c, c) for cs in on_c.values() for c in cs]
        started = time.monotonic()
        polls = await asyncio.gather(
            *(poll(c, admins[i % 50], started + 2.5) for i, (_, c) in enumerate(pollers))
        )
        elapsed = time.monotonic() - started
        after = {node: node_counts(node) for node in nodes}
    intervals = int(elapsed // 1.0) + 1  # loads of one cache are at least 1 s apart
    for node, processes in ((d.a, 1), (d.b, 1), (d.c, 2)):
        calls, answers = (x - y for x, y in zip(after[node], before[node], strict=True))
        sent = sum(n for (n_node, _), n in zip(pollers, polls, strict=True) if n_node is node)
        assert answers == sent >= 10 * processes * intervals
        assert processes <= calls <= processes * intervals, (node.base, calls, intervals)
