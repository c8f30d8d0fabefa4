"""The extra HTTP hop of the old design (the serverless function in front of the API):
an ASGI app that forwards every request to ``OLD_UPSTREAM`` (keep-alive httpx client)
and returns its answer. Loopback upstreams only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_FORWARDED = ("authorization", "content-type", "accept")


def create_app() -> Starlette:
    upstream = os.environ["OLD_UPSTREAM"]
    host = urlsplit(upstream).hostname or ""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("the proxy forwards to loopback only")
    state: dict[str, httpx.AsyncClient] = {}

    async def forward(request: Request) -> Response:
        client = state["client"]
        headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
        answer = await client.request(
            request.method,
            request.url.path,
            content=await request.body(),
            headers=headers,
        )
        kept = {k: v for k, v in answer.headers.items() if k in ("content-type",)}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=upstream, limits=limits, timeout=60.0) as client:
            state["client"] = client
            yield

    return Starlette(
        routes=[Route("/{path:path}", forward, methods=["GET", "POST"])],
        lifespan=lifespan,
    )
