"""Helpers of the realtime tests: the shim (HTTP app + hub) on real uvicorn over the
plugin's migrated clone, and a small Phoenix client on ``websockets`` that speaks either
wire version and reads frames until one matches."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import psycopg
from shim_support import SECRET, settings_for, token, uvicorn_server
from websockets.asyncio.client import ClientConnection, connect

from shim.realtime import HubSettings
from shim.serve.app import create_app
from shim.testing import as_service_role, create_user


@dataclasses.dataclass
class Live:
    """A running shim: ``base`` (http://...), ``ws`` (ws://...), the app, the database."""

    base: str
    app: Any
    dsn: str
    admin_dsn: str

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://") + "/realtime/v1/websocket"

    @property
    def hub(self) -> Any:
        return self.app.state.realtime.hub


def start_live(db: Any, **hub: Any) -> Iterator[Live]:
    """The app with the hub settings ``hub`` (small and fast for tests by default)."""
    hub_settings = HubSettings(
        **{"tick": 0.5, "stats_seconds": 1.0, "deny_cache_seconds": 0, **hub}
    )
    settings = settings_for(db.dsn, schemas=("api",), pool_max=4)
    app = create_app(settings, hub_settings)
    with uvicorn_server(app) as base:
        yield Live(base, app, db.dsn, db.admin_dsn)


class Phx:
    """A minimal Phoenix client: ``push`` a frame, ``expect`` the next matching one."""

    def __init__(self, conn: ClientConnection, vsn: str) -> None:
        self.conn = conn
        self.vsn = vsn
        self.ref = 0
        self.seen: list[Any] = []

    def frame(
        self, topic: str, event: str, payload: Any, join_ref: str | None = None
    ) -> tuple[str, str]:
        self.ref += 1
        ref = str(self.ref)
        if self.vsn == "2.0.0":
            return json.dumps([join_ref, ref, topic, event, payload]), ref
        return json.dumps(
            {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
        ), ref

    async def push(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> str:
        text, ref = self.frame(topic, event, payload, join_ref)
        await self.conn.send(text)
        return ref

    def norm(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes):
            return {"binary": raw}
        data = json.loads(raw)
        if isinstance(data, list):
            return dict(zip(("join_ref", "ref", "topic", "event", "payload"), data, strict=True))
        return dict(data)

    async def expect(self, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame whose fields equal ``match`` (others are kept in ``seen``)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = self.norm(await self.conn.recv())
                self.seen.append(msg)
                if all(msg.get(k) == v for k, v in match.items()):
                    return msg

    async def join(
        self, topic: str, access_token: str | None, *, private: bool = True, **config: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"enabled": False},
                "private": private,
                **config,
            }
        }
        if access_token is not None:
            payload["access_token"] = access_token
        ref = await self.push(topic, "phx_join", payload, join_ref=str(self.ref + 1))
        return await self.expect(ref=ref, event="phx_reply")


async def open_phx(
    live: Live, vsn: str = "2.0.0", apikey: str | None = None, *, compress: bool = True
) -> tuple[ClientConnection, Phx]:
    url = f"{live.ws}?vsn={vsn}" + (f"&apikey={apikey}" if apikey else "")
    conn = await connect(url, max_size=2**24, compression="deflate" if compress else None)
    return conn, Phx(conn, vsn)


def user_token(sub: str, **claims: Any) -> str:
    """An authenticated user's token signed with the tests' secret."""
    return token({"sub": sub, **claims}, key=SECRET)


@dataclasses.dataclass(frozen=True)
class RoomPeople:
    """A webinar with a registered viewer, a host (staff) and a stranger."""

    webinar_id: int
    viewer: str
    host: str
    stranger: str


def make_room(admin_dsn: str, webinar_id: int = 4242) -> RoomPeople:
    """Create the webinar (live, registration required) and its people, committed."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        viewer, host, stranger = (str(create_user(conn)) for _ in range(3))
        with as_service_role(conn, commit=True):
            conn.execute(
                "select api.upsert_webinar(%s, 'Live room test', 'live', 'registered')",
                (webinar_id,),
            )
            conn.execute("select api.register(%s, %s)", (webinar_id, viewer))
            conn.execute("select api.set_staff(%s, %s, 'host')", (webinar_id, host))
    return RoomPeople(webinar_id, viewer, host, stranger)


def publish(
    admin_dsn: str, webinar_id: int, channel: str, event: str, payload: dict[str, Any]
) -> int:
    """``eventlive.publish`` as the SQL functions call it (committed); returns the seq."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select eventlive.publish(%s, %s, %s, %s::jsonb)",
            (webinar_id, channel, event, json.dumps(payload)),
        ).fetchone()
    assert row is not None
    return int(row[0])


def chat_topic(people: RoomPeople, channel: str = "chat") -> str:
    return f"realtime:webinar:{people.webinar_id}:{channel}"
