"""``GET /api/webinars/{id}/events?topics=chat,qa``: the room's events as Server-Sent
Events, for clients without WebSocket. Same events, same authorization (the select
policies probed per topic at connect), same hub (an SSE subscriber is one more sink).

Framing: ``id: <seq>``, ``event: <name>``, ``data: <payload JSON>``; a comment line every
``keepalive_seconds``; ``Last-Event-ID`` (header, or ``last_event_id`` query parameter)
resumes after that seq: the backlog is read once, live events wait until it is written.
Topics: ``chat``, ``qa``, ``admin``, ``user`` (= ``user:<the caller's id>``).

Credential: ``Authorization: Bearer`` (fetch-based readers), or for ``EventSource`` a
one-time ticket from ``POST /api/webinars/{id}/events/ticket``, valid
``ticket_seconds``, in ``?ticket=``: never the JWT in a URL. A ticket is signed (HMAC,
``EVENTLIVE_REALTIME_TICKET_SECRET``, the same on every node) and carries only role,
sub, exp of the token it was bought with; it is accepted once across the deployment: its
nonce's first use is an insert in the database (``eventlive.use_sse_ticket``), any later
one, on any process or node, is refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shim.realtime import authorize, topics
from shim.realtime.hub import SSE, Hub, sse_event
from shim.realtime.settings import HubSettings
from shim.realtime.sink import Sink
from shim.realtime.socket import TokenRejectedError, Verify
from shim.web.errors import ApiError
from shim.web.ids import invalid_webinar_id, webinar_id
from shim.web.token import bearer


class Realtime(Protocol):
    """What the SSE routes use of the realtime service (``shim.realtime.service``)."""

    settings: HubSettings
    hub: Hub
    verify: Verify
    tickets: Tickets


BACKLOG_MAX = 1000


def path_webinar_id(request: Request) -> int | None:
    """The webinar id of the route's path, by the one rule (``shim.web.ids``)."""
    raw = request.path_params.get("webinar_id", "")
    return webinar_id(raw) if isinstance(raw, str) else None


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket whose signature and expiry hold: its principal, nonce and expiry."""

    principal: authorize.Principal
    nonce: str
    expires: float


class Tickets:
    """Short-lived, signed tickets for ``EventSource``; one-time by ``Hub.use_ticket``."""

    def __init__(self, settings: HubSettings) -> None:
        self.seconds = settings.ticket_seconds
        self.key = (settings.ticket_secret or secrets.token_hex(32)).encode()

    def _sign(self, body: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.digest(self.key, body, hashlib.sha256))
            .decode()
            .rstrip("=")
        )

    def issue(self, principal: authorize.Principal, webinar: int) -> str:
        claims = json.loads(principal.claims)
        body = json.dumps(
            {
                "w": webinar,
                "r": principal.role,
                "s": principal.sub,
                "x": principal.expires,
                "a": claims.get("aud"),
                "e": time.time() + self.seconds,
                "n": secrets.token_hex(16),
            },
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._sign(body)

    def check(self, ticket: str, webinar: int) -> Ticket | None:
        """The ticket, when signed by this key, for this webinar and not expired; whether
        it was used already is the database's to say (``Hub.use_ticket``)."""
        head, _, sig = ticket.partition(".")
        try:
            body = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(body), sig):
            return None
        data: dict[str, Any] = json.loads(body)
        now = time.time()
        if data["w"] != webinar or data["e"] < now or (data["x"] or 0) < now:
            return None
        claims = {"role": data["r"], "sub": data["s"], "exp": data["x"]}
        if data.get("a") is not None:
            claims["aud"] = data["a"]
        principal = authorize.Principal(data["r"], json.dumps(claims), data["x"])
        return Ticket(principal, data["n"], data["e"])


async def _principal(request: Request, rt: Realtime, wid: int) -> authorize.Principal:
    ticket = request.query_params.get("ticket")
    if ticket:
        checked = rt.tickets.check(ticket, wid)
        if checked is None or not await rt.hub.use_ticket(checked.nonce, checked.expires):
            message = "Ticket invalid, expired or used"
            raise ApiError(401, "PGRST301", message, details="invalid_ticket")
        principal = checked.principal
    else:
        try:
            principal = await rt.verify(bearer(dict(request.scope["headers"])))
        except TokenRejectedError as exc:
            raise ApiError(401, "PGRST301", str(exc), details="invalid_token") from None
    if principal.expires is None or principal.expires <= time.time() or not principal.sub:
        message = "A user token with exp is required"
        raise ApiError(401, "PGRST301", message, details="not_authenticated")
    return principal


