"""A bound on how long a client may take to deliver its request headers.

uvicorn bounds the idle time between keep-alive requests (``timeout_keep_alive``) and the
app bounds the body (``EVENTLIVE_BODY_TIMEOUT``), but nothing bounds the header phase: a
client that opens a connection and sends half a request line -- or nothing at all --
holds a connection and its buffers forever, and a few thousand of them (slowloris) take
the server's file descriptors. The app never sees such a connection, so the guard has to
live in the HTTP protocol.

Why a protocol subclass: it is the simplest sound place. The parser already knows when a
request begins (``on_message_begin``) and when its headers are complete
(``on_headers_complete``), so a timer armed at the first and cancelled at the second
needs no parsing of our own, costs one ``call_later`` per request, and covers every
request of a keep-alive connection, not only the first. A guard in front of uvicorn (a
socket-level proxy or an ASGI middleware) either duplicates HTTP parsing or runs too late
(ASGI starts after the headers). We subclass the httptools protocol, which
``uvicorn[standard]`` installs and ``--http auto`` picks; ``eventlive serve`` passes this
class to uvicorn explicitly.

A connection whose headers are not complete within ``EVENTLIVE_HEADER_TIMEOUT`` seconds
(10 by default; 0 turns the guard off) of its opening, or of the first byte of its next
request, is closed without an answer: nothing has been read that an answer could
address, and nginx's ``client_header_timeout`` does the same.
"""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shim.http.settings import Settings


@functools.cache
def configured_timeout() -> float:
    """``EVENTLIVE_HEADER_TIMEOUT`` of this process, read once (each worker reads its own)."""
    return Settings.from_env().header_timeout


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that closes connections stalled in their headers."""

    # None: the configured value; tests set a number on a subclass.
    header_timeout: float | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # armed already when this is the connection's first
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        limit = self.header_timeout if self.header_timeout is not None else configured_timeout()
        if limit > 0:
            self._header_timer = self.loop.call_later(limit, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
