"""supabase's Python Realtime client (``realtime`` from PyPI, protocol 1.0.0) against the
hub, unchanged: a registered viewer's private chat channel receives a message sent with
``chat_send`` through the shim's RPC route; a stranger's join is refused (CHANNEL_ERROR
with the reason); an admin receives pushed stats; a client broadcast to chat -- over the
socket and over the REST broadcast realtime-py's ``http_send`` uses -- is refused by policy;
a refreshed token (``set_auth``) keeps the channel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from live_support import Live, RoomPeople, make_room, user_token
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient, RealtimeSubscribeStates

pytestmark = pytest.mark.anyio


@pytest.fixture
def people(live: Live) -> RoomPeople:
    return make_room(live.admin_dsn)


class Joined:
    """A realtime-py client with one channel and the broadcasts it received."""

    def __init__(self, client: AsyncRealtimeClient, channel: AsyncRealtimeChannel) -> None:
        self.client = client
        self.channel = channel
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.states: list[tuple[RealtimeSubscribeStates, Exception | None]] = []


async def subscribe(live: Live, token: str, topic: str, **broadcast: Any) -> Joined:
    client = AsyncRealtimeClient(f"{live.base}/realtime/v1", token=token, auto_reconnect=False)
    await client.connect()
    channel = client.channel(
        topic,
        {
            "config": {
                "broadcast": {"ack": False, "self": False, **broadcast},
                "presence": None,
                "private": True,
            }
        },
    )
    joined = Joined(client, channel)
    channel.on_broadcast("*", lambda payload: joined.received.put_nowait(dict(payload)))
    await channel.subscribe(lambda state, err: joined.states.append((state, err)))
    return joined


@pytest.fixture
async def clients() -> AsyncIterator[list[Joined]]:
    made: list[Joined] = []
    yield made
    for joined in made:
        await joined.client.close()


async def test_realtime_py_viewer_receives_a_chat_send_message(
    live: Live, people: RoomPeople, clients: list[Joined], anyio_backend: str
) -> None:
    """The front end's flow: subscribe to the private chat channel, then a message sent
    by chat_send (POST /rest/v1/rpc/chat_send as another registered viewer... here the
    host) arrives as broadcast 'message' whose payload has the row and its seq."""
    viewer = await subscribe(live, user_token(people.viewer), f"webinar:{people.webinar_id}:chat")
    clients.append(viewer)
    assert viewer.states[-1][0] == RealtimeSubscribeStates.SUBSCRIBED
    async with httpx.AsyncClient(base_url=live.base) as http:
        r = await http.post(
            "/rest/v1/rpc/chat_send",
            json={
                "webinar_id": people.webinar_id,
                "body": "hello room",
                "client_msg_id": str(uuid.uuid4()),
            },
            headers={"Authorization": f"Bearer {user_token(people.host)}"},
        )
        assert r.status_code == 200, r.text
        sent = r.json()
    got = await asyncio.wait_for(viewer.received.get(), 5)
    assert got["event"] == "message"
    assert got["payload"]["body"] == "hello room"
    assert got["payload"]["seq"] == sent["seq"]


async def test_realtime_py_stranger_join_is_refused_with_the_reason(
    live: Live, people: RoomPeople, clients: list[Joined], anyio_backend: str
) -> None:
    """A user neither registered nor staff gets CHANNEL_ERROR carrying Supabase's
    Unauthorized reason (never a silent timeout)."""
    stranger = await subscribe(
        live, user_token(people.stranger), f"webinar:{people.webinar_id}:chat"
    )
    clients.append(stranger)
    state, err = stranger.states[-1]
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "You do not have permissions to read from this Channel topic" in str(err)


async def test_realtime_py_admin_receives_pushed_stats(
    live: Live, people: RoomPeople, clients: list[Joined], anyio_backend: str
) -> None:
    """A host subscribed to webinar:{id}:admin receives event stats (access_stats)
    within the push interval, without polling."""
    admin = await subscribe(live, user_token(people.host), f"webinar:{people.webinar_id}:admin")
    clients.append(admin)
    assert admin.states[-1][0] == RealtimeSubscribeStates.SUBSCRIBED
    got = await asyncio.wait_for(admin.received.get(), 5)
    assert got["event"] == "stats"
    assert {"current_participants", "peak_participants", "registrations"} <= set(got["payload"])


async def test_realtime_py_client_broadcast_to_chat_is_refused(
    live: Live, people: RoomPeople, clients: list[Joined], anyio_backend: str
) -> None:
    """send_broadcast with ack on chat is answered error; http_send (REST) is accepted
    as Supabase does (202) but dropped by the insert policy; the listening viewer receives
    neither."""
    topic = f"webinar:{people.webinar_id}:chat"
    listener = await subscribe(live, user_token(people.viewer), topic)
    sender = await subscribe(live, user_token(people.host), topic, ack=True)
    clients.extend([listener, sender])
    replies: list[Any] = []
    push = await sender.channel.push(
        "broadcast", {"type": "broadcast", "event": "message", "payload": {"body": "spoof"}}
    )
    push.receive("error", lambda payload: replies.append(("error", payload)))
    push.receive("ok", lambda payload: replies.append(("ok", payload)))
    await sender.channel.http_send("message", {"body": "spoof over REST"})
    for _ in range(50):
        if replies:
            break
        await asyncio.sleep(0.05)
    assert replies
    assert replies[0][0] == "error"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(listener.received.get(), 1.0)


async def test_realtime_py_set_auth_refresh_keeps_the_channel(
    live: Live, people: RoomPeople, clients: list[Joined], anyio_backend: str
) -> None:
    """set_auth sends access_token on the joined channel; a still-valid token keeps it
    (the hub re-probes the policies) and events keep arriving."""
    viewer = await subscribe(live, user_token(people.viewer), f"webinar:{people.webinar_id}:chat")
    clients.append(viewer)
    await viewer.client.set_auth(user_token(people.viewer, iat=12345))
    async with httpx.AsyncClient(base_url=live.base) as http:
        r = await http.post(
            "/rest/v1/rpc/chat_send",
            json={"webinar_id": people.webinar_id, "body": "after refresh"},
            headers={"Authorization": f"Bearer {user_token(people.host)}"},
        )
        assert r.status_code == 200, r.text
    got = await asyncio.wait_for(viewer.received.get(), 5)
    assert got["payload"]["body"] == "after refresh"
