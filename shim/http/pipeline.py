"""One pipeline for every function call, whichever entrance took the request.

An entrance (the Starlette routes in ``shim.http.full``, the lean entrance of the hot
routes in ``shim.http.lean``) turns its request into a ``Call``, parsed once; ``run``
then takes every step in order:

0. an entry's turn: a first entry (``track_access`` without a session id) waits for a turn
   of the event loop for its webinar (``shim.http.turns``), its arguments read first (their
   error still answered after the token's); every other call goes on at once;
1. identify: the token (``shim.web.token``) verified in-process (``shim.http.auth``),
   rejected tokens counted;
2. arguments: the entrance's ``arguments()`` (body or query, read only after the token);
3. bind: the arguments checked against the function's signature (``shim.http.bind``);
4. coalesce | batch | call | cache: a heartbeat through the coalescer when it can be,
   an entry through the entry batcher when it can be, a GET through the cache
   (``shim.http.reads``), anything else one round trip (``shim.http.database``), whose
   failures are mapped there, once;
5. the answer: 200 with the JSON, 204 (void, ``Prefer: return=minimal``), 304, or the
   PostgREST error body. The entrance writes it and calls ``respond.finish``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shim.http import bind, errors, reads
from shim.http.auth import Identity, canonical_uuid
from shim.http.catalog import Routine
from shim.http.database import Query
from shim.http.errors import ApiError
from shim.http.respond import RequestContext, failed, unexpected
from shim.http.routes import BATCHED_ENTRY, COALESCED, HOT_FUNCTIONS
from shim.http.service import Service
from shim.web.token import bearer

log = logging.getLogger("eventlive.shim")
_BIGINT = 2**63
_ENTRY_ARGUMENTS = frozenset({"webinar_id", "session_id", "client"})
ENTRY_NAME = BATCHED_ENTRY.partition(".")[2]  # track_access, in any exposed schema
NO_CONTENT = 204


@dataclass(slots=True)
class Call:
    """A request to call ``schema.name``, as an entrance parsed it: its method (GET, HEAD
    or POST), its ASGI headers (credential, ``Prefer``, ``If-None-Match``) and how to read
    its arguments (after the token is verified)."""

    method: str
    schema: str
    name: str
    headers: dict[bytes, bytes]
    # The arguments, or a wait for them (a body still to read): the lean entrance has read
    # its body already, so its arguments cost no coroutine.
    arguments: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]

    @property
    def minimal(self) -> bool:
        """``Prefer: return=minimal``: the caller wants 204 without the function's value."""
        prefer = self.headers.get(b"prefer")
        return prefer is not None and b"return=minimal" in prefer

    @property
    def if_none_match(self) -> str | None:
        value = self.headers.get(b"if-none-match")
        return None if value is None else value.decode("latin-1")


@dataclass(slots=True)
class Answer:
    """What the entrance writes: status, JSON body (None: no body) and headers. An
    entrance only reads it (``NO_CONTENT_ANSWER`` is shared)."""

    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


NO_CONTENT_ANSWER = Answer(NO_CONTENT)  # a heartbeat's answer, made once


async def run(service: Service, ctx: RequestContext, parse: Call | Callable[[], Call]) -> Answer:
    """The whole pipeline (module doc) for the request ``parse`` describes (it may refuse
    it: a wrong method or profile), or for the ``Call`` an entrance parsed already (the
    lean one); every outcome is an ``Answer``. One coroutine for the whole call: each
    level more costs the hot path about a microsecond per request."""
    try:
        call = parse if isinstance(parse, Call) else parse()
        if call.name == ENTRY_NAME and service.turns is not None and call.method == "POST":
            call.arguments = await _entry_turn(service, call)
        t0 = time.perf_counter()
        try:
            token = bearer(call.headers)
            identity = service.auth.known(token) or await service.auth.identify(token)
        except ApiError as err:  # a rejected token, counted by reason
            service.metrics.rejected_tokens.labels(err.reason).inc()
            raise
        finally:
            ctx.auth_ms = (time.perf_counter() - t0) * 1000
        ctx.role = identity.role
        given = call.arguments()
        if not isinstance(given, dict):
            given = await given
        routine, query, beat, entry = _plan(service, ctx, call, identity, given)
        headers: dict[str, str] = {}
        if beat is not None:
            await service.database.ping(ctx, identity, beat, query)
            result = None
        elif entry is not None:
            result = await service.database.enter(ctx, identity, entry, query)
        elif call.method != "POST":
            read = await reads.read(
                service, ctx, identity=identity, routine=routine, given=given, query=query
            )
            headers = read.headers
            inm = call.if_none_match
            if inm is not None and reads.etag_matches(inm, read.etag):
                return Answer(304, None, headers)
            result = read.body
        else:
            result = await service.database.call(ctx, identity, query)
        if routine.returns_void or call.minimal:
            return Answer(NO_CONTENT, None, headers) if headers else NO_CONTENT_ANSWER
        return Answer(200, b"null" if result is None else result.encode(), headers)
    except ApiError as err:
        return error_answer(failed(service, ctx, err))
    except Exception:
        log.exception("request %s: internal error", ctx.request_id)
        return error_answer(unexpected(service, ctx))


