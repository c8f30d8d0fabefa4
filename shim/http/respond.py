"""Turning a request's outcome into its answer: ``respond`` runs the route's work and
adds, whatever happened, the request id, Server-Timing, the metrics and one JSON access
line; every ``ApiError`` (and any unexpected exception, as a bare 500) becomes the
PostgREST-shaped error body."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from shim.http import errors
from shim.http.errors import ApiError
from shim.http.request import header
from shim.http.service import Service

log = logging.getLogger("eventlive.shim")
access_log = logging.getLogger("eventlive.access")

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(slots=True)
class RequestContext:
    """Per-request bookkeeping for Server-Timing, metrics and the access log."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    auth_ms: float = 0.0
    db_ms: float = 0.0
    function: str = ""
    role: str = ""
    cache: str = ""
    error: str = ""


Work = Callable[[RequestContext], Awaitable[Response]]


async def respond(service: Service, request: Request, route: str, work: Work) -> Response:
    """Run ``work`` and turn every outcome into a response with timing, metrics, log."""
    incoming = header(request, b"x-request-id") or ""
    ctx = RequestContext(
        incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else os.urandom(8).hex()
    )
    try:
        response = await work(ctx)
    except ApiError as err:
        response = error_response(service, ctx, err)
    except Exception:
        log.exception("request %s: internal error", ctx.request_id)
        response = error_response(service, ctx, errors.internal(ctx.request_id))
    total = (time.perf_counter() - ctx.started) * 1000
    h = response.headers
    h["X-Request-Id"] = ctx.request_id
    h["Server-Timing"] = (
        f"auth;dur={ctx.auth_ms:.3f}, db;dur={ctx.db_ms:.3f}, total;dur={total:.3f}"
    )
    status = response.status_code
    service.metrics.observe(route, ctx.function, status, total / 1000)
    if service.settings.access_log:
        access_log.info(
            "%s",
            json.dumps(
                {
                    "ts": round(time.time(), 3),
                    "request_id": ctx.request_id,
                    "method": request.method,
                    "path": request.url.path,
                    "route": route,
                    "function": ctx.function,
                    "role": ctx.role,
                    "status": status,
                    "ms": round(total, 3),
                    "db_ms": round(ctx.db_ms, 3),
                    "cache": ctx.cache,
                    "error": ctx.error,
                },
                separators=(",", ":"),
            ),
        )
    return response


def error_response(service: Service, ctx: RequestContext, err: ApiError) -> Response:
    """The PostgREST error response; 503s counted by reason, every error by function,
    status, code and reason (ours in ``details``, the shim's in ``reason``)."""
    ctx.error = err.code
    if err.status == 503:
        service.metrics.unavailable.labels(err.reason or "other").inc()
    reason = err.reason if err.reason not in ("", "database") else err.details
    if reason and reason.startswith("request_id="):
        reason = "internal"
    service.metrics.error(ctx.function, err.status, err.code, reason)
    return Response(err.body(), status_code=err.status, media_type=JSON_TYPE, headers=err.headers)
