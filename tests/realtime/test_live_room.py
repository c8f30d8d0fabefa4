"""The live room end to end through the hub: joins authorized by the policies on
``realtime.messages`` (probed the way Supabase's Realtime probes them), events read from
the room log and pushed to every subscriber in seq order with one read per room (not per
subscriber), user topics, admin stats pushed, channels closed with a reason when their
token expires or their permission is revoked, client broadcasts refused by policy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from live_support import Live, RoomPeople, chat_topic, make_room, open_phx, publish, user_token
from shim_support import token

from shim.realtime import protocol

pytestmark = pytest.mark.anyio


@pytest.fixture
def people(live: Live) -> RoomPeople:
    return make_room(live.admin_dsn)


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_registered_viewer_joins_private_chat_and_receives_events_with_seq(
    live: Live, people: RoomPeople, vsn: str, anyio_backend: str
) -> None:
    """Join ok ({postgres_changes: []}), then a published chat event arrives as the
    broadcast Supabase pushes: {type: broadcast, event, payload} with seq at the top of
    the payload, on the topic as the client joined it."""
    conn, phx = await open_phx(live, vsn)
    async with conn:
        reply = await phx.join(chat_topic(people), user_token(people.viewer))
        assert reply["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
        seq = publish(live.admin_dsn, people.webinar_id, "chat", "message", {"body": "hello"})
        msg = await phx.expect(event="broadcast")
        assert msg["topic"] == chat_topic(people)
        assert msg["payload"]["type"] == "broadcast"
        assert msg["payload"]["event"] == "message"
        assert msg["payload"]["payload"] == {"body": "hello", "seq": seq}


async def test_who_may_join_which_topic_is_the_policies_answer(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """Viewer: chat, qa, own user topic; not admin, not another's user topic. Host: admin.
    Stranger: nothing. Refusals carry Supabase's Unauthorized reason."""
    w = people.webinar_id
    cases = [
        (people.viewer, "chat", True),
        (people.viewer, "qa", True),
        (people.viewer, f"user:{people.viewer}", True),
        (people.viewer, f"user:{people.host}", False),
        (people.viewer, "admin", False),
        (people.host, "admin", True),
        (people.host, "chat", True),
        (people.stranger, "chat", False),
        (people.stranger, "qa", False),
        (people.stranger, f"user:{people.stranger}", False),
    ]
    conn, phx = await open_phx(live)
    async with conn:
        for i, (who, channel, allowed) in enumerate(cases):
            if i % 8 == 7:
                await asyncio.sleep(1.0)  # stay under the per-connection join rate
            reply = await phx.join(f"realtime:webinar:{w}:{channel}", user_token(who))
            status = reply["payload"]["status"]
            assert status == ("ok" if allowed else "error"), (who, channel, reply)
            if not allowed:
                assert reply["payload"]["response"]["reason"] == (
                    "Unauthorized: You do not have permissions to read from this Channel "
                    f"topic: webinar:{w}:{channel}"
                )


async def test_anon_key_join_is_refused(live: Live, people: RoomPeople, anyio_backend: str) -> None:
    """A join with only the anon key (socket apikey, no access_token) is refused."""
    anon = token({"sub": None, "role": "anon", "aud": None})
    conn, phx = await open_phx(live, apikey=anon)
    async with conn:
        reply = await phx.join(chat_topic(people), None)
        assert reply["payload"]["status"] == "error"
        assert reply["payload"]["response"]["reason"].startswith("Unauthorized")


