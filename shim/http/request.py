"""Reading a request: headers, the body (bounded in size and time), the schema profile,
the Prefer header. Nothing here touches the database or a pool connection."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from shim.http.errors import ApiError


def header(request: Request, name: bytes) -> str | None:
    """One request header (ASGI names are lower-case bytes); the scope's headers are turned
    into a dict once per request instead of Starlette's list scan on every lookup."""
    scope = request.scope
    headers: dict[bytes, bytes] | None = scope.get("eventlive.headers")
    if headers is None:
        headers = scope["eventlive.headers"] = dict(scope["headers"])
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def profile(request: Request, schemas: tuple[str, ...]) -> str:
    """The schema named by Accept-Profile (GET/HEAD) or Content-Profile (others); the
    first exposed schema when none is named."""
    name = b"accept-profile" if request.method in ("GET", "HEAD") else b"content-profile"
    wanted = header(request, name)
    if wanted is None:
        return schemas[0]
    if wanted not in schemas:
        raise ApiError(
            406,
            "PGRST106",
            f"The schema must be one of the following: {', '.join(schemas)}",
            details="unknown_profile",
        )
    return wanted


def require_json(request: Request) -> None:
    """A POST body is JSON: ``application/json`` (any parameters, e.g. charset) or a
    ``+json`` type; no Content-Type counts as JSON (curl without a body sends none).
    Anything else is 415 before the body is read or the database is touched — a form or
    plain text body would otherwise be parsed as what it is not."""
    declared = header(request, b"content-type")
    if declared is None or not declared.strip():
        return
    media = declared.partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise ApiError(
        415,
        "PGRST107",
        f"Content-Type not acceptable: {declared[:100]}",
        hint="Send the arguments as a JSON object with Content-Type: application/json.",
        details="unsupported_media_type",
    )


def prefers_minimal(request: Request) -> bool:
    """``Prefer: return=minimal``: the caller wants 204 without the function's value."""
    prefer = header(request, b"prefer")
    return prefer is not None and "return=minimal" in prefer


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes without reading it all, and
    with 408 when it has not all arrived within ``timeout`` seconds."""
    length = header(request, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        # A client that stalls mid-body would otherwise wait here forever: uvicorn has no
        # body timeout. No pool connection is held yet either way.
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            "PGRST408",
            f"The request body did not arrive within {timeout:g} s",
            details="body_timeout",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "PGRST413", f"Request body exceeds {limit} bytes", details="body_too_large"
    )
