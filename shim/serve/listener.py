"""The process's one LISTEN connection, with its retry: every part that needs a
notification subscribes here instead of holding a connection of its own (PostgREST's
``Listener.hs`` has the same shape).

- ``on_connect`` callbacks run after every (re)connect: whatever was notified while the
  connection was down is lost, so each part catches up (the catalog reloads, the room
  clock moves, the hub reads every active room).
- ``subscribe(channel, callback)``: the callback gets each notification's payload.

Behind a transaction-mode pooler LISTEN does not work: give this connection a direct or
session-mode connection string (the listener connects with the one it is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

log = logging.getLogger("eventlive.shim")

Heard = Callable[[str], Awaitable[None] | None]
Connected = Callable[[], Awaitable[None] | None]


class Listener:
    """One LISTEN connection for every channel subscribed (see module doc)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._channels: dict[str, list[Heard]] = {}
        self._connected: list[Connected] = []
        self.listening = asyncio.Event()  # set while LISTEN holds (tests wait on it)
        self.connections = 0  # LISTEN connections opened (a test counts them)
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, channel: str, heard: Heard) -> None:
        self._channels.setdefault(channel, []).append(heard)

    def on_connect(self, connected: Connected) -> None:
        self._connected.append(connected)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eventlive-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, application_name="eventlive listen"
                ) as conn:
                    self.connections += 1
                    for channel in self._channels:
                        await conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
                    self.listening.set()
                    delay = 0.5
                    for connected in self._connected:
                        await _call(connected)
                    async for note in conn.notifies():
                        for heard in self._channels.get(note.channel, ()):
                            await _call(heard, note.payload)
            except psycopg.Error as exc:
                log.debug("listener: %s; retrying in %.1fs", exc, delay)
            except Exception:  # the listener must outlive any one bug
                log.exception("listener failed; restarting")
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _call(callback: Callable[..., Awaitable[None] | None], *args: str) -> None:
    result = callback(*args)
    if result is not None:
        await result
