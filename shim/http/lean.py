"""The lean entrance of the hot routes: ``POST /rpc/presence_ping``, ``/rpc/track_access``
(and their ``/rest/v1`` twins) and the legacy ``/api/webinars/{id}/presence/ping``,
``…/access/track``, ``…/presence/leave``, taken by a plain ASGI layer in front of
Starlette's routing.

It only turns the raw ASGI request into the pipeline's ``Call`` (``shim.http.pipeline``)
and writes the ``Answer``: the steps, the errors and the bookkeeping are the pipeline's
and ``respond.finish``'s, the same as behind the Starlette routes (a test runs every
behaviour case through both entrances). What it does not parse -- a CORS request, a
``Prefer`` or ``Content-Profile`` header, a body other than JSON, a credential other than
a bearer token, a body in several chunks past the limit -- it hands to Starlette
untouched (the body it read is replayed).

Measured (``python -m bench``, py-spy on the shim under closed-loop pings): Starlette's
routing, requests and responses were 14.5 % of the shim's samples through Starlette and
2.4 % with this entrance; the rest is uvicorn's protocol (29 %), the libpq exchange (18 %,
mostly its socket calls) and the event loop.

Per request it makes one ``Call`` and hands it to ``pipeline.run`` as it is (no parse
callable), keeps its admission test inline, the two schemas and the body deadlines' sweep
looked up once, and the path's route from ``routes.hot_route``'s memo. Instructions per
request, whole shim, real database (``python -m bench.inproc_ab --callgrind``, 256
viewers, 64 clients), against the two-path layout before one pipeline (8be0999): legacy
ping 229,200 -> 223,100, ``/rpc`` ping 222,000 -> 221,500, track re-confirmation 465,600
-> 278,500 (entry batching). The rest of a ping: body JSON 17,000, argument binding
44,000, the metrics' histograms 31,000 (prometheus-client: a lock per value), token
cache 12,000, Server-Timing 5,000, access line 4,000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from shim.http import bind, pipeline
from shim.http.respond import JSON_TYPE, RequestContext, failed, finish, request_id
from shim.http.routes import hot_route
from shim.http.service import Service
from shim.web import deadlines
from shim.web.body import body_timeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_TYPE = JSON_TYPE.encode()
_JSON = b"application/json"


class LeanEntrance:
    """ASGI middleware: the hot routes here, everything else to ``app``."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        settings = service.settings
        self._cors = bool(settings.cors_origins)
        self._schemas = (settings.schemas[0], settings.legacy_schema)  # /rpc, legacy
        self.taken = 0  # requests answered here (the two-entrance test reads it)
        self._reading: deadlines.TaskDeadlines | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = (
            hot_route(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if hot is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        content_type = headers.get(b"content-type")
        if not (  # a request this entrance parses whole (module doc), else Starlette's
            authorization is not None
            and authorization[:7] == b"Bearer "
            and not (self._cors and b"origin" in headers)
            and b"prefer" not in headers
            and b"content-profile" not in headers
            and (content_type is None or content_type.partition(b";")[0].strip().lower() == _JSON)
        ):
            await self.app(scope, receive, send)
            return
        self.taken += 1
        ctx = RequestContext(request_id(headers.get(b"x-request-id")))
        route, name, wid = hot
        read = await self._read_body(receive)
        if read is None:
            err = failed(self.service, ctx, body_timeout(self.service.settings.body_timeout))
            await self._write(scope, send, ctx, route.label, pipeline.error_answer(err))
            return
        messages, body = read
        if body is None:  # too large, or the client left: Starlette's to answer
            await self.app(scope, _replay(messages, receive), send)
            return

        def arguments() -> dict[str, Any]:
            given = bind.parse_body(body)
            return given if wid is None else route.arguments(given, wid)

        schema = self._schemas[0] if wid is None else self._schemas[1]
        call = pipeline.Call("POST", schema, name, headers, arguments)
        answer = await pipeline.run(self.service, ctx, call)
        await self._write(scope, send, ctx, route.label, answer)

    async def _write(
        self, scope: Scope, send: Send, ctx: RequestContext, route: str, answer: pipeline.Answer
    ) -> None:
        out = finish(self.service, ctx, scope, route, answer.status)
        if answer.headers:
            out += [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in answer.headers.items()
            ]
        payload = answer.body or b""
        if answer.body is not None:
            out.append((b"content-length", b"%d" % len(payload)))
            out.append((b"content-type", _JSON_TYPE))
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, receive: Receive) -> tuple[list[Message], bytes | None] | None:
        """The request's messages and its body (None when too large or not a request);
        None when the body did not arrive within ``EVENTLIVE_BODY_TIMEOUT``."""
        messages: list[Message] = []
        # A client may stall before or inside its body: bounded as the full path is, by
        # a shared sweep rather than a timer per request (``shim.web.deadlines``).
        task = asyncio.current_task()
        limit = self.service.settings.body_timeout
        reading = self._reading
        if reading is None or self._loop is not asyncio.get_running_loop():
            # The sweep of this loop, looked up once (2,400 instructions a request).
            reading = self._reading = deadlines.tasks_for_limit(limit)
            self._loop = asyncio.get_running_loop()
        reading.add(task, limit)
        try:
            messages.append(await receive())
            body = messages[0].get("body", b"") if messages[0]["type"] == "http.request" else None
            if body is not None and messages[0].get("more_body"):
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


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` again, in order, then defers to ``receive``."""
    pending = messages[::-1]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
