"""The two HTTP ways into the live room: ``POST /realtime/v1/api/broadcast`` (Supabase's
REST broadcast: 202, the insert policies deciding) and ``GET /api/webinars/{id}/events``
(Server-Sent Events: id/event/data framing, Last-Event-ID resume, one-time tickets for
EventSource, the same authorization as a channel join)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from live_support import Live, RoomPeople, chat_topic, make_room, open_phx, publish, user_token

pytestmark = pytest.mark.anyio


@pytest.fixture
def people(live: Live) -> RoomPeople:
    return make_room(live.admin_dsn)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def test_rest_broadcast_is_202_and_the_insert_policy_drops_chat_spoofs(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """Supabase's REST broadcast answers 202 for a well-formed batch; a private message
    to chat is delivered only if the insert policies allow it -- they never do for
    webinar topics, so a subscriber receives nothing."""
    conn, phx = await open_phx(live)
    async with conn, httpx.AsyncClient(base_url=live.base) as client:
        await phx.join(chat_topic(people), user_token(people.viewer))
        body = {
            "messages": [
                {
                    "topic": f"webinar:{people.webinar_id}:chat",
                    "event": "message",
                    "payload": {"body": "spoof"},
                    "private": True,
                }
            ]
        }
        r = await client.post(
            "/realtime/v1/api/broadcast", json=body, headers=auth(user_token(people.host))
        )
        assert r.status_code == 202
        with pytest.raises(TimeoutError):
            await phx.expect(event="broadcast", timeout=1.0)


@pytest.mark.parametrize(
    ("content", "status", "details"),
    [
        (b"{not json", 400, "malformed_json"),
        (b'{"messages": []}', 422, "invalid_messages"),
        (b'{"messages": [{"topic": 1, "event": "x"}]}', 422, "invalid_message"),
        (b'{"messages": [{"topic": "t", "event": "x", "payload": []}]}', 422, "invalid_message"),
        (b'{"messages": "' + b"x" * 70_000 + b'"}', 413, "body_too_large"),
    ],
)
async def test_rest_broadcast_bad_input_is_a_clear_error(
    live: Live, content: bytes, status: int, details: str, anyio_backend: str
) -> None:
    """Malformed JSON 400, a wrong shape 422 (as Supabase), too large 413: PostgREST-shaped
    bodies, never a 500."""
    async with httpx.AsyncClient(base_url=live.base) as client:
        r = await client.post(
            "/realtime/v1/api/broadcast",
            content=content,
            headers={
                "Content-Type": "application/json",
                **auth(user_token("6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10")),
            },
        )
        assert r.status_code == status
        assert r.json()["details"] == details
        assert set(r.json()) == {"code", "message", "details", "hint"}


async def _sse_lines(response: httpx.Response, until: int) -> list[dict[str, str]]:
    """Parse SSE events (ignoring comments) until ``until`` events have arrived."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(10):
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                    current = {}
                    if len(events) >= until:
                        return events
                continue
            key, _, value = line.partition(": ")
            current[key] = value
    return events


