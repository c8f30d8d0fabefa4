"""The old front end's routes, mapped onto the API functions so it switches by base URL.

- ``POST /api/webinars/{id}/access/track`` (body may carry ``session_id``, ``client``)
  -> ``track_access`` -> 200 with its JSON;
- ``POST .../presence/ping`` and ``.../presence/leave`` (body: ``session_id``) -> 204;
- ``GET .../stats/access`` -> ``access_stats`` (GET semantics: read-only, ETag, cache).

The schema is ``EVENTLIVE_LEGACY_SCHEMA`` (default ``api``); errors are the RPC's.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shim.http import bind
from shim.http.calls import identify, invoke
from shim.http.errors import ApiError
from shim.http.request import read_body, require_json
from shim.http.respond import RequestContext, respond
from shim.http.service import Service

# route suffix -> (function, HTTP method, body keys accepted)
_ROUTES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "access/track": ("track_access", "POST", ("session_id", "client")),
    "presence/ping": ("presence_ping", "POST", ("session_id",)),
    "presence/leave": ("presence_leave", "POST", ("session_id",)),
    "stats/access": ("access_stats", "GET", ()),
}


def _webinar_id(request: Request) -> int:
    raw = request.path_params["webinar_id"]
    # isascii: str.isdigit() also passes superscripts (int() then fails) and Arabic digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(
            400, "22P02", "The webinar id must be a positive integer", details="invalid_webinar_id"
        )
    return int(raw)


def routes(service: Service) -> list[Route]:
    """Starlette routes bound to ``service``."""
    result = []
    for suffix, (function, method, keys) in _ROUTES.items():
        result.append(
            Route(
                f"/api/webinars/{{webinar_id}}/{suffix}",
                _endpoint(service, suffix, function, method, keys),
                methods=["GET", "HEAD"] if method == "GET" else ["POST"],
            )
        )
    return result


def _endpoint(
    service: Service, suffix: str, function: str, method: str, keys: tuple[str, ...]
) -> Any:
    route = f"/api/webinars/{{id}}/{suffix}"

    async def endpoint(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            identity = await identify(service, request, ctx)
            given: dict[str, Any] = {}
            if method == "POST":
                settings = service.settings
                require_json(request)
                raw = await read_body(
                    request, limit=settings.max_body, timeout=settings.body_timeout
                )
                given = bind.parse_body(raw)
                extra = sorted(set(given) - set(keys))
                if extra:
                    raise bind.bad_request(
                        "PGRST102", f"Unknown field(s): {', '.join(extra)}", "unknown_argument"
                    )
            given["webinar_id"] = (
                _webinar_id(request) if method == "POST" else str(_webinar_id(request))
            )
            return await invoke(
                service,
                request,
                ctx,
                schema=service.settings.legacy_schema,
                name=function,
                given=given,
                identity=identity,
            )

        return await respond(service, request, route, work)

    return endpoint
