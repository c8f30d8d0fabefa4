"""The shim's own routes beside the functions: ``/health`` (the process), ``/ready`` (the
database and the catalog), ``/metrics`` (Prometheus text) and ``/openapi.json`` (built
from the exposed functions, as PostgREST serves its own)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shim.http import errors, openapi
from shim.http.request import profile
from shim.http.respond import RequestContext, respond
from shim.http.service import Service


def routes(service: Service) -> list[Route]:
    """The operations routes, bound to ``service``."""
    settings = service.settings

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            await service.database.ready()
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

    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
