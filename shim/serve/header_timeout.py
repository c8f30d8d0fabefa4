"""A bound on how long a client may take to deliver its request headers.

uvicorn bounds the idle time between keep-alive requests (``timeout_keep_alive``) and the
app bounds the body (``EVENTLIVE_BODY_TIMEOUT``), but nothing bounds the header phase: a
client that opens a connection and sends half a request line -- or nothing at all --
holds a connection and its buffers forever, and a few thousand of them (slowloris) take
the server's file descriptors. The app never sees such a connection, so the guard has to
live in the HTTP protocol.

Why a protocol subclass: it is the simplest sound place. The parser already knows when a
request begins (``on_message_begin``) and when its headers are complete
(``on_headers_complete``), so a deadline set at the first and dropped at the second
needs no parsing of our own and covers every request of a keep-alive connection, not
only the first. The deadlines are a ``shim.web.deadlines.Deadlines`` per event loop and
limit (a dict entry per request, one sweep every eighth of the limit), not a timer per
request. A guard in front of uvicorn (a socket-level proxy or an ASGI middleware) either
duplicates HTTP parsing or runs too late (ASGI starts after the headers). We subclass the httptools protocol, which
``uvicorn[standard]`` installs and ``--http auto`` picks; ``eventlive serve`` passes this
class to uvicorn explicitly.

A connection whose headers are not complete within ``EVENTLIVE_HEADER_TIMEOUT`` seconds
(10 by default, so 10 to 11.25 s; 0 turns the guard off) of its opening, or of the first
byte of its next request, is closed without an answer: nothing has been read that an
answer could address, and nginx's ``client_header_timeout`` does the same.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Hashable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shim.http.settings import Settings
from shim.web import deadlines
from shim.web.deadlines import Deadlines


@functools.cache
def configured_timeout() -> float:
    """``EVENTLIVE_HEADER_TIMEOUT`` of this process, read once (each worker reads its own)."""
    return Settings.from_env().header_timeout


def _late(protocol: Hashable) -> None:
    assert isinstance(protocol, HeaderTimeoutProtocol)
    protocol.headers_timed_out()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that closes connections stalled in their headers."""

    # None: the configured value; tests set a number on a subclass.
    header_timeout: float | None = None
    _guard: Deadlines | None = None
    _limit = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.header_timeout if self.header_timeout is not None else configured_timeout()
        if limit > 0:
            self._limit = limit
            self._guard = deadlines.for_limit(limit, _late)
            self._guard.add(self, limit)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Already pending when this is the connection's first request.
        if self._guard is not None and self not in self._guard:
            self._guard.add(self, self._limit)

    def on_headers_complete(self) -> None:
        if self._guard is not None:
            self._guard.discard(self)
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.discard(self)
        super().connection_lost(exc)

    def headers_timed_out(self) -> None:
        """Close the connection: its headers did not arrive in time."""
        if not self.transport.is_closing():
            self.transport.close()
