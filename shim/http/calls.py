"""Calling a function for a request: who the caller is (``identify``), the call itself with
the GET cache and ETags (``invoke``), the one round trip with its failures mapped to
PostgREST errors (``call_function``), and the readiness probe (``ping_database``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from shim.http import bind, coalesce, errors, exchange
from shim.http.auth import Identity, canonical_uuid, rejected
from shim.http.cache import Entry, Readers, entry_of, etag_matches
from shim.http.catalog import Routine
from shim.http.errors import ApiError
from shim.http.request import header, prefers_minimal
from shim.http.respond import JSON_TYPE, RequestContext
from shim.http.service import Service

log = logging.getLogger("eventlive.shim")

# Seconds /ready waits for a pooled connection (requests may wait longer: a busy database).
READY_WAIT = 0.5

# The hot-path calls: their call statement is prepared per connection and role.
HOT_FUNCTIONS = frozenset({"api.presence_ping", "api.track_access", "api.presence_leave"})
COALESCED_PING = "api.presence_ping"


async def identify(service: Service, request: Request, ctx: RequestContext) -> Identity:
    """Bearer token from Authorization, else the apikey header (Supabase clients)."""
    t0 = time.perf_counter()
    authorization = header(request, b"authorization")
    token: str | None
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            service.metrics.rejected_tokens.labels("malformed").inc()
            raise rejected("malformed", "Authorization must be 'Bearer <token>'")
        token = token.strip()
    else:
        token = header(request, b"apikey")
    try:
        identity = await service.auth.identify(token)
    except ApiError as err:
        service.metrics.rejected_tokens.labels(err.reason).inc()
        raise
    finally:
        ctx.auth_ms = (time.perf_counter() - t0) * 1000
    ctx.role = identity.role
    return identity


async def invoke(
    service: Service,
    request: Request,
    ctx: RequestContext,
    *,
    schema: str,
    name: str,
    given: dict[str, Any],
    identity: Identity,
    minimal: bool = False,
) -> Response:
    """Bind ``given`` to ``schema.name`` and run it; GET/HEAD go through the cache."""
    settings = service.settings
    catalog = service.catalog
    if not catalog.loaded:
        raise errors.unavailable(
            "PGRST002",
            "Could not query the database for the schema cache. Retrying.",
            settings.retry_after,
            "catalog_not_loaded",
        )
    candidates = catalog.find(schema, name)
    if not candidates:
        raise ApiError(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name} in the schema cache",
            hint="If a new function was created in the database with this name and "
            "parameters, try reloading the schema cache.",
            details="unknown_function",
        )
    # Only routable names become metric labels: clients cannot grow the label set.
    ctx.function = f"{schema}.{name}"
    is_get = request.method in ("GET", "HEAD")
    routine, statement, values = bind.bind(candidates, given, from_query=is_get)
    if is_get and not routine.readonly:
        raise ApiError(
            405,
            "PGRST101",
            f"Cannot use the {request.method} method on volatile function {schema}.{name}",
            details="method_not_allowed",
        )
    timeout = catalog.role_timeouts.get(identity.role, settings.statement_timeout)
    if (
        not is_get
        and service.coalescer is not None
        and ctx.function == COALESCED_PING
        and identity.user_id is not None
        and timeout == settings.statement_timeout
        and isinstance(given.get("webinar_id"), int)
        and not isinstance(given["webinar_id"], bool)
        and canonical_uuid(given.get("session_id"))
        and len(given) == 2
    ):
        await coalesced_ping(
            service,
            ctx,
            identity,
            webinar_id=given["webinar_id"],
            session_id=given["session_id"],
            statement=statement,
            values=values,
        )
        return Response(status_code=204)

    async def load() -> str | None:
        return await call_function(
            service,
            ctx,
            identity,
            statement,
            values,
            timeout=timeout,
            read_only=routine.readonly or is_get,
            hot=ctx.function in HOT_FUNCTIONS,
        )

    headers: dict[str, str] = {}
    if is_get:
        args = _cache_args(service, routine, given)
        entry = None
        shared = routine.shared_statement(_names(routine, given)) if routine.cache_seconds else None
        if shared is not None:
            entry, ctx.cache = await _shared_answer(
                service,
                ctx,
                identity,
                call=(schema, name, args),
                statement=shared,
                values=values,
                timeout=timeout,
            )
        if entry is None:
            key = (
                schema,
                name,
                args,
                identity.role,
                None if routine.cache_public else identity.claims,
            )
            entry, ctx.cache = await service.cache.get(key, routine.cache_seconds or 0, load)
        service.metrics.cache.labels(ctx.cache).inc()
        result = entry.body
        headers["ETag"] = entry.etag
        if routine.cache_seconds:
            scope = "public" if routine.cache_public else "private"
            headers["Cache-Control"] = f"{scope}, max-age={routine.cache_seconds}"
        else:
            headers["Cache-Control"] = "no-cache"
        inm = header(request, b"if-none-match")
        if inm is not None and etag_matches(inm, entry.etag):
            return Response(status_code=304, headers=headers)
    else:
        result = await load()
    if routine.returns_void or minimal or prefers_minimal(request):
        return Response(status_code=204, headers=headers)
    body = "null" if result is None else result
    return Response(body, media_type=JSON_TYPE, headers=headers)


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
    *,
    call: tuple[str, str, str],
    statement: bytes,
    values: list[Any],
    timeout: str,
) -> tuple[Entry, str]:
    """A ``@readers`` answer: one database call per interval per set of arguments and
    class of readers, however many readers poll. The call returns the answer and its
    readers together, made as the caller who missed (so the function's own checks run);
    it is served from memory to the roles and users it names, and to nobody else. When
    the readers come in classes (``group``: staff and viewers of a chat read different
    answers), each class has its own shared answer."""
    cache = service.cache
    family = call[:2]
    ttl = service.catalog.find(call[0], call[1])[0].cache_seconds or 0
    user: str | None = identity.user_id or json.loads(identity.claims).get("sub")
    for group in cache.groups(family):
        stored = cache.fresh((*call, "readers", group))
        if stored and stored.readers and stored.readers.admit(identity.role, user):
            return stored, "hit"

    async def load() -> tuple[str | None, Readers | None]:
        text = await call_function(
            service, ctx, identity, statement, values, timeout=timeout, read_only=True
        )
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


async def call_function(
    service: Service,
    ctx: RequestContext,
    identity: Identity,
    statement: Any,
    values: list[Any],
    *,
    timeout: str,
    read_only: bool,
    hot: bool = False,
) -> str | None:
    """One round trip; database and pool failures become PostgREST-shaped errors."""
    assert service.pool is not None
    s = service.settings
    t0 = time.perf_counter()
    try:
        return await exchange.call(
            service.pool,
            statement,
            values,
            identity,
            statement_timeout=timeout,
            read_only=read_only,
            pool_timeout=s.pool_timeout,
            db_timeout=s.db_timeout,
            prepare=s.prepare,
            prepare_call=hot,
            health=service.health,
        )
    except PoolTimeout:
        raise errors.unavailable(
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
            s.retry_after,
            "pool_timeout",
        ) from None
    except PoolClosed:
        raise errors.unavailable(
            "PGRST000", "The server is shutting down", s.retry_after, "shutting_down"
        ) from None
    except exchange.DbTimeoutError:
        raise errors.unavailable(
            "PGRST000", "The database did not answer in time", s.retry_after, "db_timeout"
        ) from None
    except psycopg.Error as exc:
        err = errors.from_database(exc, identity.anonymous, ctx.request_id, s.retry_after)
        if (err.status >= 500 and err.status != 503) or errors.is_hidden(err):
            log.error("request %s: database error %s: %s", ctx.request_id, exc.diag.sqlstate, exc)
        elif err.status == 503:
            log.warning("request %s: database unavailable: %s", ctx.request_id, exc)
        raise err from None
    finally:
        ctx.db_ms = (time.perf_counter() - t0) * 1000
        service.metrics.observe_db(ctx.function, ctx.db_ms / 1000)


async def coalesced_ping(
    service: Service,
    ctx: RequestContext,
    identity: Identity,
    *,
    webinar_id: int,
    session_id: str,
    statement: bytes,
    values: list[bytes | None],
) -> None:
    """``api.presence_ping`` through the coalescer (``shim.http.coalesce``): returns for
    204, raises this caller's ``ApiError`` otherwise, exactly as the single path would."""
    coalescer = service.coalescer
    assert coalescer is not None
    assert identity.user_id is not None
    s = service.settings
    t0 = time.perf_counter()
    try:
        answer = await coalescer.ping(webinar_id, identity.user_id, session_id)
    except (psycopg.Error, PoolTimeout, PoolClosed, exchange.DbTimeoutError) as exc:
        ctx.db_ms = (time.perf_counter() - t0) * 1000
        raise _failure(service, ctx, identity, exc) from None
    if coalesce.retry_alone(answer):
        await call_function(
            service,
            ctx,
            identity,
            statement,
            values,
            timeout=s.statement_timeout,
            read_only=False,
            hot=True,
        )
        return
    ctx.db_ms = (time.perf_counter() - t0) * 1000
    service.metrics.observe_db(ctx.function, ctx.db_ms / 1000)
    if answer is not None:
        code = answer["code"]
        status = errors.status_for_sqlstate(code, identity.anonymous)
        raise ApiError(
            status,
            code,
            answer["message"],
            details=answer["details"],
            hint=answer["hint"],
            headers={"WWW-Authenticate": "Bearer"} if status == 401 else {},
            reason="database",
        )


def _failure(
    service: Service, ctx: RequestContext, identity: Identity, exc: Exception
) -> Exception:
    """A whole batch's failure as this caller's error, mapped as ``call_function`` maps it."""
    s = service.settings
    if isinstance(exc, PoolTimeout):
        return errors.unavailable(
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
            s.retry_after,
            "pool_timeout",
        )
    if isinstance(exc, PoolClosed):
        return errors.unavailable(
            "PGRST000", "The server is shutting down", s.retry_after, "shutting_down"
        )
    if isinstance(exc, exchange.DbTimeoutError):
        return errors.unavailable(
            "PGRST000", "The database did not answer in time", s.retry_after, "db_timeout"
        )
    if isinstance(exc, psycopg.Error):
        err = errors.from_database(exc, identity.anonymous, ctx.request_id, s.retry_after)
        if err.status == 503:
            log.warning("request %s: database unavailable: %s", ctx.request_id, exc)
        else:
            log.error("request %s: database error %s: %s", ctx.request_id, exc.sqlstate, exc)
        return err
    return exc


async def ping_database(service: Service) -> None:
    """``select 1`` on a pooled connection, bounded like a request (pool timeout, then
    ``db_timeout``): a frozen database is "not ready" now, not when it thaws."""
    assert service.pool is not None
    s = service.settings
    try:
        # Readiness answers at once: a wait as long as a request's would outlast a freeze.
        async with service.pool.connection(timeout=min(s.pool_timeout, READY_WAIT)) as conn:
            try:
                async with asyncio.timeout(s.db_timeout):
                    await exchange.ping(conn)
            except TimeoutError:
                await conn.close()  # mid-exchange: never back into the pool
                raise
    except (psycopg.Error, PoolTimeout, TimeoutError):
        raise errors.unavailable(
            "PGRST000", "Could not connect with the database", s.retry_after, "database_down"
        ) from None
