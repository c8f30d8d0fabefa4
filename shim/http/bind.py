"""Arguments in: read the request's JSON object (or query string) of named arguments and
check it against the catalog, never touching the database.

``bind`` picks the overload, and refuses unknown or missing names and values of the wrong
JSON type for the declared Postgres type with a 400. Values become Postgres text input
(``shim.http.exchange.encode``); each ``$n`` is cast to its declared type in the statement,
so Postgres' input functions validate them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from shim.http.auth import canonical_uuid
from shim.http.catalog import Arg, Routine, int_range
from shim.http.errors import ApiError
from shim.http.exchange import encode

_INT = re.compile(r"-?\d{1,20}\Z", re.ASCII)  # ASCII: \d and int() read any script's digits
_NUM = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z", re.ASCII)
_TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
_NUMERIC_TYPES = frozenset({"numeric", "real", "double precision"})
_JSON_TYPES = frozenset({"json", "jsonb"})


def bad_request(code: str, message: str, details: str | None = None) -> ApiError:
    """A 400 for the client's own mistake (PostgREST body)."""
    return ApiError(400, code, message, details=details)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


class _DuplicateKeyError(ValueError):
    """An object names the same key twice."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _DuplicateKeyError
    return value


# Python's json reads NaN and +-Infinity, which JSON (and Postgres' jsonb) has not, and
# keeps the last of duplicated keys, where other parsers keep the first: both refused.
_DECODER = json.JSONDecoder(parse_constant=_not_json, object_pairs_hook=_object)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of named arguments; an empty body means no arguments."""
    if not raw.strip():
        return {}
    try:
        # An object in UTF-8, as every client sends, needs no detection (5,800 of the
        # 21,400 instructions a hot call's body took; callgrind); UTF-16 and -32 (a NUL
        # second byte) and a BOM go through the detection.
        utf8 = raw[:1] == b"{" and raw[1:2] != b"\x00"
        value = _DECODER.decode(raw.decode("utf-8" if utf8 else json.detect_encoding(raw)))
    except _DuplicateKeyError:
        raise bad_request(
            "PGRST102", "A JSON object in the body names the same key twice", "duplicate_key"
        ) from None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise bad_request("PGRST102", "Empty or invalid json", "malformed_json") from None
    if not isinstance(value, dict):
        raise bad_request(
            "PGRST102", "The request body must be a JSON object of named arguments", "not_an_object"
        )
    return value


def parse_query(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The query string's named arguments (GET); a name given twice is refused, since which
    value would count is parser trivia."""
    given: dict[str, Any] = {}
    for key, value in items:
        if key in given:
            raise bad_request("PGRST100", f"Argument {key} given twice", "duplicate_argument")
        given[key] = value
    return given


def _wrong_type(arg: Arg, detail: str = "wrong_type") -> ApiError:
    return bad_request(
        "22P02", f'Invalid value for argument "{arg.name}" of type {arg.type}', detail
    )


def _integer(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    bounds = int_range(type_name)
    assert bounds is not None
    if isinstance(value, str) and _INT.match(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(arg)
    if not bounds[0] <= value <= bounds[1]:
        raise bad_request(
            "22003",
            f'Value of argument "{arg.name}" is out of range for {type_name}',
            "out_of_range",
        )
    return value


def _uuid(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if not isinstance(value, str):
        raise _wrong_type(arg)
    if canonical_uuid(value):  # the usual form, without uuid.UUID's cost
        return value
    try:
        uuid.UUID(value)
    except ValueError:
        raise _wrong_type(arg) from None
    return value


def _boolean(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if from_query and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise _wrong_type(arg)
    return value


def _number(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if isinstance(value, str) and _NUM.match(value):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _wrong_type(arg)
    return value


def _text(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if not isinstance(value, str):
        raise _wrong_type(arg)
    return value


def _other(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    # Dates, enums, domains...: Postgres parses the text; 22xxx there is a 400 too.
    if isinstance(value, (dict, list)):
        raise _wrong_type(arg)
    return value if isinstance(value, str) else json.dumps(value)


_Checker = Callable[[Arg, str, Any, bool], Any]
_CHECKS: dict[str, _Checker] = {
    "smallint": _integer,
    "integer": _integer,
    "bigint": _integer,
    "uuid": _uuid,
    "boolean": _boolean,
    **dict.fromkeys(_NUMERIC_TYPES, _number),
    **dict.fromkeys(_TEXT_TYPES, _text),
}


def _scalar(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    """Check one value against ``type_name``; return what psycopg should send."""
    if value is None:
        return None
    return _CHECKS.get(type_name, _other)(arg, type_name, value, from_query)


def _value(arg: Arg, value: Any, from_query: bool) -> Any:
    if arg.type in _JSON_TYPES:
        if from_query:
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                raise _wrong_type(arg) from None
            return value
        try:
            return json.dumps(value)
        except RecursionError:
            raise _wrong_type(arg) from None
    if arg.is_array and value is not None:
        if from_query and isinstance(value, str):
            return value  # a Postgres array literal, {a,b}; Postgres validates it
        if not isinstance(value, list):
            raise _wrong_type(arg)
        return [_scalar(arg, arg.base, v, False) for v in value]
    return _scalar(arg, arg.type, value, from_query)


def bind(
    candidates: list[Routine], given: dict[str, Any], from_query: bool = False
) -> tuple[Routine, bytes, list[bytes | None]]:
    """Pick the overload whose names fit ``given``; return it, its statement and values."""
    names = set(given)
    fits = [r for r in candidates if names <= r.by_name.keys() and r.required <= names]
    if len(fits) > 1:
        raise ApiError(300, "PGRST203", "Could not choose the best candidate function")
    if not fits:
        routine = candidates[0]
        known = routine.by_name
        unknown = sorted(names - known.keys())
        if unknown:
            raise bad_request(
                "PGRST102",
                f"Unknown argument(s) for {routine.name}: {', '.join(unknown)}",
                "unknown_argument",
            )
        missing = [a.name for a in routine.args if not a.has_default and a.name not in names]
        raise bad_request(
            "PGRST102",
            f"Missing argument(s) for {routine.name}: {', '.join(missing)}",
            "missing_argument",
        )
    routine = fits[0]
    ordered = tuple(a.name for a in routine.args if a.name in names)
    by_name = routine.by_name
    try:
        values = [encode(_value(by_name[n], given[n], from_query)) for n in ordered]
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows the escape "\ud800"): no UTF-8 text can carry it.
        raise bad_request("22021", "Text values must be valid Unicode", "invalid_unicode") from None
    if any(v is not None and b"\x00" in v for v in values):
        # libpq sends text parameters as C strings: a NUL would silently cut the value.
        raise bad_request("22021", "Text values may not contain NUL characters", "nul_character")
    return routine, routine.statement(ordered), values
