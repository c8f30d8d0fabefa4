"""The hub: events from the database to every subscriber of this process.

- Wake-up: ``eventlive.publish`` notifies channel ``eventlive_room`` with the webinar id;
  the process's one listener (``shim.serve.listener``) hands each notice to ``heard``,
  which marks its room due (a hint, not the delivery), and calls ``resync`` after every
  (re)connect.
- Safety: every ``tick`` seconds one query reads the last seq of every active webinar
  (``eventlive.room_last_seqs``); a room behind it is due (a lost NOTIFY costs a tick).
- Delivery: per due room ONE read (``eventlive.room_events_since`` as ``eventlive_hub``)
  after the room's cursor, whatever the number of subscribers; each event is encoded
  once per wire format (1.0.0, 2.0.0, SSE) and the same frame object is queued to every
  subscriber of its channel. So database work grows with events, not with subscribers.
- Bounded queues: a subscriber whose queue is full is a laggard. It is cut off (its
  connection says why, with the last seq it was sent) and resumes from that seq with
  ``chat_since`` / ``questions`` — never silently skipped.
- Q&A votes: on the tick, ``eventlive.flush_question_votes`` for webinars with Q&A
  subscribers (counts merged to one update per question per second are sent then).
- Admin stats: every ``stats_seconds`` the ``api.access_stats`` answer of each webinar that
  has admin subscribers here, pushed as event ``stats`` on ``webinar:{id}:admin``: from
  the ``StatsSource`` the composition root hands in (the shim's shared GET answer, so the
  pushes and the staff's GETs cost one database call per cache interval between them),
  else one call of the hub's own.
- Broadcasts (REST, or a client's that the insert policies allowed): ``broadcasts.send``
  (``shim.realtime.broadcast``) sends them through the database (``eventlive.broadcast``: a NOTIFY on ``eventlive_room``
  carrying the message as a JSON object, or naming a ``room_broadcasts`` row when too
  large for one), and every process's hub delivers what it hears to its subscribers of
  the topic, the sender's own process included: every listener hears the notices in
  commit order, so a topic's broadcasts arrive in the same order everywhere. Not room
  events: no seq, not replayed; missed while the listener reconnects, as on Supabase.

Several processes each run a hub for their own subscribers from the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from shim.realtime import protocol, wire
from shim.realtime.authorize import Principal, Prober
from shim.realtime.broadcast import Broadcasts
from shim.realtime.settings import HubSettings
from shim.realtime.sink import Sink

log = logging.getLogger("eventlive.realtime")

ROOM_CHANNEL = "eventlive_room"  # notices: a webinar id (room events), or a broadcast
HUB_ROLE = "eventlive_hub"
READ_BATCH = 1000
SSE = "sse"

# A webinar's access_stats answer as JSON text; None when there is none this time (the
# source says why).
StatsSource = Callable[[int], Awaitable[str | None]]


@dataclass
class Room:
    """One webinar's subscribers on this process and how far its events were read."""

    webinar_id: int
    cursor: int
    channels: dict[str, dict[Sink, str]] = field(default_factory=dict)
    stats: protocol.Encoded | None = None
    stats_v: dict[str, protocol.Encoded] = field(default_factory=dict)
    stats_at: float = 0.0

    def empty(self) -> bool:
        return not any(self.channels.values())


@dataclass
class Counters:
    """What the hub did, for /realtime/v1/stats and the bench."""

    delivery_reads: int = 0
    safety_reads: int = 0
    events: int = 0
    frames: int = 0
    laggards: int = 0
    stats_calls: int = 0
    joins: int = 0
    joins_refused: int = 0
    probes: int = 0
    vote_flushes: int = 0
    broadcasts_sent: int = 0
    broadcasts_heard: int = 0
    broadcast_reads: int = 0
    tickets_used: int = 0


