"""Reading a request: headers, the schema profile and the Content-Type (the body:
``shim.web.body``; ``Prefer`` and ``If-None-Match``: ``shim.http.pipeline.Call``). Nothing here touches the database or a pool connection."""

from __future__ import annotations

from starlette.requests import Request

from shim.web.errors import ApiError


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
