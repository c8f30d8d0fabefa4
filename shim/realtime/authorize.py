"""Channel authorization the way Supabase's Realtime does it
(``Realtime.Tenants.Authorization``): the policies on ``realtime.messages`` decide.

- Receive (at join): in a transaction that is always rolled back, a privileged role
  inserts a probe row for the topic; then, as the joining role with its claims,
  ``request.jwt.claim.sub/role`` and ``realtime.topic`` set, select it back. Seen = may
  receive. One pipelined round trip.
- Send (at the first client broadcast, or per REST broadcast): as the joining role, insert
  a row for the topic; the insert policies either let it in (rolled back anyway) or refuse.

Nothing here caches: the caller keeps the answer for the channel's life.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("eventlive.realtime")

# The role that writes the probe row: on Supabase, Realtime's own admin login. Here the
# shim's login role may switch to service_role (bypassrls), as the SQL tests' probe does.
PROBE_WRITER = "service_role"

_SETTINGS = (
    "select set_config('role', %(role)s, true), set_config('realtime.topic', %(topic)s, true),"
    " set_config('request.jwt.claims', %(claims)s, true),"
    " set_config('request.jwt.claim.sub', %(sub)s, true),"
    " set_config('request.jwt.claim.role', %(role)s, true),"
    " set_config('request.headers', '{}', true)"
)


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified token: the database role, the claims (JSON text) and when it expires."""

    role: str
    claims: str
    expires: float | None

    @property
    def sub(self) -> str:
        try:
            value = json.loads(self.claims).get("sub")
        except (ValueError, AttributeError):
            return ""
        return value if isinstance(value, str) else ""


class ProbeError(Exception):
    """The database could not answer the check (down, timeout, policy error)."""


def _params(principal: Principal, topic: str) -> dict[str, Any]:
    return {
        "role": principal.role,
        "topic": topic,
        "claims": principal.claims,
        "sub": principal.sub,
    }


async def may_receive(
    pool: AsyncConnectionPool[Any], principal: Principal, topic: str, timeout: float = 5.0
) -> bool:
    """Whether the policies let ``principal`` select a row of ``topic``."""
    probe_id = uuid.uuid4()
    try:
        async with (
            pool.connection(timeout=timeout) as conn,
            conn.transaction(force_rollback=True),
            conn.pipeline(),
        ):
            await conn.execute("select set_config('role', %s, true)", (PROBE_WRITER,))
            await conn.execute(
                "insert into realtime.messages (id, topic, extension) values (%s, %s, 'broadcast')",
                (probe_id, topic),
            )
            await conn.execute(_SETTINGS, _params(principal, topic))
            cur = await conn.execute(
                "select count(*) from realtime.messages where id = %s and topic = %s",
                (probe_id, topic),
            )
            row = await cur.fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return False
    except (psycopg.Error, TimeoutError, OSError) as exc:
        log.warning("realtime receive check for %s failed: %s", topic, exc)
        raise ProbeError(str(exc)) from None
    return bool(row and row[0])


async def may_receive_many(
    pool: AsyncConnectionPool[Any], asks: list[tuple[Principal, str]], timeout: float = 15.0
) -> list[bool]:
    """``may_receive`` for many (principal, topic) pairs in ONE rolled-back transaction
    and one round trip: probe rows per topic first, then per pair its role and claims and
    the select. A reconnect storm's joins cost a round trip per batch, not per join."""
    ids = {topic: uuid.uuid4() for _, topic in asks}
    try:
        async with (
            pool.connection(timeout=timeout) as conn,
            conn.transaction(force_rollback=True),
            conn.pipeline(),
        ):
            await conn.execute("select set_config('role', %s, true)", (PROBE_WRITER,))
            for topic, probe_id in ids.items():
                await conn.execute(
                    "insert into realtime.messages (id, topic, extension)"
                    " values (%s, %s, 'broadcast')",
                    (probe_id, topic),
                )
            cursors = []
            for principal, topic in asks:
                await conn.execute(_SETTINGS, _params(principal, topic))
                cursors.append(
                    await conn.execute(
                        "select count(*) from realtime.messages where id = %s and topic = %s",
                        (ids[topic], topic),
                    )
                )
            rows = [await cur.fetchone() for cur in cursors]
    except (psycopg.Error, TimeoutError, OSError) as exc:
        log.warning("realtime receive checks (%d) failed: %s", len(asks), exc)
        raise ProbeError(str(exc)) from None
    return [bool(row and row[0]) for row in rows]


