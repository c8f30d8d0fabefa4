"""A request body bounded in size and in time: 413 past the limit (never read whole
first), 408 when it has not all arrived in time. No pool connection is held meanwhile."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from shim.web.errors import ApiError


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes without reading it all, and
    with 408 when it has not all arrived within ``timeout`` seconds."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        # A client that stalls mid-body would otherwise wait here forever: uvicorn has no
        # body timeout.
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise body_timeout(timeout) from None
    return b"".join(chunks)


def body_timeout(timeout: float) -> ApiError:
    """408: the body did not all arrive within ``timeout`` seconds."""
    return ApiError(
        408,
        "PGRST408",
        f"The request body did not arrive within {timeout:g} s",
        details="body_timeout",
        headers={"Connection": "close"},
    )


def too_large(limit: int) -> ApiError:
    """413: the body passed ``limit`` bytes."""
    return ApiError(
        413, "PGRST413", f"Request body exceeds {limit} bytes", details="body_too_large"
    )
