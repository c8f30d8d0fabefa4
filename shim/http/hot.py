"""The lean path of the hot routes: ``POST /rpc/presence_ping``, ``/rpc/track_access``
(and their ``/rest/v1`` twins) and the legacy ``/api/webinars/{id}/presence/ping``,
``…/access/track``, ``…/presence/leave``, answered by a plain ASGI layer in front of
Starlette's routing.

It runs the same steps with the same functions as the full path (``bind.parse_body``,
``Authenticator.identify``, ``bind.bind``, ``calls.coalesced_ping`` /
``calls.call_function``, the same metrics, access line, request id and Server-Timing),
minus what these routes do not need: Starlette's Request, routing, exception middleware
and Response objects on success. Whatever it is not sure of -- a body in several chunks,
an Origin (CORS), a Prefer or Content-Profile header, a body other than JSON, no bearer
token, and every input error before the database (bad JSON, unknown argument, invalid or
expired token, ...) -- it hands to the full path untouched (the body it read is replayed),
so every error answer stays exactly the full path's. Database answers (204, 200, the
function's 4xx, 503) it writes itself.

Measured (``python -m bench``, py-spy on the shim under closed-loop pings): Starlette's
routing, requests and responses fell from 14.5 % of the shim's samples (reference run
before this work) to 2.4 %; JWT verification from 7 % to under 1 % (the token cache holds
the audience); the rest is uvicorn's protocol (29 %), the libpq exchange (18 %, mostly its
socket calls) and the event loop. Shim CPU per ping at 64 connections, with coalescing
and this path together: 1.11 ms -> 0.35-0.43 ms (README, "Benchmarks").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from shim.http import bind, calls, deadlines
from shim.http.auth import canonical_uuid
from shim.http.errors import ApiError
from shim.http.request import body_timeout
from shim.http.respond import JSON_TYPE, RequestContext, error_response, new_request_id
from shim.http.service import Service

log = logging.getLogger("eventlive.shim")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# /rpc routes: path -> function name (schema: the default profile).
_RPC = {
    f"{prefix}/rpc/{name}": name
    for prefix in ("", "/rest/v1")
    for name in ("presence_ping", "track_access")
}
# legacy suffix -> (function, body keys accepted, metric route label)
_LEGACY = {
    "presence/ping": ("presence_ping", frozenset({"session_id"})),
    "access/track": ("track_access", frozenset({"session_id", "client"})),
    "presence/leave": ("presence_leave", frozenset({"session_id"})),
}
_LEGACY_PREFIX = "/api/webinars/"
_BIGINT = 2**63
_NO_CONTENT = 204


class HotPath:
    """ASGI middleware: the hot routes here, everything else to ``app``."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self._cors = bool(service.settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: PLR0911 - each return hands on
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        name = _RPC.get(path)
        webinar_id: int | None = None
        keys: frozenset[str] | None = None
        if name is not None:
            route = "/rpc/{fn}"
            schema = self.service.settings.schemas[0]
        elif path.startswith(_LEGACY_PREFIX):
            raw_id, _, suffix = path[len(_LEGACY_PREFIX) :].partition("/")
            legacy = _LEGACY.get(suffix)
            if legacy is None or not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
                await self.app(scope, receive, send)
                return
            name, keys = legacy
            webinar_id = int(raw_id)
            route = f"/api/webinars/{{id}}/{suffix}"
            schema = self.service.settings.legacy_schema
        else:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        content_type = headers.get(b"content-type")
        if (
            authorization is None
            or not authorization.startswith(b"Bearer ")
            or (self._cors and b"origin" in headers)
            or b"prefer" in headers
            or b"content-profile" in headers
            # Anything but plain application/json (a form, text, +json types) is the full
            # path's to judge (415 or JSON), as it is for every other route.
            or (
                content_type is not None
                and content_type.partition(b";")[0].strip().lower() != b"application/json"
            )
        ):
            await self.app(scope, receive, send)
            return
        read = await self._read_body(receive)
        if read is None:
            await self._timed_out(scope, send, route, self.service.settings.body_timeout)
            return
        messages, body = read
        if body is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        if messages[0]["type"] != "http.request":
            await self.app(scope, _replay(messages, receive), send)
            return
        handled = await self._handle(
            scope,
            send,
            headers,
            authorization[7:].strip().decode("latin-1"),
            body,
            route=route,
            schema=schema,
            name=name,
            webinar_id=webinar_id,
            keys=keys,
        )
        if not handled:
            await self.app(scope, _replay(messages, receive), send)

    async def _handle(
        self,
        scope: Scope,
        send: Send,
        headers: dict[bytes, bytes],
        token: str,
        body: bytes,
        *,
        route: str,
        schema: str,
        name: str,
        webinar_id: int | None,
        keys: frozenset[str] | None,
    ) -> bool:
        """Answer the request and return True, or return False (nothing sent) to let
        the full path answer it."""
        service = self.service
        started = time.perf_counter()
        bound = await self._bind(
            token, body, schema=schema, name=name, webinar_id=webinar_id, keys=keys
        )
        if bound is None:
            return False
        identity, given, routine, statement, values = bound
        catalog = service.catalog
        incoming = headers.get(b"x-request-id")
        request_id = (
            incoming.decode("latin-1")
            if incoming is not None and 0 < len(incoming) <= 64 and incoming.isascii()
            and incoming.decode("latin-1").isprintable()
            else new_request_id()
        )  # fmt: skip
        ctx = RequestContext(request_id, started)
        ctx.function = f"{schema}.{name}"
        ctx.role = identity.role
        ctx.auth_ms = (time.perf_counter() - started) * 1000
        settings = service.settings
        timeout = catalog.role_timeouts.get(identity.role, settings.statement_timeout)
        status = 200
        result: str | None = None
        try:
            wid = given.get("webinar_id")
            session = given.get("session_id")
            if (
                ctx.function == calls.COALESCED_PING
                and service.coalescer is not None
                and identity.user_id is not None
                and timeout == settings.statement_timeout
                and type(wid) is int
                and -_BIGINT <= wid < _BIGINT
                and isinstance(session, str)
                and canonical_uuid(session)
                and len(given) == 2
            ):
                await calls.coalesced_ping(
                    service,
                    ctx,
                    identity,
                    webinar_id=wid,
                    session_id=session,
                    statement=statement,
                    values=values,
                )
            else:
                result = await calls.call_function(
                    service,
                    ctx,
                    identity,
                    statement,
                    values,
                    timeout=timeout,
                    read_only=routine.readonly,
                    hot=True,
                )
        except ApiError as err:
            await self._error(scope, send, ctx, route, error_response(service, ctx, err))
            return True
        except Exception:
            from shim.http import errors  # noqa: PLC0415 - the rare path only

            log.exception("request %s: internal error", ctx.request_id)
            response = error_response(service, ctx, errors.internal(ctx.request_id))
            await self._error(scope, send, ctx, route, response)
            return True
        if routine.returns_void:
            status = _NO_CONTENT
        total = (time.perf_counter() - started) * 1000
        out = [
            (b"x-request-id", request_id.encode("latin-1")),
            (
                b"server-timing",
                b"auth;dur=%.3f, db;dur=%.3f, total;dur=%.3f" % (ctx.auth_ms, ctx.db_ms, total),
            ),
        ]
        payload = b""
        if status == 200:
            payload = b"null" if result is None else result.encode()
            out.append((b"content-length", b"%d" % len(payload)))
            out.append((b"content-type", _JSON_TYPE))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})
        self._account(scope, ctx, route, status, total)
        return True

    async def _read_body(self, receive: Receive) -> tuple[list[Message], bytes | None] | None:
        """The request's messages and its body (None when too large or not a request);
        None when the body did not arrive within ``EVENTLIVE_BODY_TIMEOUT``."""
        messages: list[Message] = []
        # A client may stall before or inside its body: bounded as the full path is, by
        # a shared sweep rather than a timer per request (``shim.http.deadlines``).
        task = asyncio.current_task()
        limit = self.service.settings.body_timeout
        reading = deadlines.tasks_for_limit(limit)
        reading.add(task, limit)
        try:
            messages.append(await receive())
            body = messages[0].get("body", b"")
            if messages[0].get("more_body"):
                # uvicorn gives a small body whole; others (httpx's ASGI transport)
                # stream it. A large body goes to the full path (its 413), replayed.
                body = await self._rest_of_body(messages, receive)
        except asyncio.CancelledError:
            if not reading.expired(task):
                raise
            assert task is not None
            task.uncancel()
            return None
        finally:
            reading.discard(task)
        return messages, body

    async def _rest_of_body(self, messages: list[Message], receive: Receive) -> bytes | None:
        """The body's remaining chunks appended to ``messages``; None when it would not
        fit in ``EVENTLIVE_MAX_BODY`` (or the client left)."""
        limit = self.service.settings.max_body
        size = len(messages[0].get("body", b""))
        while messages[-1].get("more_body"):
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or size > limit:
                return None
        return b"".join(m.get("body", b"") for m in messages)

    async def _timed_out(self, scope: Scope, send: Send, route: str, timeout: float) -> None:
        """The full path's 408 for a body that did not arrive in time."""
        ctx = RequestContext(new_request_id())
        response = error_response(self.service, ctx, body_timeout(timeout))
        await self._error(scope, send, ctx, route, response)

    async def _bind(
        self,
        token: str,
        body: bytes,
        *,
        schema: str,
        name: str,
        webinar_id: int | None,
        keys: frozenset[str] | None,
    ) -> tuple[Any, dict[str, Any], Any, bytes, list[bytes | None]] | None:
        """Body, token and arguments checked by the full path's own functions; None when
        any of them refuses (the full path then answers with its error)."""
        catalog = self.service.catalog
        candidates = catalog.find(schema, name) if catalog.loaded else None
        if not candidates or not token:
            return None
        try:
            given = bind.parse_body(body)
            if keys is not None:
                if not keys.issuperset(given):
                    return None
                given["webinar_id"] = webinar_id
            identity = await self.service.auth.identify(token)
            routine, statement, values = bind.bind(candidates, given)
        except ApiError:
            return None
        return identity, given, routine, statement, values

    async def _error(
        self, scope: Scope, send: Send, ctx: RequestContext, route: str, response: Any
    ) -> None:
        total = (time.perf_counter() - ctx.started) * 1000
        response.headers["X-Request-Id"] = ctx.request_id
        response.headers["Server-Timing"] = (
            f"auth;dur={ctx.auth_ms:.3f}, db;dur={ctx.db_ms:.3f}, total;dur={total:.3f}"
        )

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)
        self._account(scope, ctx, route, response.status_code, total)

    def _account(
        self, scope: Scope, ctx: RequestContext, route: str, status: int, total: float
    ) -> None:
        service = self.service
        service.metrics.observe(route, ctx.function, status, total / 1000)
        if service.access_log is not None:
            service.access_log.add(
                (
                    time.time(),
                    ctx.request_id,
                    "POST",
                    scope.get("root_path", "") + scope["path"],
                    route,
                    ctx.function,
                    ctx.role,
                    status,
                    total,
                    ctx.db_ms,
                    ctx.cache,
                    ctx.error,
                )
            )


_JSON_TYPE = JSON_TYPE.encode()


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` again, in order, then defers to ``receive``."""
    pending = messages[::-1]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
