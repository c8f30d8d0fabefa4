"""The PostgREST-shaped error every route answers with: ``{"code","message","details","hint"}``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class ApiError(Exception):
    """An error answered to the client as a PostgREST body; ``reason`` is the metric
    label for 503s and rejected tokens (the function's own reason travels in ``details``)."""

    status: int
    code: str
    message: str
    details: str | None = None
    hint: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    def body(self) -> bytes:
        """The JSON body, key order as PostgREST writes it."""
        return json.dumps(
            {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}
        ).encode()

    def response(self) -> Response:
        """The error as a Starlette response (body, status, headers)."""
        return Response(
            self.body(), status_code=self.status, media_type=JSON_TYPE, headers=self.headers
        )
