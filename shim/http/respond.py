"""The end of every request, written once for both entrances (``shim.http.lean`` and the
Starlette routes): the request id (``request_id``), an error as its PostgREST body
(``failed``), and ``finish``: Server-Timing, the metrics and one access line.
``respond`` wraps the routes that are not function calls (``/ready``, ``/openapi.json``,
the status page) in the same steps."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from shim.http import errors
from shim.http.accesslog import AccessLog
from shim.http.errors import ApiError
from shim.http.metrics import Metrics
from shim.web.errors import JSON_TYPE

log = logging.getLogger("eventlive.shim")
MAX_REQUEST_ID = 64

__all__ = [
    "JSON_TYPE",
    "Accounts",
    "RequestContext",
    "failed",
    "finish",
    "new_request_id",
    "request_id",
    "respond",
]


# 64 bits of the random module's generator per id (seeded from os.urandom, and again in
# every forked child): an id is a label, not a secret, and workers' ids collide no more
# often than with os.urandom. Measured (timeit, this box): 0.10 us a fresh id against
# 0.45 us for os.urandom(8).hex(), a getrandom system call per request, and 1.0 us for
# a prefix and a counter.
_random_bits = random.getrandbits


def request_id(incoming: bytes | None) -> str:
    """The caller's ``X-Request-Id`` when it is 1-64 printable ASCII characters (it is
    echoed in a header and logged), else a fresh one (16 hex characters)."""
    if incoming is not None and 0 < len(incoming) <= MAX_REQUEST_ID and incoming.isascii():
        text = incoming.decode("ascii")
        if text.isprintable():
            return text
    return _random_bits(64).to_bytes(8).hex()


def new_request_id() -> str:
    """A fresh request id."""
    return request_id(None)


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


class Accounts(Protocol):
    """Where a request is accounted for (the ``Service``)."""

    metrics: Metrics
    access_log: AccessLog | None


def failed(accounts: Accounts, ctx: RequestContext, err: ApiError) -> ApiError:
    """Count ``err`` (503s by reason; every error by function, status, code and reason:
    ours in ``details``, the shim's in ``reason``) and return it to be answered."""
    ctx.error = err.code
    if err.status == 503:
        accounts.metrics.unavailable.labels(err.reason or "other").inc()
    reason = err.reason if err.reason not in ("", "database") else err.details
    if reason and reason.startswith("request_id="):
        reason = "internal"
    accounts.metrics.error(ctx.function, err.status, err.code, reason)
    return err


def unexpected(accounts: Accounts, ctx: RequestContext) -> ApiError:
    """An exception nobody foresaw (the caller logged it): answered as a bare 500 that
    names the request id."""
    return failed(accounts, ctx, errors.internal(ctx.request_id))


def finish(
    accounts: Accounts, ctx: RequestContext, scope: Mapping[str, Any], route: str, status: int
) -> list[tuple[bytes, bytes]]:
    """Account for the request (metrics, access line) and return the headers every answer
    carries: the request id and Server-Timing."""
    total = (time.perf_counter() - ctx.started) * 1000
    accounts.metrics.observe(route, ctx.function, status, total / 1000)
    if accounts.access_log is not None:
        accounts.access_log.add(
            (
                time.time(),
                ctx.request_id,
                scope["method"],
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
    timing = b"auth;dur=%.3f, db;dur=%.3f, total;dur=%.3f" % (ctx.auth_ms, ctx.db_ms, total)
    return [(b"x-request-id", ctx.request_id.encode("ascii")), (b"server-timing", timing)]


Work = Callable[[RequestContext], Awaitable[Response]]


async def respond(accounts: Accounts, request: Request, route: str, work: Work) -> Response:
    """Run ``work`` and turn every outcome into a response with timing, metrics, log."""
    scope = request.scope
    ctx = RequestContext(request_id(dict(scope["headers"]).get(b"x-request-id")))
    try:
        response = await work(ctx)
    except ApiError as err:
        response = failed(accounts, ctx, err).response()
    except Exception:
        log.exception("request %s: internal error", ctx.request_id)
        response = unexpected(accounts, ctx).response()
    for name, value in finish(accounts, ctx, scope, route, response.status_code):
        response.headers[name.decode()] = value.decode("latin-1")
    return response
