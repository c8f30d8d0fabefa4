"""OpenAPI 3.1 built from the catalog: one path per routable function of a schema."""

from __future__ import annotations

from typing import Any

from shim.http.catalog import Arg, Catalog, Routine
from shim.http.settings import Settings

_INT = {"smallint", "integer", "bigint"}
_NUMBER = {"numeric", "real", "double precision"}
_SCALARS: dict[str, dict[str, str]] = {
    "boolean": {"type": "boolean"},
    "uuid": {"type": "string", "format": "uuid"},
    "json": {},
    "jsonb": {},
    "timestamp with time zone": {"type": "string", "format": "date-time"},
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


def json_schema(arg: Arg) -> dict[str, Any]:
    """JSON Schema of one argument's declared Postgres type."""

    def scalar(t: str) -> dict[str, Any]:
        if t in _INT:
            return {"type": "integer", "format": "int64" if t == "bigint" else "int32"}
        if t in _NUMBER:
            return {"type": "number"}
        return dict(_SCALARS.get(t, {"type": "string"}))

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


def _operation(r: Routine, method: str) -> dict[str, Any]:
    summary, _, description = (r.comment or r.name).partition("\n")
    op: dict[str, Any] = {
        "operationId": f"{method}_{r.schema}_{r.name}",
        "summary": summary.strip(),
        "tags": [r.schema],
        "responses": {
            ("204" if r.returns_void else "200"): {
                "description": "No content" if r.returns_void else f"Result ({r.return_type})",
                **(
                    {}
                    if r.returns_void
                    else {
                        "content": {
                            "application/json": {
                                "schema": ({"type": "array"} if r.returns_set else {})
                            }
                        }
                    }
                ),
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
    if description.strip():
        op["description"] = description.strip()
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
    for r in sorted(catalog.schema_routines(schema), key=lambda r: r.name):
        item = paths.setdefault(f"/rpc/{r.name}", {})
        item["post"] = _operation(r, "post")
        if r.readonly:
            item["get"] = _operation(r, "get")
    return {
        "openapi": "3.1.0",
        "info": {"title": f"eventlive-rpc ({schema})", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message", "details", "hint"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": ["string", "null"]},
                        "hint": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "security": [{"bearer": []}, {}],
    }