async def test_sse_streams_events_with_seq_ids_and_resumes_after_last_event_id(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """Events arrive as id: <seq>, event: <name>, data: <payload JSON> for the chosen
    topics only; reconnecting with Last-Event-ID replays what came after that seq."""
    w = people.webinar_id
    async with httpx.AsyncClient(base_url=live.base, timeout=10) as client:
        headers = auth(user_token(people.viewer))
        async with client.stream(
            "GET", f"/api/webinars/{w}/events?topics=chat,qa", headers=headers
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            s1 = publish(live.admin_dsn, w, "chat", "message", {"body": "one"})
            publish(live.admin_dsn, w, "admin", "ignored", {})
            s2 = publish(live.admin_dsn, w, "qa", "question", {"body": "two"})
            events = await _sse_lines(r, 2)
        assert [(e["id"], e["event"]) for e in events] == [
            (str(s1), "message"),
            (str(s2), "question"),
        ]
        assert json.loads(events[0]["data"]) == {"body": "one", "seq": s1}
        s3 = publish(live.admin_dsn, w, "chat", "message", {"body": "three"})
        resume = {**headers, "Last-Event-ID": str(s1)}
        async with client.stream(
            "GET", f"/api/webinars/{w}/events?topics=chat,qa", headers=resume
        ) as r:
            events = await _sse_lines(r, 2)
        assert [int(e["id"]) for e in events] == [s2, s3]


async def test_sse_refuses_strangers_unknown_topics_and_bad_ids(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """Same authorization as a join (a stranger is 403 not_allowed, a viewer may not read
    admin); no token 401; unknown topic and malformed ids 400."""
    w = people.webinar_id
    async with httpx.AsyncClient(base_url=live.base) as client:
        r = await client.get(f"/api/webinars/{w}/events", headers=auth(user_token(people.stranger)))
        assert (r.status_code, r.json()["details"]) == (403, "not_allowed")
        r = await client.get(
            f"/api/webinars/{w}/events?topics=admin", headers=auth(user_token(people.viewer))
        )
        assert (r.status_code, r.json()["details"]) == (403, "not_allowed")
        r = await client.get(f"/api/webinars/{w}/events")
        assert r.status_code == 401
        r = await client.get(
            f"/api/webinars/{w}/events?topics=lobby", headers=auth(user_token(people.viewer))
        )
        assert (r.status_code, r.json()["details"]) == (400, "unknown_topic")
        r = await client.get("/api/webinars/abc/events", headers=auth(user_token(people.viewer)))
        assert r.status_code == 400
        r = await client.get(
            f"/api/webinars/{w}/events",
            headers={**auth(user_token(people.viewer)), "Last-Event-ID": "x1"},
        )
        assert (r.status_code, r.json()["details"]) == (400, "invalid_last_event_id")


async def test_eventsource_ticket_is_one_time_and_the_jwt_never_goes_in_the_url(
    live: Live, people: RoomPeople, anyio_backend: str
) -> None:
    """An authenticated POST buys a ticket; GET ?ticket= streams once; the same ticket
    again is 401; a ticket for another webinar is 401; a JWT in the query string is not
    a credential (401)."""
    w = people.webinar_id
    async with httpx.AsyncClient(base_url=live.base, timeout=10) as client:
        r = await client.post(
            f"/api/webinars/{w}/events/ticket", headers=auth(user_token(people.viewer))
        )
        assert r.status_code == 200
        ticket = r.json()["ticket"]
        assert user_token(people.viewer).split(".")[1] not in ticket
        async with client.stream("GET", f"/api/webinars/{w}/events?ticket={ticket}") as s:
            assert s.status_code == 200
            seq = publish(live.admin_dsn, w, "chat", "message", {"body": "via ticket"})
            events = await _sse_lines(s, 1)
        assert events[0]["id"] == str(seq)
        r = await client.get(f"/api/webinars/{w}/events?ticket={ticket}")
        assert (r.status_code, r.json()["details"]) == (401, "invalid_ticket")
        other = (
            await client.post(
                f"/api/webinars/{w + 1}/events/ticket", headers=auth(user_token(people.viewer))
            )
        ).json()["ticket"]
        r = await client.get(f"/api/webinars/{w}/events?ticket={other}")
        assert r.status_code == 401
        r = await client.get(f"/api/webinars/{w}/events?access_token={user_token(people.viewer)}")
        assert r.status_code == 401
        r = await client.post(f"/api/webinars/{w}/events/ticket")
        assert r.status_code == 401


async def test_hub_counters_are_served(live: Live, anyio_backend: str) -> None:
    """/realtime/v1/stats shows the hub's counters (the bench reads delivery reads there)."""
    async with httpx.AsyncClient(base_url=live.base) as client:
        data = (await client.get("/realtime/v1/stats")).json()
    assert {"rooms", "subscriptions", "delivery_reads", "frames", "laggards"} <= set(data)