class Hub:
    """Rooms, the listener, the delivery and stats loops (see module doc)."""

    def __init__(
        self, settings: HubSettings, database_url: str | None, stats: StatsSource | None = None
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.stats_source = stats or self._access_stats
        self.rooms: dict[int, Room] = {}
        self.pool: AsyncConnectionPool[Any] | None = None
        self.prober: Prober | None = None
        self.counters = Counters()
        self._due: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._room_locks: dict[int, asyncio.Lock] = {}
        self.broadcasts = Broadcasts(self, HUB_ROLE)

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the hub's pool (not waiting for the database) and start its loops."""
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set")
        self.pool = AsyncConnectionPool(
            self.database_url,
            min_size=1,
            max_size=max(1, self.settings.pool_size),
            timeout=5.0,
            open=False,
            name="eventlive-realtime",
            # No server-side prepared statements: behind a transaction-mode pooler they
            # would be missing on the next transaction's backend (the hub's reads are one
            # per tick per room, so preparing saves little).
            kwargs={"autocommit": True, "prepare_threshold": None},
            reconnect_timeout=5.0,
        )
        await self.pool.open(wait=False)
        # Leave a connection for delivery reads while joins are checked.
        self.prober = Prober(self.pool, parallel=max(1, self.settings.pool_size - 1))
        self._tasks = [
            asyncio.create_task(self._deliver_loop(), name="realtime-deliver"),
            asyncio.create_task(self._stats_loop(), name="realtime-stats"),
        ]

    async def stop(self) -> None:
        """Stop the loops and close the pool."""
        self.broadcasts.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.pool is not None:
            await self.pool.close()

    async def may_receive(self, principal: Principal, topic: str) -> bool:
        """The receive check of a join (batched with concurrent ones)."""
        if self.prober is None:
            raise RuntimeError("the realtime hub is not started")
        return await self.prober.may_receive(principal, topic)

    @property
    def db(self) -> AsyncConnectionPool[Any]:
        """The hub's pool (after ``start``)."""
        if self.pool is None:
            raise RuntimeError("the realtime hub is not started")
        return self.pool

    # -- subscriptions ------------------------------------------------------------------

    async def room(self, webinar_id: int) -> Room:
        """The room of a webinar, opened at its current last seq (one read, once)."""
        room = self.rooms.get(webinar_id)
        if room is not None:
            return room
        lock = self._room_locks.setdefault(webinar_id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(webinar_id)
            if room is None:
                last = await self._last_seqs([webinar_id])
                room = Room(webinar_id, last.get(webinar_id, 0))
                self.rooms[webinar_id] = room
        return room

    def subscribe(self, room: Room, channel: str, sink: Sink, topic: str) -> None:
        """Deliver ``channel`` events of ``room`` to ``sink`` from now on. The room must be
        open (``await room()``) and still registered: no await between that and this."""
        self.rooms.setdefault(room.webinar_id, room)
        room.channels.setdefault(channel, {})[sink] = topic
        if channel == "admin" and room.stats is not None:
            frame = self._stats_frame(room, sink.kind, topic)
            if frame is not None:
                sink.offer((frame, room.webinar_id, 0))

    def unsubscribe(self, webinar_id: int, channel: str, sink: Sink) -> None:
        """Stop delivering; an empty room is forgotten (reopened at its last seq)."""
        room = self.rooms.get(webinar_id)
        if room is None:
            return
        subs = room.channels.get(channel)
        if subs is not None:
            subs.pop(sink, None)
            if not subs:
                del room.channels[channel]
        if room.empty():
            del self.rooms[webinar_id]
            self._room_locks.pop(webinar_id, None)

    def active(self) -> int:
        """Subscriptions held on this process."""
        return sum(len(s) for r in self.rooms.values() for s in r.channels.values())

    async def use_ticket(self, nonce: str, expires: float) -> bool:
        """Whether this is the first use of an SSE ticket anywhere in the deployment
        (``eventlive.use_sse_ticket``); raises ``psycopg.Error`` / ``OSError``."""
        async with self.db.connection() as conn, conn.transaction(), conn.pipeline():
            await conn.execute(f"set local role {HUB_ROLE}")
            cur = await conn.execute(
                "select eventlive.use_sse_ticket(%s, to_timestamp(%s))", (nonce, expires)
            )
            row = await cur.fetchone()
        self.counters.tickets_used += 1
        return bool(row and row[0])

    # -- reads ----------------------------------------------------------------------------

    async def _last_seqs(self, webinar_ids: list[int]) -> dict[int, int]:
        assert self.pool is not None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(f"set local role {HUB_ROLE}")
            cur = await conn.execute(
                "select webinar_id, last_seq from eventlive.room_last_seqs(%s)",
                (webinar_ids,),
            )
            rows = await cur.fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    async def events_since(
        self, webinar_id: int, after: int, limit: int = READ_BATCH
    ) -> list[tuple[int, str, str, str]]:
        """(seq, channel, event, payload JSON) after ``after``, in order (SSE resume)."""
        assert self.pool is not None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(f"set local role {HUB_ROLE}")
            cur = await conn.execute(
                "select seq, channel, event, payload::text"
                " from eventlive.room_events_since(%s, %s, %s)",
                (webinar_id, after, limit),
            )
            rows = await cur.fetchall()
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    # -- wake-ups (from the process's listener) ---------------------------------------------

    def heard(self, payload: str) -> None:
        """A NOTIFY on ``ROOM_CHANNEL``: that webinar's room is due, if it has subscribers;
        or (a JSON object) a broadcast."""
        if payload.startswith("{"):
            self.broadcasts.heard(payload)
            return
        try:
            webinar_id = int(payload)
        except ValueError:
            return
        if webinar_id in self.rooms:
            self._due.add(webinar_id)
            self._wake.set()

    def resync(self) -> None:
        """After the listener (re)connected: anything may have been missed meanwhile."""
        self._due.update(self.rooms)
        self._wake.set()

    # -- delivery ---------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        next_tick = time.monotonic() + self.settings.tick
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.settings.tick
                    await self._safety_read()
                due, self._due = self._due, set()
                for webinar_id in due:
                    await self._deliver(webinar_id)
            except (psycopg.Error, OSError) as exc:
                log.warning("realtime delivery: %s", exc)
                await asyncio.sleep(0.5)
            except Exception:  # the delivery loop must outlive any one bug
                log.exception("realtime delivery failed; going on")
                await asyncio.sleep(0.5)

    async def _safety_read(self) -> None:
        if not self.rooms:
            return
        self.counters.safety_reads += 1
        await self._flush_votes()
        last = await self._last_seqs(list(self.rooms))
        for webinar_id, seq in last.items():
            room = self.rooms.get(webinar_id)
            if room is not None and seq > room.cursor:
                self._due.add(webinar_id)

    async def _flush_votes(self) -> None:
        """Vote counts held back by the once-per-second merge (``question_vote``) are
        published by ``eventlive.flush_question_votes`` on the tick, for the webinars with
        Q&A subscribers here; what it publishes arrives like any event."""
        with_qa = [w for w, room in self.rooms.items() if room.channels.get("qa")]
        if not with_qa:
            return
        assert self.pool is not None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(f"set local role {HUB_ROLE}")
            await conn.execute(
                "select eventlive.flush_question_votes(w) from unnest(%s::bigint[]) as w",
                (with_qa,),
            )
        self.counters.vote_flushes += 1

    async def _deliver(self, webinar_id: int) -> None:
        room = self.rooms.get(webinar_id)
        if room is None:
            return
        while True:
            self.counters.delivery_reads += 1
            rows = await self.events_since(webinar_id, room.cursor)
            # The room may have closed (last subscriber left) during the read.
            if self.rooms.get(webinar_id) is not room:
                return
            for seq, channel, event, payload in rows:
                if seq <= room.cursor:
                    continue
                room.cursor = seq
                self.counters.events += 1
                self._fan_out(room, channel, event, payload, seq)
            if len(rows) < READ_BATCH:
                return

    def _fan_out(self, room: Room, channel: str, event: str, payload: str, seq: int) -> None:
        subs = room.channels.get(channel)
        if not subs:
            return
        # Encoded (and framed for the wire) once per format, whatever the subscribers.
        frames: dict[tuple[str, str], protocol.Encoded] = {}
        framed: dict[tuple[str, str], bytes] = {}
        for sink, topic in list(subs.items()):
            key = (sink.kind, topic)
            frame = frames.get(key)
            if frame is None:
                frame = encode_event(sink.kind, topic, event, payload, seq)
                frames[key] = frame
            raw = None
            if sink.transport is not None:
                raw = framed.get(key)
                if raw is None:
                    raw = framed[key] = wire.frame(frame)
            sink.offer((frame, room.webinar_id, seq), raw)
            self.counters.frames += 1

    # -- admin stats --------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.stats_seconds))
            now = time.monotonic()
            for room in list(self.rooms.values()):
                if not room.channels.get("admin"):
                    continue
                if now - room.stats_at < self.settings.stats_seconds:
                    continue
                room.stats_at = now
                try:
                    await self._push_stats(room)
                except (psycopg.Error, OSError) as exc:
                    log.warning("realtime stats for webinar %s: %s", room.webinar_id, exc)
                except Exception:  # the stats loop must outlive any one bug
                    log.exception("realtime stats for webinar %s failed", room.webinar_id)

    async def _push_stats(self, room: Room) -> None:
        self.counters.stats_calls += 1
        stats = await self.stats_source(room.webinar_id)
        # The next push is counted from when this answer was had: a shared answer cached
        # for as long as stats_seconds (5 s each) has expired by then, so the hub alone
        # pushes a fresh count each time, never its own previous answer again.
        room.stats_at = time.monotonic()
        if stats is None:
            return
        room.stats = stats
        room.stats_v = {}
        for sink, topic in list(room.channels.get("admin", {}).items()):
            frame = self._stats_frame(room, sink.kind, topic)
            if frame is not None:
                sink.offer((frame, room.webinar_id, 0))
                self.counters.frames += 1

    async def _access_stats(self, webinar_id: int) -> str | None:
        """The hub's own ``api.access_stats`` call as service_role (no source handed in)."""
        assert self.pool is not None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select set_config('role', 'service_role', true),"
                " set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true)"
            )
            cur = await conn.execute("select api.access_stats(%s)::text", (webinar_id,))
            row = await cur.fetchone()
        return None if row is None else row[0]

    def _stats_frame(self, room: Room, kind: str, topic: str) -> protocol.Encoded | None:
        if room.stats is None:
            return None
        key = f"{kind} {topic}"
        frame = room.stats_v.get(key)
        if frame is None:
            assert isinstance(room.stats, str)
            frame = encode_event(kind, topic, "stats", room.stats, 0)
            room.stats_v[key] = frame
        return frame


def encode_event(kind: str, topic: str, event: str, payload: str, seq: int) -> protocol.Encoded:
    """A room event as ``kind`` (1.0.0, 2.0.0 or SSE) writes it."""
    if kind == SSE:
        return sse_event(event, payload, seq)
    return protocol.broadcast_json(kind, topic, event, payload)


def sse_event(event: str, payload: str, seq: int) -> str:
    """An SSE event; ``id`` only for room events (stats have none). A jsonb payload's text
    has no newline, so it is one ``data`` line."""
    head = f"id: {seq}\n" if seq else ""
    return f"{head}event: {event}\ndata: {payload}\n\n"
