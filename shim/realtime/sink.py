"""A subscriber's outbound side: a bounded queue, or its socket's transport written
directly (``shim.realtime.wire``); full = a laggard (the hub's module doc says why)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from shim.realtime import protocol, wire

# What a subscriber's writer takes from its queue: the frame, and the webinar and seq it
# carries (seq 0 for frames that are not room events).
Item = tuple[protocol.Encoded, int, int]


class Sink:
    """One subscriber connection's outbound queue, bounded (see module doc). With a
    ``transport`` (``wire.find_transport``), frames are written to it at once and its
    write buffer is the queue, bounded at ``maxsize`` KiB; otherwise they wait in an
    ``asyncio.Queue`` of ``maxsize`` frames for the connection's writer."""

    def __init__(self, kind: str, maxsize: int, on_lag: Callable[[Sink], None]) -> None:
        self.kind = kind
        self.transport: asyncio.WriteTransport | None = None
        self.limit_bytes = maxsize * 1024
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self.on_lag = on_lag
        self.lagging = False
        self.closed = False
        # The last seq written to the client per webinar (the resume point).
        self.sent: dict[int, int] = {}
        # While a backlog is being read (SSE resume), live frames wait here.
        self.held: list[Item] | None = None

    def offer(self, item: Item, framed: bytes | None = None) -> None:
        """Queue a frame (``framed``: the same, already framed for the wire); on a full
        queue the subscriber becomes a laggard."""
        if self.lagging or self.closed:
            return
        if self.held is not None:
            self.held.append(item)
            return
        t = self.transport
        if t is not None:
            if t.is_closing():
                self.closed = True
            elif t.get_write_buffer_size() > self.limit_bytes:
                self.lagging = True
                self.on_lag(self)
            else:
                t.write(framed if framed is not None else wire.frame(item[0]))
                if item[2]:
                    self.sent[item[1]] = item[2]
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagging = True
            self.on_lag(self)

    def drain(self) -> None:
        """Drop what is queued (the laggard's notice goes out next)."""
        while not self.queue.empty():
            self.queue.get_nowait()

    def urgent(self, item: Item) -> None:
        """Queue a control frame even when lagging (after ``drain``); the close marker
        (``b""``) always goes to the writer."""
        t = self.transport
        if t is not None and item[0] != b"" and not t.is_closing():
            t.write(wire.frame(item[0]))
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(item)
