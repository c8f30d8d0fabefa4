"""GET answers: through the per-caller cache, or, for functions that declare their readers
(``@readers``), one shared answer per class of readers; each with its ETag and
Cache-Control (``read``). ``read_as``: the same answer for a caller inside the process
(the live room's pushed admin stats), through the same cache."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shim.http import bind
from shim.http.auth import Identity
from shim.http.cache import Entry, Readers, entry_of, etag_matches
from shim.http.catalog import Routine
from shim.http.database import Query
from shim.http.errors import ApiError
from shim.http.respond import RequestContext
from shim.http.service import Service

__all__ = ["Read", "etag_matches", "read", "read_as"]


@dataclass(frozen=True, slots=True)
class Read:
    """A GET's result with its ETag and the headers that go with it."""

    body: str | None
    etag: str
    headers: dict[str, str]


async def read(
    service: Service,
    ctx: RequestContext,
    *,
    identity: Identity,
    routine: Routine,
    given: dict[str, Any],
    query: Query,
) -> Read:
    """The answer of a GET (``query`` is the bound call), shared or cached for the
    function's ``@cache`` seconds."""
    call = (routine.schema, routine.name, _cache_args(service, routine, given))
    entry = None
    shared = routine.shared_statement(_names(routine, given)) if routine.cache_seconds else None
    if shared is not None:
        shared_query = Query(shared, query.values, query.timeout, read_only=True)
        entry, ctx.cache = await _shared_answer(
            service, ctx, identity, call, shared_query, ttl=routine.cache_seconds or 0
        )
    if entry is None:

        async def load() -> str | None:
            return await service.database.call(ctx, identity, query)

        key = (*call, identity.role, None if routine.cache_public else identity.claims)
        entry, ctx.cache = await service.cache.get(key, routine.cache_seconds or 0, load)
    service.metrics.cache.labels(ctx.cache).inc()
    headers = {"ETag": entry.etag}
    if routine.cache_seconds:
        scope = "public" if routine.cache_public else "private"
        headers["Cache-Control"] = f"{scope}, max-age={routine.cache_seconds}"
    else:
        headers["Cache-Control"] = "no-cache"
    return Read(entry.body, entry.etag, headers)


async def read_as(
    service: Service, identity: Identity, schema: str, name: str, given: dict[str, str]
) -> str | None:
    """The answer a GET of ``schema.name`` with the query arguments ``given`` (text, as a
    query string gives them) is served, for ``identity`` inside the process: the same
    cache key, so the same shared answer as the staff's GETs (the live room's pushed
    admin stats and the HTTP pollers cost one database call per cache interval between
    them). Raises ``ApiError``, as the GET would answer it."""
    catalog = service.catalog
    candidates = catalog.find(schema, name) if catalog.loaded else []
    if not candidates:
        raise ApiError(
            503, "PGRST002", f"{schema}.{name} is not in the schema cache", details="not_loaded"
        )
    routine, statement, values = bind.bind(candidates, given, from_query=True)
    if not routine.readonly:
        raise ApiError(405, "PGRST101", f"{schema}.{name} is volatile", details="not_readonly")
    ctx = RequestContext(f"in-process {name}", function=f"{schema}.{name}", role=identity.role)
    timeout = catalog.role_timeouts.get(identity.role, service.settings.statement_timeout)
    query = Query(statement, values, timeout, read_only=True)
    answer = await read(service, ctx, identity=identity, routine=routine, given=given, query=query)
    return answer.body


def _cache_args(service: Service, routine: Routine, given: dict[str, Any]) -> str:
    """The arguments as a cache key; for ``@cache <s> room`` also the room's reading, so
    the room's next event makes the cached answer stale (``RoomClock``)."""
    args = json.dumps(given, sort_keys=True)
    if routine.cache_room:
        epoch, changes = service.rooms.reading(given.get("webinar_id"))
        args += f"@{epoch}.{changes}"
    return args


def _names(routine: Routine, given: dict[str, Any]) -> tuple[str, ...]:
    """The argument names of a call, in the order ``bind`` numbers them."""
    return tuple(a.name for a in routine.args if a.name in given)


async def _shared_answer(
    service: Service,
    ctx: RequestContext,
    identity: Identity,
    call: tuple[str, str, str],
    query: Query,
    *,
    ttl: int,
) -> tuple[Entry, str]:
    """A ``@readers`` answer: one database call per interval per set of arguments and
    class of readers, however many readers poll. The call returns the answer and its
    readers together, made as the caller who missed (so the function's own checks run);
    it is served from memory to the roles and users it names, and to nobody else. When
    the readers come in classes (``group``: staff and viewers of a chat read different
    answers), each class has its own shared answer."""
    cache = service.cache
    family = call[:2]
    user: str | None = identity.user_id or json.loads(identity.claims).get("sub")
    for group in cache.groups(family):
        stored = cache.fresh((*call, "readers", group))
        if stored and stored.readers and stored.readers.admit(identity.role, user):
            return stored, "hit"

    async def load() -> tuple[str | None, Readers | None]:
        text = await service.database.call(ctx, identity, query)
        assert text is not None
        body, readers = json.loads(text)  # never null: a JSON array of two
        if not isinstance(readers, dict):
            return body, None
        return body, Readers(
            frozenset(readers.get("roles") or ()),
            frozenset(readers.get("users") or ()),
            str(readers.get("class") or ""),
        )

    # Callers missing together share one load (in flight only); one it does not admit
    # (another class) loads its own. A caller's own load is its answer, whoever reads it.
    entry, how = await cache.get((*call, "readers"), 0, load, share_errors=False)
    if how == "shared" and (entry.readers is None or not entry.readers.admit(identity.role, user)):
        entry, how = entry_of(await load(), ttl), "miss"
    readers = entry.readers
    if how == "miss" and readers is not None and ttl > 0:  # the loader keeps it for its class
        entry = entry_of((entry.body, readers), ttl)  # kept from now on (loaded at ttl 0)
        cache.put((*call, "readers", readers.group), entry, family)
    return entry, how
