"""A minimal WebSocket subscriber for thousands of sockets in one process
(``bench.live_room``): the upgrade by hand, server frames parsed by hand (unmasked,
unfragmented), broadcasts reduced to (seq, sent at) by two regexes -- a fraction of a
general client's CPU per message, so the load generator does not starve the hub it
measures on the same two cores."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

SEQ = re.compile(rb'"seq": ?(\d+)')
SENT_AT = re.compile(rb'"body": ?"t=([0-9.]+)')


@dataclass
class Sub:
    """One subscriber: its token and what it received."""

    index: int
    token: str
    seqs: list[int] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    joined: bool = False
    refused: str | None = None
    retries: int = 0
    proto: RawWs | None = None


class RawWs(asyncio.Protocol):
    """One socket (see module doc)."""

    def __init__(self, sub: Sub) -> None:
        loop = asyncio.get_running_loop()
        self.sub = sub
        self.buf = bytearray()
        self.handshaken: asyncio.Future[bool] = loop.create_future()
        self.reply: asyncio.Future[Any] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio classes; both have write and close.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.handshaken.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.buf.startswith(b"HTTP/1.1 101")
            del self.buf[: end + 4]
            self.handshaken.set_result(ok)
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, head = int.from_bytes(buf[2:4]), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, head = int.from_bytes(buf[2:10]), 10
            if len(buf) < head + n:
                return
            op = buf[0] & 0x0F
            payload = bytes(buf[head : head + n])
            del buf[: head + n]
            if op == 1:
                self._text(payload)
            elif op == 9:  # the server's keep-alive ping (uvicorn: every 20 s): pong
                self._send(0x8A, payload)

    def _text(self, raw: bytes) -> None:
        if b'"broadcast"' in raw:
            now = time.time()
            m = SEQ.search(raw)
            t = SENT_AT.search(raw)
            if m:
                self.sub.seqs.append(int(m.group(1)))
            if t:
                self.sub.lat.append(now - float(t.group(1)))
        elif b'"phx_reply"' in raw and not self.reply.done():
            self.reply.set_result(json.loads(raw))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for fut in (self.handshaken, self.reply):
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))

    def send_text(self, text: str) -> None:
        self._send(0x81, text.encode())

    def _send(self, first: int, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([first, 0x80 | n]) if n < 126 else bytes([first, 0xFE]) + n.to_bytes(2)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert self.transport is not None
        self.transport.write(head + mask + masked)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def join(url: str, sub: Sub, topic: str) -> None:
    """Connect, upgrade, phx_join ``topic`` (private) with the subscriber's token."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: RawWs(sub), host, int(port))
    sub.proto = proto
    key = base64.b64encode(os.urandom(16)).decode()
    assert proto.transport is not None
    proto.transport.write(
        f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    if not await asyncio.wait_for(proto.handshaken, 60):
        raise ConnectionError("upgrade refused")
    config = {
        "broadcast": {"ack": False, "self": False},
        "presence": {"enabled": False},
        "private": True,
    }
    proto.send_text(
        json.dumps(["1", "1", topic, "phx_join", {"config": config, "access_token": sub.token}])
    )
    data = await asyncio.wait_for(proto.reply, 60)
    if data[4]["status"] == "ok":
        sub.joined = True
    else:
        sub.refused = data[4]["response"].get("reason", "?")
