"""The socket's answers that need no policy decision, over a real uvicorn and the
``websockets`` client: heartbeat, every kind of bad input answered on its ref with the
socket still open, refused joins always answered (never silence), join floods limited."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from live_support import Live, open_phx, user_token
from websockets.exceptions import InvalidStatus

from shim.realtime import protocol

pytestmark = pytest.mark.anyio
UID = "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10"


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_heartbeat_is_answered_ok_on_topic_phoenix(
    live: Live, vsn: str, anyio_backend: str
) -> None:
    """realtime-js and realtime-py send heartbeat on topic "phoenix" every 25-30 s and
    expect phx_reply ok on the same ref, in either wire version."""
    conn, phx = await open_phx(live, vsn)
    async with conn:
        ref = await phx.push("phoenix", "heartbeat", {})
        msg = await phx.expect(ref=ref)
        assert msg["event"] == "phx_reply"
        assert msg["topic"] == "phoenix"
        assert msg["payload"] == {"status": "ok", "response": {}}


@pytest.mark.parametrize(
    ("raw", "ref"),
    [
        ("{not json", None),
        ('["1","8","realtime:x"]', "8"),
        ('["1","9","realtime:x","phx_join","payload is not an object"]', "9"),
        ('["1","10","realtime:x","phx_join",{"a":NaN}]', None),
    ],
)
async def test_malformed_frame_gets_an_error_on_its_ref_and_the_socket_survives(
    live: Live, raw: str, ref: str | None, anyio_backend: str
) -> None:
    """A frame that cannot be read is answered phx_reply error (on its ref when one could
    be read); the next heartbeat on the same socket is still answered."""
    conn, phx = await open_phx(live)
    async with conn:
        await conn.send(raw)
        msg = await phx.expect(event="phx_reply")
        assert msg["ref"] == ref
        assert msg["payload"]["status"] == "error"
        assert msg["payload"]["response"]["reason"].startswith("Malformed message")
        hb = await phx.push("phoenix", "heartbeat", {})
        assert (await phx.expect(ref=hb))["payload"]["status"] == "ok"


async def test_oversized_frame_is_refused_without_being_parsed(
    live: Live, anyio_backend: str
) -> None:
    """A frame over EVENTLIVE_REALTIME_MAX_FRAME is refused on its ref; socket stays open."""
    conn, phx = await open_phx(live)
    async with conn:
        big = json.dumps(["1", "77", "realtime:webinar:1:chat", "broadcast", {"x": "a" * 70_000}])
        await conn.send(big)
        msg = await phx.expect(ref="77")
        assert msg["payload"]["status"] == "error"
        assert "too large" in msg["payload"]["response"]["reason"]
        hb = await phx.push("phoenix", "heartbeat", {})
        assert (await phx.expect(ref=hb))["payload"]["status"] == "ok"


async def test_unknown_binary_frame_kind_is_answered(live: Live, anyio_backend: str) -> None:
    """A binary frame of a kind clients never send gets an error reply, not a crash."""
    conn, phx = await open_phx(live)
    async with conn:
        await conn.send(b"\x07abc")
        msg = await phx.expect(event="phx_reply")
        assert msg["payload"]["status"] == "error"
        hb = await phx.push("phoenix", "heartbeat", {})
        assert (await phx.expect(ref=hb))["payload"]["status"] == "ok"


@pytest.mark.parametrize(
    ("topic", "private", "reason"),
    [
        ("webinar:1:chat", True, "unmatched topic"),  # no realtime: prefix
        ("realtime:room1", True, "UnknownTopic"),
        ("realtime:webinar:1:lobby", True, "UnknownTopic"),
        ("realtime:webinar:0:chat", True, "UnknownTopic"),
        ("realtime:webinar:1:user:not-a-uuid", True, "UnknownTopic"),
        ("realtime:webinar:1:chat", False, "PrivateOnly"),
    ],
)
async def test_refused_joins_always_get_phx_reply_error_with_a_reason(
    live: Live, topic: str, private: bool, reason: str, anyio_backend: str
) -> None:
    """Unknown topics, topics without the realtime: prefix, and public joins of webinar
    topics are refused with status error and response.reason -- never silence."""
    conn, phx = await open_phx(live)
    async with conn:
        msg = await phx.join(topic, user_token(UID), private=private)
        assert msg["payload"]["status"] == "error"
        assert msg["payload"]["response"]["reason"].startswith(reason)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1_000}, "InvalidJWTToken"),  # long expired
        ({"exp": None}, "Fields `role` and `exp` are required"),
    ],
)
async def test_join_with_an_expired_or_exp_less_token_is_refused(
    live: Live, claims: dict[str, Any], reason: str, anyio_backend: str
) -> None:
    """The join's access_token is verified by the shim's authenticator; Supabase also
    requires exp (a channel must end when its token does)."""
    conn, phx = await open_phx(live)
    async with conn:
        msg = await phx.join("realtime:webinar:1:chat", user_token(UID, **claims))
        assert msg["payload"]["status"] == "error"
        assert reason in msg["payload"]["response"]["reason"]


async def test_join_with_a_forged_token_is_refused(live: Live, anyio_backend: str) -> None:
    """A token signed with another key is refused at join with the verifier's reason."""
    from shim_support import token

    conn, phx = await open_phx(live)
    async with conn:
        forged = token({"sub": UID}, key="another-secret-of-at-least-32-bytes!!")
        msg = await phx.join("realtime:webinar:1:chat", forged)
        assert msg["payload"]["status"] == "error"
        assert msg["payload"]["response"]["reason"].startswith("InvalidJWTToken")


