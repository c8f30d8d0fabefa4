"""Shared in-process cache for GETs on stable functions, with single-flight.

``SharedCache.get(key, ttl, load)``: a fresh entry is answered from memory; otherwise
the first caller runs ``load`` and every identical request that arrives meanwhile awaits
that same result (or error), so N concurrent identical GETs cost one database call.
Results are kept ``ttl`` seconds (0 = shared in flight only). Bounded: when full, expired
entries go first, then the oldest. The key must include everything the answer depends
on (function, arguments, and the caller's claims unless the function is ``public``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """A result body (None = SQL null / void) with its ETag and expiry (monotonic)."""

    body: str | None
    etag: str
    expires: float


def etag_of(body: str | None) -> str:
    """A strong ETag computed from the result text."""
    digest = hashlib.blake2b((body or "").encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


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

    async def get(
        self, key: Hashable, ttl: int, load: Callable[[], Awaitable[str | None]]
    ) -> tuple[Entry, str]:
        """The entry for ``key`` and how it was served: ``hit``, ``shared`` or ``miss``."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            return entry, "hit"
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), "shared"
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
        entry = Entry(body, etag_of(body), time.monotonic() + ttl)
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

    def clear(self) -> None:
        """Forget every stored result (catalog reload)."""
        self._entries.clear()
