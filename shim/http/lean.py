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
        self._cors = bool(service.settings.cors_origins)
        self.taken = 0  # requests answered here (the two-entrance test reads it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = (
            hot_route(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        headers = dict(scope["headers"]) if hot is not None else {}
        if hot is None or not self._plain(headers):
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
        settings = self.service.settings

        def arguments() -> dict[str, Any]:
            given = bind.parse_body(body)
            return given if wid is None else route.arguments(given, wid)

        call = pipeline.Call(
            "POST",
            settings.schemas[0] if wid is None else settings.legacy_schema,
            name,
            headers,
            arguments,
        )
        answer = await pipeline.run(self.service, ctx, lambda: call)
        await self._write(scope, send, ctx, route.label, answer)

    def _plain(self, headers: dict[bytes, bytes]) -> bool:
        """A request this entrance parses whole (module doc); anything else is Starlette's."""
        authorization = headers.get(b"authorization")
        content_type = headers.get(b"content-type")
        return (
            authorization is not None
            and authorization.startswith(b"Bearer ")
            and not (self._cors and b"origin" in headers)
            and b"prefer" not in headers
            and b"content-profile" not in headers
            and (content_type is None or content_type.partition(b";")[0].strip().lower() == _JSON)
        )

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
        reading = deadlines.tasks_for_limit(limit)
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
