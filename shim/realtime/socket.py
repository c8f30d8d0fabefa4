"""``GET /realtime/v1/websocket``: one Phoenix socket, as Supabase's Realtime answers it.

Per connection: a receive loop that handles frames in order, a writer task that drains
the connection's bounded queue (``sink.Sink``), and its channels by topic. Events handled:
``heartbeat`` (topic ``phoenix``), ``phx_join``, ``phx_leave``, ``access_token``,
``broadcast`` (client to server), ``presence`` (refused: not served). Every frame that
carries a ref gets an answer on that ref; a frame that cannot be read gets an error reply
on whatever ref could be read, and the socket stays open.

Join = the token is verified, then the ``realtime.messages`` select policies are probed
(``authorize.may_receive``) and the answer kept for the channel's life. It is checked
again on ``access_token`` and when the token expires; a revoked or expired channel gets a
``system`` message with the reason, then ``phx_close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from shim.realtime import authorize, protocol, topics, wire
from shim.realtime.authorize import DenyCache, Principal, ProbeError
from shim.realtime.channel import Channel, unauthorized
from shim.realtime.hub import Hub
from shim.realtime.sink import Sink

log = logging.getLogger("eventlive.realtime")


class TokenRejectedError(Exception):
    """The verifier refused a token; the message is for the client."""


Verify = Callable[[str | None], Awaitable[Principal]]

# Close codes: 1008 policy (bad apikey), 1013 try again later (laggard).
CLOSE_POLICY = 1008
CLOSE_LAGGARD = 1013

UNAVAILABLE = "UnableToSetPolicies: Realtime was unable to connect to the project database"


class Connection:
    """One WebSocket client (see module doc)."""

    def __init__(
        self,
        ws: WebSocket,
        hub: Hub,
        verify: Verify,
        deny: DenyCache,
        *,
        vsn: str,
        token: str | None,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.verify = verify
        self.deny = deny
        self.vsn = vsn
        self.socket_token = token
        self.settings = hub.settings
        self.sink = Sink(vsn, hub.settings.queue, self._lagged)
        # Write frames straight to the socket when the server's transport is reachable.
        self.sink.transport = wire.find_transport(getattr(ws, "_send", None))
        self.channels: dict[str, Channel] = {}
        self._join_times: list[float] = []
        self._closing = False

    # -- plumbing -----------------------------------------------------------------------

    def send(self, frame: protocol.Encoded) -> None:
        self.sink.offer((frame, 0, 0))

    def reply(
        self,
        frame: protocol.Frame | None,
        status: str,
        response: Any,
        *,
        topic: str | None = None,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> None:
        if frame is not None:
            topic, ref, join_ref = frame.topic, frame.ref, frame.join_ref
        self.send(
            protocol.reply(
                self.vsn, topic or "phoenix", status, response, join_ref=join_ref, ref=ref
            )
        )

    def system(self, ch: Channel, status: str, message: str, **extra: Any) -> protocol.Encoded:
        payload = {
            "extension": "system",
            "status": status,
            "message": message,
            "channel": ch.topic.name,
            **extra,
        }
        return protocol.encode(self.vsn, ch.topic.wire, "system", payload, join_ref=ch.join_ref)

    def close_frame(self, ch: Channel) -> protocol.Encoded:
        return protocol.encode(
            self.vsn, ch.topic.wire, "phx_close", {}, join_ref=ch.join_ref, ref=ch.join_ref
        )

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data: str | bytes | None = msg.get("text")
                if data is None:
                    data = msg.get("bytes")
                if data is None:
                    continue
                await self.handle(data)
                if self._closing:
                    break
        except WebSocketDisconnect:
            pass
        finally:
            self._leave_all()
            if not self._closing:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, 5.0)

    async def _writer(self) -> None:
        ws = self.ws
        queue = self.sink.queue
        try:
            while True:
                frame, webinar_id, seq = await queue.get()
                if seq:  # handed to the socket: the laggard's notice names it
                    self.sink.sent[webinar_id] = seq
                if isinstance(frame, bytes):
                    if frame == b"":  # the close marker
                        break
                    await ws.send_bytes(frame)
                else:
                    await ws.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        if self._closing and ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await ws.close(CLOSE_LAGGARD, "too slow")

    def _lagged(self, sink: Sink) -> None:
        """The queue is full: say so on every channel with the resume seq, then close."""
        self.hub.counters.laggards += 1
        self._closing = True
        sink.drain()
        for ch in list(self.channels.values()):
            self.hub.unsubscribe(ch.topic.webinar_id, ch.topic.channel, sink)
            last = sink.sent.get(ch.topic.webinar_id, 0)
            sink.urgent(
                (
                    self.system(
                        ch,
                        "error",
                        f"Too slow: the server dropped this connection {self.settings.queue} events "
                        f"behind; resume after seq {last} with chat_since / questions",
                        reason="too_slow",
                        last_seq=last,
                    ),
                    0,
                    0,
                )
            )
        self.channels.clear()
        sink.urgent((b"", 0, 0))
        # The receive loop may be idle: wake it by closing from the writer's side.

    def _leave_all(self) -> None:
        for ch in self.channels.values():
            if ch.expiry is not None:
                ch.expiry.cancel()
            self.hub.unsubscribe(ch.topic.webinar_id, ch.topic.channel, self.sink)
        self.channels.clear()
        self.sink.closed = True

    # -- frames -------------------------------------------------------------------------

    async def handle(self, data: str | bytes) -> None:
        """One client frame; anything with a ref gets an answer on it."""
        if len(data) > self.settings.max_frame:
            self._too_large(data)
            return
        try:
            frame = protocol.decode(data, self.vsn)
        except protocol.FrameError as exc:
            reason = {"reason": f"Malformed message: {exc}"}
            self.reply(None, "error", reason, topic=exc.topic, ref=exc.ref)
            return
        if frame.topic == "phoenix":
            if frame.event == "heartbeat":
                self.reply(frame, "ok", {})
            else:
                reason = {"reason": f"Unknown event on topic phoenix: {frame.event}"}
                self.reply(frame, "error", reason)
        elif frame.event == "phx_join":
            await self.join(frame)
        elif (ch := self.channels.get(frame.topic)) is None:
            self.reply(frame, "error", {"reason": "unmatched topic"})
        else:
            await self._channel_event(ch, frame)

    def _too_large(self, data: str | bytes) -> None:
        ref = protocol.head_ref(data, self.vsn)
        reason = {"reason": f"Frame too large: the limit is {self.settings.max_frame} bytes"}
        self.reply(None, "error", reason, ref=ref)

    async def _channel_event(self, ch: Channel, frame: protocol.Frame) -> None:
        if frame.event == "phx_leave":
            self.leave(ch, frame)
        elif frame.event == "access_token":
            await self.refresh(ch, frame)
        elif frame.event == "broadcast":
            await self.client_broadcast(ch, frame)
        elif frame.event == "presence":
            self.reply(frame, "error", {"reason": "Presence is not available on this server"})
        else:
            self.reply(frame, "error", {"reason": f"Unknown event: {frame.event}"})

    def _join_allowed(self) -> bool:
        now = time.monotonic()
        self._join_times = [t for t in self._join_times if now - t < 1.0]
        if len(self._join_times) >= self.settings.joins_per_second:
            return False
        self._join_times.append(now)
        return True

    def refuse(self, frame: protocol.Frame, reason: str) -> None:
        self.hub.counters.joins_refused += 1
        self.reply(frame, "error", {"reason": reason})

    def _check_join(self, frame: protocol.Frame) -> tuple[topics.Topic, dict[str, Any]] | str:
        """The topic and config of a join, or why it is refused (no database needed)."""
        name = frame.topic.removeprefix(topics.PREFIX)
        topic = topics.parse(name)
        config = frame.payload.get("config")
        config = config if isinstance(config, dict) else {}
        token = frame.payload.get("access_token")
        refusal = None
        if not self._join_allowed():
            refusal = "ClientJoinRateLimitReached: Too many joins per second"
        elif frame.topic not in self.channels and len(self.channels) >= self.settings.max_channels:
            refusal = "ChannelRateLimitReached: Too many channels"
        elif not frame.topic.startswith(topics.PREFIX):
            refusal = "unmatched topic"
        elif topic is None:
            refusal = f"UnknownTopic: no such topic here: {name[:200]}"
        elif config.get("private") is not True:
            refusal = "PrivateOnly: This project only allows private channels"
        elif token is not None and not isinstance(token, str):
            refusal = "InvalidJWTToken: access_token must be a string"
        if refusal is not None or topic is None:
            return refusal or "unmatched topic"
        return topic, config

    async def _authorized(
        self, topic: topics.Topic, principal: Principal, token: str | None
    ) -> str | None:
        """None when the select policies let ``principal`` receive ``topic``, else why not."""
        if self.deny.refused(token, topic.name):
            return unauthorized(topic)
        self.hub.counters.probes += 1
        try:
            allowed = await self.hub.may_receive(principal, topic.name)
        except ProbeError:
            return UNAVAILABLE
        if not allowed:
            self.deny.add(token, topic.name)
            return unauthorized(topic)
        return None

    async def join(self, frame: protocol.Frame) -> None:
        """``phx_join``: checks, token, policies, then subscribe and reply ok."""
        checked = self._check_join(frame)
        if isinstance(checked, str):
            self.refuse(frame, checked)
            return
        topic, config = checked
        token = frame.payload.get("access_token") or self.socket_token
        principal = await self._principal(frame, token)
        if principal is None:
            return
        refusal = await self._authorized(topic, principal, token)
        if refusal is None:
            try:
                room = await self.hub.room(topic.webinar_id)
            except (psycopg.Error, OSError) as exc:
                log.warning("realtime room open: %s", exc)
                refusal = UNAVAILABLE
        if refusal is not None:
            self.refuse(frame, refusal)
            return
        if self.sink.closed or self._closing:
            return
        old = self.channels.pop(frame.topic, None)
        if old is not None:  # a second join of a topic replaces the first (as Phoenix)
            self._drop(old)
            self.send(self.close_frame(old))
        broadcast = config.get("broadcast")
        broadcast = broadcast if isinstance(broadcast, dict) else {}
        ch = Channel(
            topic,
            frame.join_ref,
            principal,
            token,
            ack=broadcast.get("ack") is True,
            self_broadcast=broadcast.get("self") is True,
        )
        self.channels[frame.topic] = ch
        self.hub.counters.joins += 1
        # The reply is queued before any event of the channel: no await in between.
        self.reply(frame, "ok", {"postgres_changes": []})
        self.hub.subscribe(room, topic.channel, self.sink, topic.wire)
        self._arm_expiry(ch)
        presence = config.get("presence")
        if isinstance(presence, dict) and presence.get("enabled") is True:
            notice = {
                "extension": "presence",
                "status": "ok",
                "channel": topic.name,
                "message": "Presence is not available on this server: joined without it",
            }
            self.send(protocol.encode(self.vsn, topic.wire, "system", notice, join_ref=ch.join_ref))

    async def _principal(self, frame: protocol.Frame, token: str | None) -> Principal | None:
        try:
            principal = await self.verify(token)
        except TokenRejectedError as exc:
            self.refuse(frame, f"InvalidJWTToken: {exc}")
            return None
        if principal.expires is None:
            self.refuse(frame, "InvalidJWTToken: Fields `role` and `exp` are required in JWT")
            return None
        if principal.expires <= time.time():
            self.refuse(frame, "InvalidJWTToken: Token has expired")
            return None
        return principal

    def _drop(self, ch: Channel) -> None:
        if ch.expiry is not None:
            ch.expiry.cancel()
        self.hub.unsubscribe(ch.topic.webinar_id, ch.topic.channel, self.sink)

    def _arm_expiry(self, ch: Channel) -> None:
        if ch.expiry is not None:
            ch.expiry.cancel()
        assert ch.principal.expires is not None
        delay = max(0.0, ch.principal.expires - time.time())
        ch.expiry = asyncio.get_running_loop().call_later(delay, self._expired, ch)

    def _expired(self, ch: Channel) -> None:
        if self.channels.get(ch.topic.wire) is not ch:
            return
        self.shutdown(ch, "InvalidJWTToken: Token has expired", reason="token_expired")

    def shutdown(self, ch: Channel, message: str, *, reason: str) -> None:
        """Close one channel with a ``system`` message saying why, then ``phx_close``."""
        self.channels.pop(ch.topic.wire, None)
        self._drop(ch)
        self.send(self.system(ch, "error", message, reason=reason))
        self.send(self.close_frame(ch))

    def leave(self, ch: Channel, frame: protocol.Frame) -> None:
        self.channels.pop(ch.topic.wire, None)
        self._drop(ch)
        self.reply(frame, "ok", {})
        self.send(self.close_frame(ch))

    async def refresh(self, ch: Channel, frame: protocol.Frame) -> None:
        """``access_token``: verify the new token and probe the policies again; a token or
        permission that is gone closes the channel with the reason."""
        token = frame.payload.get("access_token")
        if token is None or token == ch.token:
            return
        if not isinstance(token, str):
            self.reply(frame, "error", {"reason": "access_token must be a string"})
            return
        try:
            principal = await self.verify(token)
            if principal.expires is None or principal.expires <= time.time():
                raise TokenRejectedError("Token has expired")
            allowed = await self.hub.may_receive(principal, ch.topic.name)
        except TokenRejectedError as exc:
            self.shutdown(ch, f"InvalidJWTToken: {exc}", reason="token_invalid")
            return
        except ProbeError:
            self.shutdown(ch, UNAVAILABLE, reason="database_unavailable")
            return
        if self.channels.get(ch.topic.wire) is not ch:
            return
        if not allowed:
            message = (
                f"You no longer have permission to read from this Channel topic: {ch.topic.name}"
            )
            self.shutdown(ch, message, reason="permission_revoked")
            return
        ch.principal, ch.token, ch.may_send = principal, token, None
        self._arm_expiry(ch)

    async def client_broadcast(self, ch: Channel, frame: protocol.Frame) -> None:
        """A client's broadcast: the insert policies decide (checked once per channel)."""
        if ch.may_send is None:
            try:
                ch.may_send = await authorize.may_send(self.hub.db, ch.principal, ch.topic.name)
            except ProbeError:
                if ch.ack:
                    self.reply(
                        frame,
                        "error",
                        {"reason": "Realtime was unable to connect to the project database"},
                    )
                return
        if not ch.may_send:
            if ch.ack:
                self.reply(
                    frame,
                    "error",
                    {
                        "reason": "Unauthorized: You do not have permissions "
                        f"to write to this Channel topic: {ch.topic.name}"
                    },
                )
            return
        # Through the database to every process (this one included), in commit order.
        skip = None if ch.self_broadcast else self.sink
        reason = await self.hub.broadcasts.send_client(ch.topic, frame.payload, skip)
        if ch.ack:
            self.reply(frame, "error" if reason else "ok", {"reason": reason} if reason else {})
