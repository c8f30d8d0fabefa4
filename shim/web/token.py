"""The credential of a request: ``Authorization: Bearer <token>``, else the ``apikey``
header (Supabase clients send both); None when there is neither (role ``anon``)."""

from __future__ import annotations

from collections.abc import Mapping

from shim.web.errors import ApiError


def rejected(reason: str, description: str) -> ApiError:
    """The 401 PostgREST gives an invalid token, with RFC 6750's header."""
    safe = description.replace('"', "'")
    return ApiError(
        401,
        "PGRST301",
        description,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{safe}"'},
        reason=reason,
    )


def bearer(headers: Mapping[bytes, bytes]) -> str | None:
    """The token of a request whose ASGI headers are ``headers``; a malformed
    Authorization header is refused (401 ``malformed``), never taken for no token."""
    authorization = headers.get(b"authorization")
    if authorization is not None and authorization[:7] == b"Bearer ":  # the usual form
        raw = authorization[7:].strip()
        if raw:
            return raw.decode("latin-1")
    if authorization is not None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise rejected("malformed", "Authorization must be 'Bearer <token>'")
        return token.strip()
    apikey = headers.get(b"apikey")
    return apikey.decode("latin-1") if apikey is not None else None