def _topics(request: Request, wid: int, sub: str) -> list[topics.Topic]:
    wanted = request.query_params.get("topics", "chat,qa").split(",")
    chosen: list[topics.Topic] = []
    for name in dict.fromkeys(t.strip() for t in wanted if t.strip()):
        channel = f"user:{sub}" if name == "user" else name
        known = name in (*topics.CHANNELS, "user")
        topic = topics.parse(f"webinar:{wid}:{channel}") if known else None
        if topic is None:
            raise ApiError(400, "22023", f"Unknown topic: {name[:50]}", details="unknown_topic")
        chosen.append(topic)
    if not chosen:
        raise ApiError(400, "22023", "No topics", details="unknown_topic")
    return chosen


def _last_event_id(request: Request) -> int | None:
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not last:
        return None
    if not (last.isascii() and last.isdigit() and len(last) <= 18):
        message = "Last-Event-ID must be a seq"
        raise ApiError(400, "22P02", message, details="invalid_last_event_id")
    return int(last)


async def events(request: Request, rt: Realtime) -> Response:
    """The SSE route (see module doc)."""
    wid = path_webinar_id(request)
    if wid is None:
        return invalid_webinar_id().response()
    try:
        principal = await _principal(request, rt, wid)
        chosen = _topics(request, wid, principal.sub)
        after = _last_event_id(request)
        for topic in chosen:
            if not await rt.hub.may_receive(principal, topic.name):
                message = f"You may not receive {topic.name}"
                raise ApiError(403, "PT403", message, details="not_allowed")
        room = await rt.hub.room(wid)
    except ApiError as exc:
        return exc.response()
    except (authorize.ProbeError, psycopg.Error, OSError):
        return ApiError(
            503, "PGRST000", "Database unavailable", details="database_unavailable"
        ).response()
    assert principal.expires is not None
    stream = Stream(
        rt, Sink(SSE, rt.settings.queue, lambda s: None), wid, chosen, principal.expires
    )
    if after is not None:
        stream.sink.held = []
    for topic in chosen:
        rt.hub.subscribe(room, topic.channel, stream.sink, topic.wire)
    # Events up to the cursor come from the backlog, later ones from the hub (held meanwhile).
    return StreamingResponse(
        stream.frames(after, room.cursor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@dataclass
class Stream:
    """One SSE subscriber: its sink, webinar, topics and token expiry."""

    rt: Realtime
    sink: Sink
    wid: int
    chosen: list[topics.Topic]
    expires: float

    async def frames(self, after: int | None, upto: int) -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            if after is not None:
                for frame in await self._backlog(after, upto):
                    yield frame
            while True:
                frame = await self._next()
                yield frame
                if frame.startswith("event: system"):
                    return
        finally:
            self.sink.closed = True
            for topic in self.chosen:
                self.rt.hub.unsubscribe(self.wid, topic.channel, self.sink)

    async def _backlog(self, after: int, upto: int) -> list[str]:
        rows = await self.rt.hub.events_since(self.wid, after, BACKLOG_MAX) if after < upto else []
        if len(rows) >= BACKLOG_MAX and rows[-1][0] < upto:
            return [_system("too_far_behind", after)]
        channels = {t.channel for t in self.chosen}
        out = [
            sse_event(event, payload, seq)
            for seq, channel, event, payload in rows
            if seq <= upto and channel in channels
        ]
        held, self.sink.held = self.sink.held or [], None
        for item in held:
            self.sink.offer(item)
        return out

    async def _next(self) -> str:
        """The next frame: an event, a keep-alive comment, or a final system event."""
        remaining = self.expires - time.time()
        if remaining <= 0:
            return _system("token_expired", None)
        if self.sink.lagging:
            return _system("too_slow", self.sink.sent.get(self.wid, 0))
        try:
            frame, _, seq = await asyncio.wait_for(
                self.sink.queue.get(), min(self.rt.settings.keepalive_seconds, remaining)
            )
        except TimeoutError:
            return ": keep-alive\n\n"
        if seq:
            self.sink.sent[self.wid] = seq
        return frame if isinstance(frame, str) else frame.decode()


def _system(reason: str, last_seq: int | None) -> str:
    data = json.dumps({"reason": reason, "last_seq": last_seq})
    return f"event: system\ndata: {data}\n\n"
