"""The realtime part of the app: ``Realtime(settings, database_url, verify)`` owns the hub,
the refused-join cache and the SSE tickets, and gives the routes to mount:

- ``GET /realtime/v1/websocket`` (``shim.realtime.socket``)
- ``POST /realtime/v1/api/broadcast``: Supabase's REST broadcast; 202; each private
  message is sent only when the insert policies let the caller write on its topic
  (refused ones are skipped, as Supabase does), through the database to every process
  and node (``shim.realtime.broadcast``); public messages reach no one here
- ``GET /api/webinars/{id}/events`` (``shim.realtime.sse``) and
  ``POST /api/webinars/{id}/events/ticket``
- ``GET /realtime/v1/stats``: the hub's counters (subscribers, reads, frames, laggards)

The shim's HTTP app mounts these and passes its token verifier and, for the pushed admin
stats, its shared GET answer (``stats``, a ``StatsSource``); this package imports
nothing from ``shim.http`` (the direction is http -> realtime).
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from shim.realtime import authorize, protocol, socket, sse, topics
from shim.realtime.authorize import DenyCache
from shim.realtime.hub import Hub, StatsSource
from shim.realtime.settings import HubSettings
from shim.realtime.socket import TokenRejectedError, Verify
from shim.web.body import read_body
from shim.web.errors import ApiError
from shim.web.ids import invalid_webinar_id
from shim.web.token import bearer

MAX_MESSAGES = 100


class Realtime:
    """See module doc."""

    def __init__(
        self,
        settings: HubSettings,
        database_url: str | None,
        verify: Verify,
        *,
        body_timeout: float,
        stats: StatsSource | None = None,
    ) -> None:
        self.settings = settings
        self.body_timeout = (
            body_timeout  # the shim's EVENTLIVE_BODY_TIMEOUT: one limit for all bodies
        )
        self.hub = Hub(settings, database_url, stats)
        self.verify = verify
        self.deny = DenyCache(settings.deny_cache_seconds)
        self.tickets = sse.Tickets(settings)

    async def start(self) -> None:
        await self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute("/realtime/v1/websocket", self._websocket),
            Route("/realtime/v1/api/broadcast", self._broadcast, methods=["POST"]),
            Route(
                "/realtime/v1/api/broadcast/{topic}/events/{event}",
                self._broadcast_one,
                methods=["POST"],
            ),
            Route("/realtime/v1/stats", self._stats, methods=["GET"]),
            Route("/api/webinars/{webinar_id}/events", self._events, methods=["GET"]),
            Route("/api/webinars/{webinar_id}/events/ticket", self._ticket, methods=["POST"]),
        ]

    async def _websocket(self, ws: WebSocket) -> None:
        await _websocket_endpoint(ws, self.hub, self.verify, self.deny)

    async def _stats(self, request: Request) -> Response:
        c = self.hub.counters
        return JSONResponse(
            {
                "pid": os.getpid(),  # which worker answered (`serve --workers N`)
                "rooms": len(self.hub.rooms),
                "subscriptions": self.hub.active(),
                **c.__dict__,
            }
        )

    async def _principal(self, request: Request) -> authorize.Principal:
        try:
            return await self.verify(bearer(dict(request.scope["headers"])))
        except TokenRejectedError as exc:
            raise ApiError(401, "PGRST301", str(exc), details="invalid_token") from None

    async def _broadcast(self, request: Request) -> Response:
        try:
            principal = await self._principal(request)
            messages = _messages(
                await read_body(request, limit=self.settings.max_frame, timeout=self.body_timeout)
            )
        except ApiError as exc:
            return exc.response()
        return await self._send(principal, messages)

    async def _broadcast_one(self, request: Request) -> Response:
        """Supabase's single-message form (realtime-py's ``http_send``): the body is the
        payload, ``?private=true`` makes it private."""
        message = {
            "topic": request.path_params["topic"],
            "event": request.path_params["event"],
            "private": request.query_params.get("private") == "true",
        }
        try:
            principal = await self._principal(request)
            raw = await read_body(request, limit=self.settings.max_frame, timeout=self.body_timeout)
            try:
                message["payload"] = protocol.loads(raw)
            except (ValueError, RecursionError):
                raise ApiError(
                    400, "PGRST102", "Malformed JSON", details="malformed_json"
                ) from None
            messages = _messages(protocol.dumps({"messages": [message]}).encode())
        except ApiError as exc:
            return exc.response()
        return await self._send(principal, messages)

    async def _send(
        self,
        principal: authorize.Principal,
        messages: list[tuple[topics.Topic, str, dict[str, Any]]],
    ) -> Response:
        """Send the messages whose topic the insert policies let ``principal`` write to
        every process's subscribers (``Broadcasts.send``: one transaction for the batch)."""
        try:
            allowed: dict[str, bool] = {}
            for topic, _, _ in messages:
                if topic.name not in allowed:
                    allowed[topic.name] = await authorize.may_send(
                        self.hub.db, principal, topic.name
                    )
            await self.hub.broadcasts.send([m for m in messages if allowed[m[0].name]])
        except (authorize.ProbeError, psycopg.Error, OSError):
            return ApiError(
                503, "PGRST000", "Database unavailable", details="database_unavailable"
            ).response()
        return Response(status_code=202)

    async def _ticket(self, request: Request) -> Response:
        webinar_id = sse.path_webinar_id(request)
        if webinar_id is None:
            return invalid_webinar_id().response()
        try:
            principal = await self._principal(request)
        except ApiError as exc:
            return exc.response()
        if principal.expires is None or not principal.sub:
            return ApiError(
                401, "PGRST301", "A user token with exp is required", details="not_authenticated"
            ).response()
        ticket = self.tickets.issue(principal, webinar_id)
        return JSONResponse({"ticket": ticket, "expires_in": int(self.settings.ticket_seconds)})

    async def _events(self, request: Request) -> Response:
        return await sse.events(request, self)


