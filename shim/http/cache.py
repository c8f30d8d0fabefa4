"""Shared in-process cache for GETs on stable functions, with single-flight.

``SharedCache.get(key, ttl, load)``: a fresh entry is answered from memory; otherwise
the first caller runs ``load`` and every identical request that arrives meanwhile awaits
that same result (or error), so N concurrent identical GETs cost one database call.
Results are kept ``ttl`` seconds (0 = shared in flight only). Bounded: when full, expired
entries go first, then the oldest. The key must include everything the answer depends
on (function, arguments, and the caller's claims unless the function is ``public``).

An entry may carry its ``Readers`` (who the database said may read it, loaded with it):
then the key holds no caller at all, and ``shim.http.calls`` serves the entry only to
those readers, keeping one entry per group of readers (``fresh``, ``put``, ``groups``).
Such loads pass ``share_errors=False``: a caller that may not read gets its own error,
and the callers waiting on its load try again (one loading for the rest) instead of
inheriting it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any


class RoomClock:
    """How often each webinar's room changed, as far as this process heard (``NOTIFY
    eventlive_room`` from ``eventlive.publish``, seen by the service's listener and by the
    realtime hub's before it delivers). An answer cached with ``@cache <s> room`` is keyed
    by the webinar's reading, so the next event makes it stale: a viewer who rejoins after
    the hub delivered an event never catches up from an answer older than that event. A
    listener that reconnects (notifications may be lost) moves every room on."""

    def __init__(self) -> None:
        self._epoch = 0
        self._changes: dict[int, int] = {}

    def changed(self, webinar_id: int) -> None:
        if len(self._changes) >= _MAX_ROOMS:
            self.moved_all()
        self._changes[webinar_id] = self._changes.get(webinar_id, 0) + 1

    def moved_all(self) -> None:
        self._epoch += 1
        self._changes.clear()

    def reading(self, webinar_id: Any) -> tuple[int, int]:
        """(epoch, changes) of a webinar id as given: an int, or digits (a GET's query)."""
        if isinstance(webinar_id, str) and webinar_id.isascii() and webinar_id.isdigit():
            webinar_id = int(webinar_id)
        return self._epoch, self._changes.get(webinar_id, 0) if type(webinar_id) is int else 0


_MAX_ROOMS = 100_000


@dataclass(frozen=True, slots=True)
class Readers:
    """Who may be served a shared answer: these roles whoever they are, these users. A
    ``group`` names a class of readers when one call has a different answer per class
    (staff and viewers of a chat): one shared answer is kept per group."""

    roles: frozenset[str]
    users: frozenset[str]
    group: str = ""

    def admit(self, role: str, user: str | None) -> bool:
        return role in self.roles or (user is not None and user in self.users)


@dataclass(frozen=True, slots=True)
class Entry:
    """A result body (None = SQL null / void) with its ETag, expiry (monotonic) and, for a
    shared answer, its readers."""

    body: str | None
    etag: str
    expires: float
    readers: Readers | None = None


Loaded = str | None | tuple[str | None, Readers | None]


def etag_of(body: str | None) -> str:
    """A strong ETag computed from the result text."""
    digest = hashlib.blake2b((body or "").encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def entry_of(loaded: Loaded, ttl: int) -> Entry:
    """The entry of a loaded result, kept ``ttl`` seconds from now."""
    body, readers = loaded if isinstance(loaded, tuple) else (loaded, None)
    return Entry(body, etag_of(body), time.monotonic() + ttl, readers)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against ``etag``."""
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in if_none_match.split(","))


class SharedCache:
    """See module doc. Not thread-safe: one per event loop (per worker)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[Hashable, Entry] = {}
        self._inflight: dict[Hashable, asyncio.Future[Entry]] = {}
        # family (a function) -> the reader groups of its shared answers
        self._groups: dict[Hashable, set[str]] = {}

    async def get(
        self,
        key: Hashable,
        ttl: int,
        load: Callable[[], Awaitable[Loaded]],
        *,
        share_errors: bool = True,
    ) -> tuple[Entry, str]:
        """The entry for ``key`` and how it was served: ``hit``, ``shared`` or ``miss``."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            return entry, "hit"
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending), "shared"
            except Exception:
                if share_errors:
                    raise
                # Its loader's error is not ours: try again, one of us loading for the rest.
                return await self.get(key, ttl, load, share_errors=False)
        future: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            body = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may be none
            raise
        finally:
            self._inflight.pop(key, None)
        entry = entry_of(body, ttl)
        future.set_result(entry)
        if ttl > 0:
            self._store(key, entry)
        return entry, "miss"

    def _store(self, key: Hashable, entry: Entry) -> None:
        if len(self._entries) >= self._max:
            now = time.monotonic()
            for k in [k for k, e in self._entries.items() if e.expires <= now]:
                del self._entries[k]
            while len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = entry

    def fresh(self, key: Hashable) -> Entry | None:
        """The stored entry for ``key`` if it has not expired."""
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > time.monotonic() else None

    def put(self, key: Hashable, entry: Entry, family: Hashable) -> None:
        """Store an entry loaded elsewhere (``entry_of``); the group of its readers is
        remembered for ``family`` (e.g. the function)."""
        self._store(key, entry)
        if entry.readers is not None:
            self._groups.setdefault(family, set()).add(entry.readers.group)

    def groups(self, family: Hashable) -> tuple[str, ...]:
        """The reader groups stored so far for ``family``: a handful per function."""
        return tuple(self._groups.get(family, ()))

    def clear(self) -> None:
        """Forget every stored result (catalog reload)."""
        self._entries.clear()
        self._groups.clear()
