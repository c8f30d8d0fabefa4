"""The Starlette entrance of every function route of the table (``shim.http.routes``):
``/rpc/{fn}``, ``/rest/v1/rpc/{fn}`` and the legacy ``/api/webinars/{id}/…`` routes, so the
old front end switches by base URL. Each request becomes the pipeline's ``Call``
(``shim.http.pipeline``); the lean entrance (``shim.http.lean``) builds the same value for
the plain hot requests before Starlette sees them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shim.http import bind, pipeline
from shim.http.errors import ApiError
from shim.http.request import profile, require_json
from shim.http.respond import JSON_TYPE, RequestContext, finish, request_id
from shim.http.routes import ROUTES, FunctionRoute
from shim.http.service import Service
from shim.web.body import read_body
from shim.web.ids import invalid_webinar_id, webinar_id

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_METHODS = {"RPC": ALL_METHODS, "POST": ["POST"], "GET": ["GET", "HEAD"]}


def routes(service: Service) -> list[Route]:
    """The function routes, bound to ``service``."""
    return [
        Route(route.path, _endpoint(service, route), methods=_METHODS[route.method])
        for route in ROUTES
    ]


def _endpoint(service: Service, route: FunctionRoute) -> Any:
    async def endpoint(request: Request) -> Response:
        headers: dict[bytes, bytes] = dict(request.scope["headers"])
        ctx = RequestContext(request_id(headers.get(b"x-request-id")))
        answer = await pipeline.run(service, ctx, lambda: _call(service, route, request, headers))
        out = finish(service, ctx, request.scope, route.label, answer.status)
        response = Response(
            answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type=JSON_TYPE if answer.body is not None else None,
        )
        for name, value in out:
            response.headers[name.decode()] = value.decode("latin-1")
        return response

    return endpoint


def _call(
    service: Service, route: FunctionRoute, request: Request, headers: dict[bytes, bytes]
) -> pipeline.Call:
    """The request as the pipeline's ``Call``: method, schema and name checked here, the
    arguments read when the pipeline asks (after the token)."""
    settings = service.settings
    method = request.method
    if route.function is None:
        if method not in ("GET", "HEAD", "POST"):
            raise ApiError(
                405,
                "PGRST101",
                f"Cannot use the {method} method on RPC",
                details="method_not_allowed",
                headers={"Allow": "GET, HEAD, POST"},
            )
        schema, name = profile(request, settings.schemas), request.path_params["fn"]
    else:
        schema, name = settings.legacy_schema, route.function

    async def arguments() -> dict[str, Any]:
        given: dict[str, Any] = {}
        if method == "POST":
            require_json(request)
            raw = await read_body(request, limit=settings.max_body, timeout=settings.body_timeout)
            given = bind.parse_body(raw)
        elif route.function is None:
            given = bind.parse_query(request.query_params.multi_items())
        if route.function is None:
            return given
        wid = webinar_id(request.path_params["webinar_id"])
        if wid is None:
            raise invalid_webinar_id()
        return route.arguments(given, wid)

    return pipeline.Call(method, schema, name, headers, arguments)