def _messages(raw: bytes) -> list[tuple[topics.Topic, str, dict[str, Any]]]:
    """The private messages of a REST broadcast body on topics served here; public ones
    and other topics reach no subscriber of this hub and are skipped (202 all the same)."""
    try:
        body = protocol.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "PGRST102", "Malformed JSON", details="malformed_json") from None
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        message = f"messages must be a list of 1 to {MAX_MESSAGES} objects"
        raise ApiError(422, "22023", message, details="invalid_messages")
    out: list[tuple[topics.Topic, str, dict[str, Any]]] = []
    for m in messages:
        if not (
            isinstance(m, dict)
            and isinstance(m.get("topic"), str)
            and isinstance(m.get("event"), str)
            and 0 < len(m["event"]) <= protocol.MAX_EVENT
            and isinstance(m.get("payload", {}), dict)
        ):
            message = "each message needs a topic, an event and an object payload"
            raise ApiError(422, "22023", message, details="invalid_message")
        topic = topics.parse(m["topic"])
        if m.get("private") is True and topic is not None:
            out.append((topic, m["event"], m.get("payload", {})))
    return out


async def _websocket_endpoint(ws: WebSocket, hub: Hub, verify: Verify, deny: DenyCache) -> None:
    """The WebSocket route: check ``vsn`` and ``apikey``, then run the connection."""
    vsn = ws.query_params.get("vsn", protocol.V1)
    if vsn not in protocol.VERSIONS:
        await ws.close(socket.CLOSE_POLICY, "unsupported vsn")
        return
    token = ws.query_params.get("apikey")
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip() or token
    if token:
        try:
            await verify(token)
        except TokenRejectedError:
            await ws.close(socket.CLOSE_POLICY, "invalid apikey")
            return
    await ws.accept()
    await socket.Connection(ws, hub, verify, deny, vsn=vsn, token=token).run()
