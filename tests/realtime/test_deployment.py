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
  B is told to the old device's socket on A.

Which worker of C answered is told by ``/realtime/v1/stats`` (``pid``); the tests open
connections until both workers have subscribers (or have answered), so the cross-worker
case is really exercised."""

from __future__ import annotations

import asyncio
import contextlib
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
from shim_support import SECRET, token
from websockets.asyncio.client import ClientConnection, connect

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
    """Each worker's /realtime/v1/stats as seen over ``asks`` fresh connections."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(asks):
        data = httpx.get(f"{node.base}/realtime/v1/stats", timeout=5).json()
        seen[data["pid"]] = data
    return seen


async def subscribers_on_both_workers(
    stack: contextlib.AsyncExitStack, node: ShimProcess, topic: str, tok: str
) -> list[Phx]:
    """Subscribers on ``node`` until both of its workers hold some (at most 24)."""
    subs: list[Phx] = []
    for _ in range(6):
        subs += [await subscriber(stack, node, topic, tok) for _ in range(4)]
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
        statuses = [use_ticket(d.c, w, ticket) for _ in range(10)]
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
