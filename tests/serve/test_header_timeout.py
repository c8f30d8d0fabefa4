"""A connection that has not delivered complete request headers within
``EVENTLIVE_HEADER_TIMEOUT`` is closed (``shim.serve.header_timeout``); one that delivers them in
time is served, on its first request and on later keep-alive requests alike; and
``eventlive serve`` runs uvicorn with that protocol."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from shim_support import free_port

from shim.http.settings import Settings
from shim.serve import header_timeout, server
from shim.serve.header_timeout import HeaderTimeoutProtocol

LIMIT = 0.5  # seconds, for the tests' protocol
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class QuickTimeout(HeaderTimeoutProtocol):
    header_timeout = LIMIT


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _serve(protocol: type[Any] | str) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        _hello, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=protocol
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.02)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def guarded() -> Iterator[int]:
    yield from _serve(QuickTimeout)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(closed by the server within ``seconds``, bytes received before that)."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def test_half_a_request_line_is_closed_after_the_header_timeout(guarded: int) -> None:
    """A raw socket sends half a request line and stalls: the server closes it, with no
    answer, soon after the limit -- not before it."""
    with socket.create_connection(("127.0.0.1", guarded)) as sock:
        sock.sendall(b"GET /hea")
        started = time.monotonic()
        closed, got = _closed_within(sock, LIMIT + 4)
        elapsed = time.monotonic() - started
    assert closed, "a stalled connection stayed open"
    assert got == b""
    assert LIMIT * 0.8 <= elapsed < LIMIT + 2


def test_a_connection_that_sends_nothing_is_closed(guarded: int) -> None:
    """Opening a connection and sending no byte is bounded the same way."""
    with socket.create_connection(("127.0.0.1", guarded)) as sock:
        closed, _ = _closed_within(sock, LIMIT + 4)
    assert closed


def test_headers_trickled_in_time_are_served_and_a_later_keepalive_stall_is_closed(
    guarded: int,
) -> None:
    """Headers sent in pieces, complete within the limit -> 200; the same connection's
    next request stalls mid-headers for longer than the limit (after the earlier request
    took longer than the limit in total) -> closed: the bound holds per request."""
    with socket.create_connection(("127.0.0.1", guarded)) as sock:
        for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: x\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(LIMIT / 5)
        sock.settimeout(5)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        time.sleep(LIMIT * 0.5)  # idle between requests: uvicorn's keep-alive timeout (5 s)
        sock.sendall(b"GET / HTTP/1.1\r\nHost:")
        closed, got = _closed_within(sock, LIMIT + 4)
    assert closed
    assert got == b""


def test_without_the_guard_uvicorn_keeps_a_stalled_connection_open() -> None:
    """The control: plain uvicorn (httptools) keeps the half request line open past the
    limit -- the hole this module closes."""
    for port in _serve("httptools"):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /hea")
            closed, _ = _closed_within(sock, LIMIT + 1.5)
        assert not closed


def test_the_limit_comes_from_the_environment_and_zero_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``EVENTLIVE_HEADER_TIMEOUT`` (default 10 s) is what the protocol uses."""
    assert Settings.from_env({}).header_timeout == 10.0
    assert Settings.from_env({"EVENTLIVE_HEADER_TIMEOUT": "2.5"}).header_timeout == 2.5
    assert Settings.from_env({"EVENTLIVE_HEADER_TIMEOUT": "0"}).header_timeout == 0.0
    monkeypatch.setenv("EVENTLIVE_HEADER_TIMEOUT", "3")
    header_timeout.configured_timeout.cache_clear()
    try:
        assert header_timeout.configured_timeout() == 3.0
    finally:
        header_timeout.configured_timeout.cache_clear()


def test_eventlive_serve_runs_uvicorn_with_the_guarded_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``eventlive serve`` hands the protocol to uvicorn (with any worker count)."""
    seen: dict[str, Any] = {}
    monkeypatch.setenv("DATABASE_URL", "host=127.0.0.1 user=authenticator")
    monkeypatch.setattr(server.uvicorn, "run", lambda *a, **kw: seen.update(kw))
    server.run("127.0.0.1", 8000, 2)
    assert seen["http"] is HeaderTimeoutProtocol
