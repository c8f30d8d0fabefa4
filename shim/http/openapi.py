"""OpenAPI 3.1 built from the catalog: one path per routable function of a schema, under
both prefixes the shim answers (``/rpc/{fn}`` and Supabase's ``/rest/v1/rpc/{fn}``), with
``servers`` relative to the document (``/``: wherever ``/openapi.json`` was read).

A function's 200 answer is described from its return type: a scalar by its SQL type, a
set as an array of it, and a ``json``/``jsonb`` result by the ``@returns`` line of its
``comment on function`` (beside ``@cache`` and ``@readers``), a shape written like the
comments' "Returns {...}" sentences, with types::

    @returns {id: bigint, seq: bigint, created_at: timestamptz, status: visible|held}

- ``{name: T, other?: T}``: an object; ``?`` after a name: the key may be absent (a
  tombstone, a staff-only field); every other key is always there. Objects stay open
  (a field added later does not break a generated client).
- ``[T]``: an array of T.
- ``T|null``: T or JSON null. Words that are not type names are the values of a string
  (``visible|held``).
- Types, by their SQL names: ``uuid``, ``text``, ``smallint``, ``integer``, ``bigint``,
  ``numeric``, ``boolean``, ``timestamptz``, ``date``, ``jsonb`` (any JSON).

Each described result is a named schema (``components.schemas``: ``ChatSendResult`` for
``chat_send``), so a generated client has a type per function with its fields named.
``tests/http/test_openapi.py`` validates the document, generates the types, and checks
every api function's real answers against its ``@returns`` with no extra key allowed.
"""

from __future__ import annotations

import re
from typing import Any

from shim.http.catalog import Arg, Catalog, Routine
from shim.http.settings import Settings

PREFIXES = ("/rpc", "/rest/v1/rpc")

_INT = {"smallint", "integer", "bigint"}
_NUMBER = {"numeric", "real", "double precision"}
_SCALARS: dict[str, dict[str, str]] = {
    "boolean": {"type": "boolean"},
    "uuid": {"type": "string", "format": "uuid"},
    "json": {},
    "jsonb": {},
    "timestamp with time zone": {"type": "string", "format": "date-time"},
    "timestamptz": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "text": {"type": "string"},
}
_ERRORS = {
    "400": "Malformed JSON, unknown or wrongly typed arguments, or a function's P0001",
    "401": "Invalid or expired token, or anon lacks the privilege",
    "403": "Not allowed for this role or user",
    "404": "Unknown function or object",
    "409": "Conflict (e.g. a superseded session)",
    "413": "Request body too large",
    "503": "No database connection available; retry after Retry-After",
}
_RETURNS_MARK = re.compile(r"^@returns\s+(.+)$", re.MULTILINE)
_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([{}\[\]:,|?]))")


def scalar(type_name: str) -> dict[str, Any]:
    """JSON Schema of a value of SQL type ``type_name`` as the shim sends it."""
    if type_name in _INT:
        return {"type": "integer", "format": "int64" if type_name == "bigint" else "int32"}
    if type_name in _NUMBER:
        return {"type": "number"}
    return dict(_SCALARS.get(type_name, {"type": "string"}))


