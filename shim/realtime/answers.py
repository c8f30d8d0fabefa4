"""HTTP answers shared by the realtime routes: PostgREST-shaped errors, the bearer token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def error(status: int, code: str, message: str, details: str | None = None) -> Response:
    """A PostgREST-shaped error body (``code``, ``message``, ``details``, ``hint``)."""
    body = {"code": code, "message": message, "details": details, "hint": None}
    return JSONResponse(body, status_code=status)


def bearer(request: Request) -> str | None:
    """The token of a request: Authorization bearer, else ``apikey`` (Supabase clients)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("apikey") or None


class RefusedError(Exception):
    """Raised by a route's steps to answer with ``response`` (an error) at once."""

    def __init__(self, status: int, code: str, message: str, details: str) -> None:
        super().__init__(message)
        self.response = error(status, code, message, details)


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (never
    read whole into memory first)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RefusedError(413, "PGRST413", "Payload too large", "payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)