async def test_join_flood_from_one_connection_is_rate_limited(
    live: Live, anyio_backend: str
) -> None:
    """More than EVENTLIVE_REALTIME_JOINS_PER_SECOND joins in a second on one socket are
    refused with ClientJoinRateLimitReached (each still answered)."""
    conn, phx = await open_phx(live)
    async with conn:
        refs = []
        for _ in range(15):
            refs.append(
                await phx.push(
                    "realtime:webinar:1:lobby", "phx_join", {"config": {"private": True}}
                )
            )
        reasons = []
        for ref in refs:
            msg = await phx.expect(ref=ref)
            reasons.append(msg["payload"]["response"]["reason"])
        assert sum(r.startswith("ClientJoinRateLimitReached") for r in reasons) == 5
        assert all(r.startswith(("ClientJoinRateLimitReached", "UnknownTopic")) for r in reasons)


async def test_events_on_a_topic_not_joined_are_answered_unmatched(
    live: Live, anyio_backend: str
) -> None:
    """Phoenix answers a push to a topic the socket has not joined with "unmatched topic"."""
    conn, phx = await open_phx(live)
    async with conn:
        ref = await phx.push(
            "realtime:webinar:1:chat",
            "broadcast",
            {"type": "broadcast", "event": "x", "payload": {}},
        )
        msg = await phx.expect(ref=ref)
        assert msg["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}


async def test_unknown_vsn_and_bad_apikey_are_refused_at_the_handshake(
    live: Live, anyio_backend: str
) -> None:
    """The upgrade is refused (403) for a vsn we do not speak or an apikey that is no token."""
    from websockets.asyncio.client import connect

    for query in ("vsn=3.0.0", "vsn=2.0.0&apikey=not-a-jwt"):
        with pytest.raises(InvalidStatus) as err:
            async with connect(f"{live.ws}?{query}"):
                pass
        assert err.value.response.status_code == 403


async def test_binary_broadcast_on_a_topic_not_joined_is_answered_on_its_ref(
    live: Live, anyio_backend: str
) -> None:
    """The kind-3 frame realtime-js sends for channel.send is read (ref included)."""
    conn, phx = await open_phx(live)
    async with conn:
        await conn.send(
            protocol.user_broadcast_push_binary("1", "42", "realtime:webinar:1:chat", "x", b"{}")
        )
        msg = await phx.expect(ref="42")
        assert msg["payload"]["response"]["reason"] == "unmatched topic"
        await asyncio.sleep(0)