class Prober:
    """Joins waiting for a receive check, answered in batches (``may_receive_many``) by
    at most ``parallel`` transactions at a time; a failed batch is retried one by one so
    that one bad token cannot refuse its neighbours."""

    def __init__(self, pool: AsyncConnectionPool[Any], parallel: int, batch: int = 100) -> None:
        self.pool = pool
        self.parallel = max(1, parallel)
        self.batch = batch
        self.batches = 0
        self._pending: list[tuple[Principal, str, asyncio.Future[bool]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def may_receive(self, principal: Principal, topic: str) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((principal, topic, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if self._pending and len(self._running) < self.parallel:
            task = asyncio.create_task(self._flush())
            self._running.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._kick()

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # joins arriving in this turn of the loop join the batch
        batch, self._pending = self._pending[: self.batch], self._pending[self.batch :]
        if not batch:
            return
        self.batches += 1
        asks = [(p, t) for p, t, _ in batch]
        try:
            answers = await may_receive_many(self.pool, asks)
        except ProbeError as exc:
            if len(batch) == 1:
                _settle(batch[0][2], exc)
                return
            for principal, topic, future in batch:
                try:
                    _settle(future, await may_receive(self.pool, principal, topic))
                except ProbeError as single:
                    _settle(future, single)
            return
        for (_, _, future), answer in zip(batch, answers, strict=True):
            _settle(future, answer)


def _settle(future: asyncio.Future[bool], value: bool | BaseException) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


async def may_send(
    pool: AsyncConnectionPool[Any], principal: Principal, topic: str, timeout: float = 5.0
) -> bool:
    """Whether the insert policies let ``principal`` write a broadcast on ``topic``."""
    try:
        async with (
            pool.connection(timeout=timeout) as conn,
            conn.transaction(force_rollback=True),
        ):
            await conn.execute(_SETTINGS, _params(principal, topic))
            try:
                async with conn.transaction():
                    await conn.execute(
                        "insert into realtime.messages (topic, extension, payload, event, private)"
                        " values (%s, 'broadcast', '{}', 'probe', true)",
                        (topic,),
                    )
            except psycopg.errors.InsufficientPrivilege:
                return False
    except psycopg.errors.InsufficientPrivilege:
        return False
    except (psycopg.Error, TimeoutError, OSError) as exc:
        log.warning("realtime send check for %s failed: %s", topic, exc)
        raise ProbeError(str(exc)) from None
    return True


class DenyCache:
    """Refused (token, topic) pairs answered from memory for a few seconds: a stale
    client retrying after 1, 2, 5 s costs no database probe."""

    def __init__(self, seconds: float, size: int = 50_000) -> None:
        self.seconds = seconds
        self.size = size
        self._until: dict[tuple[bytes, str], float] = {}

    @staticmethod
    def _key(token: str | None, topic: str) -> tuple[bytes, str]:
        return hashlib.sha256((token or "").encode()).digest(), topic

    def refused(self, token: str | None, topic: str) -> bool:
        key = self._key(token, topic)
        until = self._until.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[key]
            return False
        return True

    def add(self, token: str | None, topic: str) -> None:
        if self.seconds <= 0:
            return
        if len(self._until) >= self.size:
            del self._until[next(iter(self._until))]
        self._until[self._key(token, topic)] = time.monotonic() + self.seconds
