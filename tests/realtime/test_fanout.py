"""Delivery limits and scale-out: a subscriber that stops reading is cut off with a reason
and the seq to resume from (never silently skipped), and two shim processes on one
database each deliver every event to their own subscribers."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from live_support import chat_topic, make_room, open_phx, publish, start_live, user_token
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.anyio


async def test_a_laggard_is_disconnected_with_its_resume_seq(
    eventlive_db: Any, anyio_backend: str
) -> None:
    """With a queue of 16 frames, a client that does not read while 60 MB of events (more than the loopback's socket buffers) are
    published (in bursts smaller than the queue) is disconnected: its last frames are a system message (reason too_slow,
    last_seq = the last seq written to it) and then the socket closes (1013). Every event
    it did get is in order and ends exactly at last_seq, so chat_since(last_seq) resumes
    without a gap. A reading subscriber on the same room is unaffected."""
    gen = start_live(eventlive_db, queue=16)
    live = next(gen)
    try:
        people = make_room(live.admin_dsn)
        slow_conn, slow = await open_phx(live, compress=False)  # no deflate: bytes are bytes
        fast_conn, fast = await open_phx(live)
        async with fast_conn:
            await slow.join(chat_topic(people), user_token(people.viewer))
            await fast.join(chat_topic(people), user_token(people.viewer))
            body = "x" * 100_000
            got_fast: list[int] = []

            async def read_fast() -> None:
                while len(got_fast) < 600:
                    msg = await fast.expect(event="broadcast", timeout=20)
                    got_fast.append(msg["payload"]["payload"]["seq"])

            reader = asyncio.create_task(read_fast())
            with psycopg.connect(live.admin_dsn, autocommit=True) as c:
                for n in range(600):
                    if n % 8 == 0:
                        await asyncio.sleep(0.1)  # bursts below the queue's size
                    c.execute(
                        "select eventlive.publish(%s, 'chat', 'message', jsonb_build_object('body', %s::text))",
                        (people.webinar_id, body),
                    )
            await reader
            assert got_fast == sorted(got_fast)
            assert len(got_fast) == 600
            assert live.hub.counters.laggards == 1
            seqs: list[int] = []
            system: dict[str, Any] | None = None
            async with asyncio.timeout(20), slow_conn:
                while True:
                    try:
                        raw = await slow_conn.recv()
                    except ConnectionClosed:
                        break
                    msg = slow.norm(raw)
                    if msg["event"] == "broadcast":
                        seqs.append(msg["payload"]["payload"]["seq"])
                    elif msg["event"] == "system":
                        system = msg
            assert system is not None
            assert system["payload"]["reason"] == "too_slow"
            assert system["payload"]["status"] == "error"
            assert seqs == sorted(seqs)
            assert seqs == list(range(got_fast[0], got_fast[0] + len(seqs)))
            assert system["payload"]["last_seq"] == (seqs[-1] if seqs else 0)
            assert slow_conn.close_code == 1013
    finally:
        gen.close()


async def test_two_processes_each_deliver_every_event_to_their_subscribers(
    eventlive_db: Any, anyio_backend: str
) -> None:
    """Two hubs (two apps, two uvicorn servers) on one database: a subscriber on each
    gets every event, in order; each hub read the room for its own subscribers."""
    gen_a = start_live(eventlive_db)
    gen_b = start_live(eventlive_db)
    a, b = next(gen_a), next(gen_b)
    try:
        people = make_room(a.admin_dsn)
        conns = [await open_phx(a), await open_phx(b)]
        for _, phx in conns:
            assert (await phx.join(chat_topic(people), user_token(people.viewer)))["payload"][
                "status"
            ] == "ok"
        seqs = [
            publish(a.admin_dsn, people.webinar_id, "chat", "message", {"n": n}) for n in range(10)
        ]
        for _, phx in conns:
            got = [
                (await phx.expect(event="broadcast"))["payload"]["payload"]["seq"]
                for _ in range(10)
            ]
            assert got == seqs
        assert a.hub.counters.events >= 10
        assert b.hub.counters.events >= 10
        for conn, _ in conns:
            await conn.close()
    finally:
        gen_a.close()
        gen_b.close()


async def test_concurrent_joins_are_checked_in_batches_with_each_answer_its_own(
    eventlive_db: Any, anyio_backend: str
) -> None:
    """40 sockets join at once, viewers and strangers interleaved: every viewer is
    joined, every stranger refused (a batch never mixes answers up), and the checks took
    fewer database transactions than joins (batched probes, as in a reconnect storm)."""
    gen = start_live(eventlive_db)
    live = next(gen)
    try:
        people = make_room(live.admin_dsn)
        socks = [await open_phx(live) for _ in range(40)]
        batches_before = live.hub.prober.batches
        who = [people.viewer if i % 2 == 0 else people.stranger for i in range(40)]
        replies = await asyncio.gather(
            *(
                phx.join(chat_topic(people), user_token(w))
                for (_, phx), w in zip(socks, who, strict=True)
            )
        )
        statuses = [r["payload"]["status"] for r in replies]
        assert statuses == ["ok" if w == people.viewer else "error" for w in who]
        assert live.hub.prober.batches - batches_before < 40
        for conn, _ in socks:
            await conn.close()
    finally:
        gen.close()