async def _entry_turn(
    service: Service, call: Call
) -> Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]:
    """Wait for a first entry's turn of its webinar (``shim.http.turns``), its arguments
    read first for the session and webinar ids; returns what ``call.arguments`` becomes:
    those arguments, or their error, raised only where every call's is (after the token's
    check)."""
    try:
        given = call.arguments()
        if not isinstance(given, dict):
            given = await given
    except ApiError as err:
        failure = err

        def refused() -> dict[str, Any]:
            raise failure

        return refused
    if given.get("session_id") is None:  # a first entry; an entered viewer's goes at once
        webinar = given.get("webinar_id")
        assert service.turns is not None
        turn = service.turns.wait(webinar if isinstance(webinar, int | str) else None)
        if turn is not None:
            await turn
    return lambda: given


def error_answer(err: ApiError) -> Answer:
    return Answer(err.status, err.body(), err.headers)


def _plan(
    service: Service, ctx: RequestContext, call: Call, identity: Identity, given: dict[str, Any]
) -> tuple[Routine, Query, tuple[int, str] | None, tuple[int, str | None, str | None] | None]:
    """Bind ``given`` to the function: the routine, the bound call, the heartbeat
    (webinar id, session id) when it goes through the coalescer, and the entry (webinar
    id, session id, client JSON) when it goes through the entry batcher."""
    routine, statement, values = _bind(service, ctx, call, given)
    timeout = service.catalog.role_timeouts.get(identity.role, service.settings.statement_timeout)
    is_get = call.method != "POST"
    read_only = routine.readonly or is_get
    # Positional: keywords cost 1,400 instructions more a request (callgrind).
    query = Query(statement, values, timeout, read_only, ctx.function in HOT_FUNCTIONS)
    if is_get:
        return routine, query, None, None
    beat = _heartbeat(service, ctx.function, identity, timeout, given)
    if beat is not None:
        return routine, query, beat, None
    return routine, query, None, _entry(service, ctx.function, identity, timeout, given)


def _bind(
    service: Service, ctx: RequestContext, call: Call, given: dict[str, Any]
) -> tuple[Routine, bytes, list[bytes | None]]:
    catalog = service.catalog
    if not catalog.loaded:
        raise errors.unavailable(
            "PGRST002",
            "Could not query the database for the schema cache. Retrying.",
            service.settings.retry_after,
            "catalog_not_loaded",
        )
    candidates = catalog.find(call.schema, call.name)
    if not candidates:
        raise ApiError(
            404,
            "PGRST202",
            f"Could not find the function {call.schema}.{call.name} in the schema cache",
            hint="If a new function was created in the database with this name and "
            "parameters, try reloading the schema cache.",
            details="unknown_function",
        )
    # Only routable names become metric labels: clients cannot grow the label set.
    ctx.function = f"{call.schema}.{call.name}"
    routine, statement, values = bind.bind(candidates, given, from_query=call.method != "POST")
    if call.method != "POST" and not routine.readonly:
        raise ApiError(
            405,
            "PGRST101",
            f"Cannot use the {call.method} method on volatile function {ctx.function}",
            details="method_not_allowed",
        )
    return routine, statement, values


def _heartbeat(
    service: Service, function: str, identity: Identity, timeout: str, given: dict[str, Any]
) -> tuple[int, str] | None:
    """(webinar id, session id) when this call may go through the coalescer: the
    heartbeat of a verified user with the default timeout and exactly its two arguments,
    well formed (anything else takes the single path, which answers the same way)."""
    if (
        function != COALESCED
        or service.database.coalescer is None
        or identity.user_id is None
        or timeout != service.settings.statement_timeout
        or len(given) != 2
    ):
        return None
    wid, session = given.get("webinar_id"), given.get("session_id")
    if type(wid) is not int or not -_BIGINT <= wid < _BIGINT:
        return None
    if not isinstance(session, str) or not canonical_uuid(session):
        return None
    return wid, session


def _entry(
    service: Service, function: str, identity: Identity, timeout: str, given: dict[str, Any]
) -> tuple[int, str | None, str | None] | None:
    """(webinar id, session id, client JSON) when this call may go through the entry
    batcher: ``track_access`` of a verified user with the default timeout and arguments
    among its three, well formed (anything else takes the single path, which answers the
    same way)."""
    if (
        function != BATCHED_ENTRY
        or service.database.entries is None
        or identity.user_id is None
        or timeout != service.settings.statement_timeout
        or not given.keys() <= _ENTRY_ARGUMENTS
    ):
        return None
    wid, session, client = given.get("webinar_id"), given.get("session_id"), given.get("client")
    if type(wid) is not int or not -_BIGINT <= wid < _BIGINT:
        return None
    if session is not None and not canonical_uuid(session):
        return None
    if client is not None and not isinstance(client, dict):
        return None
    # The text bind sends for a jsonb argument (``bind._value``), so the same jsonb.
    return wid, session, None if client is None else json.dumps(client)
