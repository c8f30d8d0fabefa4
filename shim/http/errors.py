"""PostgREST-shaped errors: the body ``{"code","message","details","hint"}`` and the
SQLSTATE -> HTTP status table of PostgREST's documentation (references/errors).

Messages of database errors reach the client only for classes a function raises on
purpose (``P0``, ``PT``, ``22``, ``23``) and a few codes that describe the request
(42501, 42883, 25006, 57014, 40001/40P01); anything else is an internal error: logged
with the request id, the client gets the id and a generic sentence, never SQL.

A constraint violation that PostgreSQL itself raised (class 23 with the constraint or
table named in its diagnostics) is a check a function failed to make, not a message it
chose: its text names tables, columns, constraints and key values. It keeps its status
and code (409 for 23503/23505, as PostgREST, so metrics count it), but its words are
logged under the request id, like an internal error's (issue #21).
"""

from __future__ import annotations

import json
import re

import psycopg

from shim.web.errors import ApiError

__all__ = [
    "ApiError",
    "from_database",
    "internal",
    "is_hidden",
    "is_public_sqlstate",
    "status_for_sqlstate",
    "unavailable",
]

# Exact codes first, then two-character classes, as PostgREST resolves them.
_EXACT = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
}
_CLASS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}
_PUBLIC_CLASSES = ("P0", "PT", "22", "23")
_PUBLIC_CODES = frozenset({"42501", "42883", "25006", "57014", "40001", "40P01"})


def status_for_sqlstate(sqlstate: str, anonymous: bool) -> int:
    """HTTP status PostgREST gives ``sqlstate``; 42501 is 401 for anon, 403 otherwise."""
    if sqlstate == "42501":
        return 401 if anonymous else 403
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    exact = _EXACT.get(sqlstate)
    if exact is not None:
        return exact
    return _CLASS.get(sqlstate[:2], 400)


def is_public_sqlstate(sqlstate: str) -> bool:
    """True when the database message may be shown to the client."""
    return sqlstate[:2] in _PUBLIC_CLASSES or sqlstate in _PUBLIC_CODES


def unavailable(code: str, message: str, retry_after: int, reason: str) -> ApiError:
    """503 with ``Retry-After``: no connection in time, or the database is unreachable."""
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after)}, reason=reason)


def internal(request_id: str) -> ApiError:
    """500 that names the request id and nothing else."""
    return ApiError(
        500,
        "PGRSTX00",
        "Internal server error",
        details=f"request_id={request_id}",
        hint="The server logged this error under the request id.",
    )


def is_hidden(err: ApiError) -> bool:
    """True when the client got the request id instead of the database's words (the
    caller logs the original)."""
    return (err.details or "").startswith("request_id=")


def _constraint_raised_by_postgres(diag: psycopg.errors.Diagnostic) -> bool:
    """A class-23 error PostgreSQL raised on a constraint (it names the constraint or
    table); a function's ``raise ... using errcode = '23505'`` names neither."""
    return bool(diag.constraint_name or diag.table_name or diag.column_name)


def from_database(
    exc: psycopg.Error, anonymous: bool, request_id: str, retry_after: int
) -> ApiError:
    """Translate a database error into the answer PostgREST would give."""
    diag = exc.diag
    sqlstate = diag.sqlstate or ""
    if not sqlstate or sqlstate.startswith("08"):
        return unavailable(
            "PGRST000", "Could not connect with the database", retry_after, "database_down"
        )
    if sqlstate == "PGRST":
        return _raised_pgrst(diag.message_primary, diag.message_detail, request_id)
    status = status_for_sqlstate(sqlstate, anonymous)
    deliberate = sqlstate.startswith("PT")  # a function chose this status and message
    if status == 503 and not deliberate:
        return unavailable(
            sqlstate, "The database is short of resources", retry_after, "database_busy"
        )
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = str(retry_after)
    if sqlstate.startswith("23") and _constraint_raised_by_postgres(diag):
        return ApiError(
            status,
            sqlstate,
            "The request conflicts with the stored data.",
            details=f"request_id={request_id}",
            hint="The server logged this error under the request id.",
            headers=headers,
        )
    if not is_public_sqlstate(sqlstate) or (
        status >= 500 and not deliberate and sqlstate not in _PUBLIC_CODES
    ):
        err = internal(request_id)
        err.status, err.code, err.headers = status, sqlstate, headers
        return err
    return ApiError(
        status,
        sqlstate,
        diag.message_primary or "",
        details=diag.message_detail or None,
        hint=diag.message_hint or None,
        headers=headers,
        reason="database",
    )


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


def _raised_pgrst(message: str | None, detail: str | None, request_id: str) -> ApiError:
    """PostgREST's ``RAISE SQLSTATE 'PGRST'``: ``message`` is the JSON body
    (code, message, details, hint), ``detail`` the JSON ``{"status", "headers"}`` of the
    response (e.g. 429 with ``Retry-After``). Anything unreadable is an internal error,
    as PostgREST answers PGRST121 rather than guess."""
    try:
        body = json.loads(message or "")
        meta = json.loads(detail or "")
        status = meta["status"]
        headers = meta.get("headers") or {}
        fields = [body.get(k) for k in ("code", "message", "details", "hint")]
        valid = (
            type(status) is int
            and 400 <= status <= 599
            and isinstance(headers, dict)
            and all(
                _HEADER_NAME.match(str(k)) and isinstance(v, str) and v.isprintable()
                for k, v in headers.items()
            )
            and all(f is None or isinstance(f, str) for f in fields)
            and isinstance(body.get("message"), str)
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        valid = False
    if not valid:
        return internal(request_id)
    code, text, details, hint = fields
    return ApiError(
        status,
        code or "PGRST",
        text,
        details=details,
        hint=hint,
        headers=dict(headers),
        reason="database",
    )