async def test_every_subscriber_gets_every_event_in_order_from_one_read_per_room(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """20 subscribers, 30 events: each subscriber sees seqs strictly increasing with no
    gap; the hub's delivery reads do not multiply by subscribers (at most one per wake-up,
    here at most one per event), while frames are events x subscribers."""
    subs = [await open_phx(live) for _ in range(20)]
    try:
        for _, phx in subs:
            assert (await phx.join(chat_topic(people), user_token(people.viewer)))["payload"][
                "status"
            ] == "ok"
        # Frames go straight to uvicorn's transports (framed once per event).
        sinks = [s for r in live.hub.rooms.values() for subs in r.channels.values() for s in subs]
        assert len(sinks) == 20
        assert all(s.transport is not None for s in sinks)
        reads_before = live.hub.counters.delivery_reads
        seqs = [
            publish(live.admin_dsn, people.webinar_id, "chat", "message", {"n": n})
            for n in range(30)
        ]
        for _, phx in subs:
            got = []
            while len(got) < 30:
                msg = await phx.expect(event="broadcast")
                got.append(msg["payload"]["payload"]["seq"])
            assert got == seqs
        reads = live.hub.counters.delivery_reads - reads_before
        assert 1 <= reads <= 30 + 2
    finally:
        for conn, _ in subs:
            await conn.close()


async def test_an_event_without_notify_arrives_by_the_safety_read(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """NOTIFY is only a hint: an event committed with no notification (as if it were
    lost) is delivered by the periodic safety read within a tick or two."""
    conn, phx = await open_phx(live)
    async with conn:
        await phx.join(chat_topic(people), user_token(people.viewer))
        publish(live.admin_dsn, people.webinar_id, "chat", "message", {"n": 0})
        first = await phx.expect(event="broadcast")
        with psycopg.connect(live.admin_dsn, autocommit=True) as c:
            seq = first["payload"]["payload"]["seq"] + 1
            with c.transaction():
                c.execute(
                    "update eventlive.room_sequences set last_seq = %s where webinar_id = %s",
                    (seq, people.webinar_id),
                )
                c.execute(
                    "insert into eventlive.room_events (webinar_id, seq, channel, event, payload)"
                    " values (%s, %s, 'chat', 'message', jsonb_build_object('seq', %s::bigint))",
                    (people.webinar_id, seq, seq),
                )
        msg = await phx.expect(event="broadcast", timeout=3.0)
        assert msg["payload"]["payload"]["seq"] == seq


async def test_events_go_only_to_their_channel(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """A qa event does not reach a chat subscriber; a user-topic event reaches only that
    user's subscription (session_superseded is pushed at once)."""
    conn, phx = await open_phx(live)
    async with conn:
        await phx.join(chat_topic(people), user_token(people.viewer))
        await phx.join(chat_topic(people, f"user:{people.viewer}"), user_token(people.viewer))
        publish(live.admin_dsn, people.webinar_id, "qa", "question", {"body": "?"})
        publish(
            live.admin_dsn,
            people.webinar_id,
            f"user:{people.host}",
            "session_superseded",
            {"session_id": "x"},
        )
        t0 = time.monotonic()
        seq = publish(
            live.admin_dsn,
            people.webinar_id,
            f"user:{people.viewer}",
            "session_superseded",
            {"session_id": "s1", "superseded_by": "s2"},
        )
        msg = await phx.expect(event="broadcast")
        assert time.monotonic() - t0 < 1.0
        assert msg["topic"] == chat_topic(people, f"user:{people.viewer}")
        assert msg["payload"]["event"] == "session_superseded"
        assert msg["payload"]["payload"]["seq"] == seq
        assert not [m for m in phx.seen if m.get("event") == "broadcast" and m is not msg]


async def test_admin_topic_receives_stats_computed_once_per_interval_for_all_admins(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """Three admin subscriptions on one webinar get event stats (the access_stats answer)
    within the interval; the hub calls access_stats once per interval per webinar, not
    once per admin."""
    admins = [await open_phx(live) for _ in range(3)]
    try:
        for _, phx in admins:
            assert (await phx.join(chat_topic(people, "admin"), user_token(people.host)))[
                "payload"
            ]["status"] == "ok"
        calls_before = live.hub.counters.stats_calls
        t0 = time.monotonic()
        for _, phx in admins:
            msg = await phx.expect(event="broadcast", timeout=5.0)
            assert msg["payload"]["event"] == "stats"
            assert "current_participants" in msg["payload"]["payload"]
        await asyncio.sleep(2.0)
        elapsed = time.monotonic() - t0
        calls = live.hub.counters.stats_calls - calls_before
        # stats_seconds = 1 in tests: about one call per second, whatever the admins.
        assert 1 <= calls <= elapsed / 1.0 + 2
    finally:
        for conn, _ in admins:
            await conn.close()


async def test_channel_closes_with_a_reason_when_its_token_expires(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """A channel joined with a token that expires in 2 s gets a system message
    (status error, reason token_expired) and phx_close when it does."""
    conn, phx = await open_phx(live)
    async with conn:
        reply = await phx.join(
            chat_topic(people), user_token(people.viewer, exp=int(time.time()) + 2)
        )
        assert reply["payload"]["status"] == "ok"
        msg = await phx.expect(event="system", timeout=5.0)
        assert msg["payload"]["status"] == "error"
        assert msg["payload"]["reason"] == "token_expired"
        assert msg["payload"]["channel"] == f"webinar:{people.webinar_id}:chat"
        await phx.expect(event="phx_close")
        publish(live.admin_dsn, people.webinar_id, "chat", "message", {"after": True})
        with pytest.raises(TimeoutError):
            await phx.expect(event="broadcast", timeout=1.0)


async def test_access_token_refresh_rechecks_the_policies(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """A refreshed token that still may read keeps the channel; once the registration is
    gone, the next refresh closes it with 'You no longer have permission'."""
    conn, phx = await open_phx(live)
    async with conn:
        await phx.join(chat_topic(people), user_token(people.viewer))
        await phx.push(
            chat_topic(people), "access_token", {"access_token": user_token(people.viewer, iat=1)}
        )
        seq = publish(live.admin_dsn, people.webinar_id, "chat", "message", {})
        assert (await phx.expect(event="broadcast"))["payload"]["payload"]["seq"] == seq
        with psycopg.connect(live.admin_dsn, autocommit=True) as c:
            c.execute("delete from eventlive.registrations where user_id = %s", (people.viewer,))
        await phx.push(
            chat_topic(people), "access_token", {"access_token": user_token(people.viewer, iat=2)}
        )
        msg = await phx.expect(event="system")
        assert msg["payload"]["reason"] == "permission_revoked"
        assert msg["payload"]["message"].startswith("You no longer have permission to read")
        await phx.expect(event="phx_close")


async def test_client_broadcast_to_chat_is_refused_by_policy(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """Nobody sends on chat by client broadcast: with ack the sender gets an error, in
    JSON and in realtime-js's binary push; another subscriber receives nothing."""
    listener_conn, listener = await open_phx(live)
    conn, phx = await open_phx(live)
    async with listener_conn, conn:
        await listener.join(chat_topic(people), user_token(people.viewer))
        reply = await phx.join(
            chat_topic(people), user_token(people.host), broadcast={"ack": True, "self": True}
        )
        join_ref = reply["join_ref"]
        ref = await phx.push(
            chat_topic(people),
            "broadcast",
            {"type": "broadcast", "event": "message", "payload": {"body": "spoof"}},
            join_ref,
        )
        msg = await phx.expect(ref=ref)
        assert msg["payload"]["status"] == "error"
        assert "write to this Channel topic" in msg["payload"]["response"]["reason"]
        await conn.send(
            protocol.user_broadcast_push_binary(
                join_ref, "99", chat_topic(people), "message", b'{"body":"spoof"}'
            )
        )
        assert (await phx.expect(ref="99"))["payload"]["status"] == "error"
        with pytest.raises(TimeoutError):
            await listener.expect(event="broadcast", timeout=1.0)


async def test_presence_join_succeeds_and_says_presence_is_not_served(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """A join asking for presence is joined, and a system message says presence is off;
    a presence push is answered with an error."""
    conn, phx = await open_phx(live)
    async with conn:
        reply = await phx.join(
            chat_topic(people), user_token(people.viewer), presence={"enabled": True, "key": ""}
        )
        assert reply["payload"]["status"] == "ok"
        msg = await phx.expect(event="system")
        assert msg["payload"]["extension"] == "presence"
        assert "not available" in msg["payload"]["message"]
        ref = await phx.push(
            chat_topic(people),
            "presence",
            {"type": "presence", "event": "track", "payload": {}},
            reply["join_ref"],
        )
        assert (await phx.expect(ref=ref))["payload"]["status"] == "error"


async def test_leave_replies_ok_then_phx_close_and_stops_delivery(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """phx_leave: reply ok, phx_close with the join_ref, and no more events."""
    conn, phx = await open_phx(live)
    async with conn:
        reply = await phx.join(chat_topic(people), user_token(people.viewer))
        ref = await phx.push(chat_topic(people), "phx_leave", {}, reply["join_ref"])
        assert (await phx.expect(ref=ref))["payload"]["status"] == "ok"
        close = await phx.expect(event="phx_close")
        assert close["join_ref"] == reply["join_ref"]
        publish(live.admin_dsn, people.webinar_id, "chat", "message", {})
        with pytest.raises(TimeoutError):
            await phx.expect(event="broadcast", timeout=1.0)
        assert live.hub.active() == 0


async def test_a_refused_join_repeated_is_answered_from_memory(
    eventlive_db: Any, anyio_backend: str
) -> None:
    """Stale clients retry a refused join after 1, 2, 5 s: within the deny cache's
    window the same (token, topic) is refused again without a database probe."""
    from live_support import start_live

    gen = start_live(eventlive_db, deny_cache_seconds=30)
    live = next(gen)
    try:
        people = make_room(live.admin_dsn)
        conn, phx = await open_phx(live)
        async with conn:
            tok = user_token(people.stranger)
            first = await phx.join(chat_topic(people), tok)
            probes = live.hub.counters.probes
            for _ in range(5):
                again = await phx.join(chat_topic(people), tok)
                assert again["payload"] == first["payload"]
            assert live.hub.counters.probes == probes
    finally:
        gen.close()


async def _drain_until(phx: Any, event: str) -> dict[str, Any]:
    return dict(await phx.expect(event=event, timeout=20.0))


async def test_qa_votes_held_back_by_the_merge_are_sent_on_the_hubs_tick(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """question_vote merges updates to one per question per second: a vote within the
    second after the question was published is held back, and the hub's tick
    (eventlive.flush_question_votes for webinars with Q&A subscribers) sends it as
    question_updated with the new count."""
    import httpx

    conn, phx = await open_phx(live)
    async with conn, httpx.AsyncClient(base_url=live.base) as http:
        await phx.join(chat_topic(people, "qa"), user_token(people.viewer))
        r = await http.post(
            "/rest/v1/rpc/question_ask",
            json={"webinar_id": people.webinar_id, "body": "Will the slides be shared?"},
            headers={"Authorization": f"Bearer {user_token(people.viewer)}"},
        )
        assert r.status_code == 200, r.text
        question = r.json()
        asked = await phx.expect(event="broadcast")
        assert asked["payload"]["event"] == "question"
        r = await http.post(
            "/rest/v1/rpc/question_vote",
            json={"question_id": question["id"]},
            headers={"Authorization": f"Bearer {user_token(people.host)}"},
        )
        assert r.status_code == 200, r.text
        updated = await phx.expect(event="broadcast", timeout=5.0)
        assert updated["payload"]["event"] == "question_updated"
        assert updated["payload"]["payload"]["votes"] == 1
        assert live.hub.counters.vote_flushes >= 1
