"""The Starlette application: ``create_app(settings)``.

Routes: ``/rpc/{fn}``, ``/rest/v1/rpc/{fn}`` (GET/HEAD/POST), the legacy
``/api/webinars/...`` routes (``shim.http.legacy``), ``/health``, ``/ready``, ``/metrics``,
``/openapi.json``, ``/status`` and ``/eventlive.js`` (``shim.http.console``), and the
realtime routes of ``shim.realtime``. The long-lived parts open in the lifespan
(``shim.http.service``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from shim import realtime
from shim.http import bind, errors, legacy, openapi
from shim.http.calls import identify, invoke, ping_database
from shim.http.console import Console
from shim.http.errors import ApiError
from shim.http.hot import HotPath
from shim.http.request import profile, read_body, require_json
from shim.http.respond import JSON_TYPE, RequestContext, respond
from shim.http.service import Service
from shim.http.settings import Settings

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class ShimApp(Starlette):
    """Starlette with the hot routes' lean path (``shim.http.hot``) in front of its whole
    middleware stack: a ping or track answered there skips Starlette's error middleware
    and its wrapped ``send`` (3 % of the shim's CPU per ping, py-spy); everything else,
    CORS requests of the hot routes included, goes through Starlette as before. The lean
    path answers its own unexpected errors (500, PostgREST body)."""

    def __init__(self, service: Service, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hot = HotPath(super().__call__, service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._hot(scope, receive, send)


def create_app(settings: Settings, hub_settings: realtime.HubSettings | None = None) -> Starlette:
    """The ASGI app for ``settings``; resources open in its lifespan. The realtime routes
    (``shim.realtime``) are mounted unless ``hub_settings.enabled`` is off."""
    service = Service(settings)
    hub_settings = hub_settings or realtime.HubSettings()

    async def verify_token(token: str | None) -> realtime.Principal:
        # The realtime hub verifies tokens with the shim's authenticator (same keys, cache).
        try:
            identity = await service.auth.identify(token)
        except ApiError as exc:
            raise realtime.TokenRejectedError(exc.message) from None
        return realtime.Principal(identity.role, identity.claims, identity.expires)

    live = realtime.Realtime(
        hub_settings, settings.database_url, verify_token, service.rooms.changed
    )
    console = Console(service)  # /status and /eventlive.js

    async def rpc_endpoint(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            method = request.method
            if method not in ("GET", "HEAD", "POST"):
                raise ApiError(
                    405,
                    "PGRST101",
                    f"Cannot use the {method} method on RPC",
                    details="method_not_allowed",
                    headers={"Allow": "GET, HEAD, POST"},
                )
            schema = profile(request, settings.schemas)
            identity = await identify(service, request, ctx)
            if method == "POST":
                require_json(request)
                raw = await read_body(
                    request, limit=settings.max_body, timeout=settings.body_timeout
                )
                given = bind.parse_body(raw)
            else:
                given = bind.parse_query(request.query_params.multi_items())
            return await invoke(
                service,
                request,
                ctx,
                schema=schema,
                name=request.path_params["fn"],
                given=given,
                identity=identity,
            )

        return await respond(service, request, "/rpc/{fn}", work)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            await ping_database(service)
            if not service.catalog.loaded:
                raise errors.unavailable(
                    "PGRST002",
                    "Schema cache not loaded",
                    settings.retry_after,
                    "catalog_not_loaded",
                )
            return JSONResponse({"status": "ready"})

        return await respond(service, request, "/ready", work)

    async def metrics(request: Request) -> Response:
        return Response(
            service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_json(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            schema = profile(request, settings.schemas)
            return JSONResponse(openapi.document(service.catalog, schema, settings))

        return await respond(service, request, "/openapi.json", work)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        if hub_settings.enabled:
            await live.start()
        try:
            yield
        finally:
            if hub_settings.enabled:
                await live.stop()
            await console.stop()
            await service.stop()

    routes = [
        Route("/rpc/{fn}", rpc_endpoint, methods=ALL_METHODS),
        Route("/rest/v1/rpc/{fn}", rpc_endpoint, methods=ALL_METHODS),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *legacy.routes(service),
        *(live.routes() if hub_settings.enabled else []),
        *console.routes(),
    ]
    app = ShimApp(
        service,
        routes=routes,
        lifespan=lifespan,
        middleware=_middleware(settings),
        exception_handlers={HTTPException: _http_error},
    )
    app.state.service = service
    app.state.realtime = live
    app.state.console = console
    return app


def _middleware(settings: Settings) -> list[Middleware]:
    if not settings.cors_origins:
        return []
    # supabase-js in a browser on another origin: preflights and exposed headers.
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=[
                "authorization",
                "apikey",
                "content-type",
                "prefer",
                "accept-profile",
                "content-profile",
                "x-client-info",
                "x-request-id",
                "if-none-match",
            ],
            expose_headers=["etag", "server-timing", "x-request-id", "retry-after"],
            max_age=3600,
        )
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods on fixed routes: PostgREST-shaped too."""
    assert isinstance(exc, HTTPException)
    code = {404: "PGRST125", 405: "PGRST101"}.get(exc.status_code, "PGRST000")
    err = ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
    return Response(err.body(), status_code=err.status, media_type=JSON_TYPE, headers=err.headers)


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (each worker reads the environment)."""
    return create_app(Settings.from_env(), realtime.HubSettings.from_env())