def json_schema(arg: Arg) -> dict[str, Any]:
    """JSON Schema of one argument's declared Postgres type."""
    schema = {"type": "array", "items": scalar(arg.base)} if arg.is_array else scalar(arg.type)
    schema["description"] = arg.type
    return schema


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` admitting JSON null, at the top and for array elements: in a body, null
    is SQL NULL, which every argument and array element accepts (as with PostgREST; the
    function decides what it means)."""
    out = dict(schema)
    if "type" in out:
        out["type"] = [out["type"], "null"]
    if isinstance(out.get("items"), dict):
        out["items"] = nullable(out["items"])
    return out


class ShapeError(ValueError):
    """An ``@returns`` line that does not follow the notation (module doc)."""


def parse_shape(text: str) -> dict[str, Any]:
    """The JSON Schema of an ``@returns`` shape (module doc); ``ShapeError`` if malformed."""
    tokens: list[str] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ShapeError(f"unexpected {text[pos : pos + 10]!r} in @returns {text}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    parser = _Shape(tokens, text)
    schema = parser.value()
    if parser.i != len(tokens):
        raise ShapeError(f"unexpected {tokens[parser.i]!r} after the shape in @returns {text}")
    return schema


class _Shape:
    """Recursive descent over the tokens: value := alternatives of object | array | word."""

    def __init__(self, tokens: list[str], text: str) -> None:
        self.tokens, self.text, self.i = tokens, text, 0

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        tok = self._peek()
        if tok is None or (expected is not None and tok != expected):
            raise ShapeError(
                f"expected {expected or 'more'} at token {self.i} of @returns {self.text}"
            )
        self.i += 1
        return tok

    def value(self) -> dict[str, Any]:
        parts = [self._one()]
        while self._peek() == "|":
            self._take("|")
            parts.append(self._one())
        null = any(p == "null" for p in parts)
        rest = [p for p in parts if p != "null"]
        words = [p for p in rest if isinstance(p, str)]
        if words and len(words) != len(rest):
            raise ShapeError(f"values of a string mixed with other shapes in @returns {self.text}")
        if words:
            schema: dict[str, Any] = {"type": "string", "enum": words}
            if null:
                schema["enum"] = [*words, None]
                schema["type"] = ["string", "null"]
            return schema
        if len(rest) != 1:
            raise ShapeError(f"a union of shapes is not supported in @returns {self.text}")
        (only,) = rest
        assert isinstance(only, dict)
        return nullable_top(only) if null else only

    def _one(self) -> dict[str, Any] | str:
        tok = self._peek()
        if tok == "{":
            return self._object()
        if tok == "[":
            self._take("[")
            items = self.value()
            self._take("]")
            return {"type": "array", "items": items}
        word = self._take()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", word):
            raise ShapeError(f"unexpected {word!r} in @returns {self.text}")
        if word == "null":
            return "null"
        if word in _INT or word in _NUMBER or word in _SCALARS:
            return scalar(word)
        return word  # a value of a string (checked in ``value``)

    def _object(self) -> dict[str, Any]:
        self._take("{")
        properties: dict[str, Any] = {}
        required: list[str] = []
        while True:
            name = self._take()
            optional = self._peek() == "?"
            if optional:
                self._take("?")
            if self._peek() == ":":
                self._take(":")
                properties[name] = self.value()
            else:
                properties[name] = {}  # named, not typed: the comments' sentence form
            if not optional:
                required.append(name)
            if self._take() == "}":
                break
            if self.tokens[self.i - 1] != ",":
                raise ShapeError(f"expected , or }} in @returns {self.text}")
        return {"type": "object", "properties": properties, "required": required}


def nullable_top(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (at the top only)."""
    out = dict(schema)
    t = out.get("type")
    out["type"] = [*t, "null"] if isinstance(t, list) else ([t, "null"] if t else None)
    if out["type"] is None:
        return {}
    return out


def returns_shape(comment: str | None) -> str | None:
    """The text of a comment's ``@returns`` line, if any."""
    m = _RETURNS_MARK.search(comment or "")
    return m.group(1).strip() if m else None


def result_schema(r: Routine) -> dict[str, Any]:
    """JSON Schema of a routine's 200 answer: ``@returns`` for json/jsonb, else from the
    return type (a set: an array of it); ``{}`` (any JSON) when nothing says more."""
    shape = returns_shape(r.comment)
    if shape is not None:
        return parse_shape(shape)
    if r.returns_json:
        return {"type": "array"} if r.returns_set else {}
    known = r.return_type in _INT or r.return_type in _NUMBER or r.return_type in _SCALARS
    item = scalar(r.return_type) if known else {}
    return {"type": "array", "items": item} if r.returns_set else item


def component_name(r: Routine) -> str:
    """``chat_send`` → ``ChatSendResult``."""
    return "".join(part.capitalize() for part in r.name.split("_") if part) + "Result"


def _operation(r: Routine, method: str, prefix: str, result: dict[str, Any]) -> dict[str, Any]:
    first, _, rest = (r.comment or r.name).partition("\n")
    description = "\n".join(
        line for line in rest.splitlines() if not line.lstrip().startswith("@")
    ).strip()
    lead = "" if prefix == PREFIXES[0] else "rest_v1_"
    op: dict[str, Any] = {
        "operationId": f"{lead}{method}_{r.schema}_{r.name}",
        "summary": first.strip(),
        "tags": [r.schema],
        "responses": {
            ("204" if r.returns_void else "200"): {
                "description": "No content" if r.returns_void else f"Result ({r.return_type})",
                **({} if r.returns_void else {"content": {"application/json": {"schema": result}}}),
            },
            **{
                code: {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for code, text in _ERRORS.items()
            },
        },
    }
    if description:
        op["description"] = description
    required = [a.name for a in r.args if not a.has_default]
    if method == "post":
        op["requestBody"] = {
            "required": bool(required),
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {a.name: nullable(json_schema(a)) for a in r.args},
                        "required": required,
                    }
                }
            },
        }
    else:
        op["parameters"] = [
            {"name": a.name, "in": "query", "required": not a.has_default, "schema": _query(a)}
            for a in r.args
        ]
    return op


def _query(arg: Arg) -> dict[str, Any]:
    """A query parameter's schema: an array travels as one Postgres array literal."""
    if not arg.is_array:
        return json_schema(arg)
    return {
        "type": "string",
        "pattern": r"^\{.*\}$",
        "description": f"{arg.type} as a Postgres array literal, e.g. {{a,b}}",
    }


def document(catalog: Catalog, schema: str, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the routable functions of ``schema``."""
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {"Error": _ERROR}
    routines = sorted(catalog.schema_routines(schema), key=lambda r: r.name)
    for prefix in PREFIXES:
        for r in routines:
            result = _result(r, components)
            item = paths.setdefault(f"{prefix}/{r.name}", {})
            item["post"] = _operation(r, "post", prefix, result)
            if r.readonly:
                item["get"] = _operation(r, "get", prefix, result)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"eventlive-rpc ({schema})", "version": "0.1.0"},
        "servers": [
            {
                "url": "/",
                "description": "where this document was read; the functions answer under "
                "/rpc/{fn} (PostgREST) and /rest/v1/rpc/{fn} (Supabase clients) alike",
            }
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": components,
        },
        "security": [{"bearer": []}, {}],
    }


def _result(r: Routine, components: dict[str, Any]) -> dict[str, Any]:
    """The answer's schema, named in ``components`` when it says more than "any JSON"; an
    ``@returns`` that cannot be read is documented as such, never a broken document."""
    try:
        schema = result_schema(r)
    except ShapeError as exc:
        return {"description": f"@returns could not be read: {exc}"}
    if not schema:
        return schema
    name = component_name(r)
    components[name] = {"title": name, **schema}
    return {"$ref": f"#/components/schemas/{name}"}


_ERROR = {
    "type": "object",
    "required": ["code", "message", "details", "hint"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": ["string", "null"]},
        "hint": {"type": ["string", "null"]},
    },
}
