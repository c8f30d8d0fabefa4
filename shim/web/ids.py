"""The webinar-id rule of every route that names a webinar in its path."""

from __future__ import annotations

from shim.web.errors import ApiError

MAX_DIGITS = 18  # a bigint, never overflowing: 18 digits fit below 2**63


def webinar_id(raw: str) -> int | None:
    """The webinar id of a path segment, or None: ASCII digits only (``str.isdigit`` also
    passes superscripts and other scripts' digits), 1 to 18 of them, above zero."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS:
        return None
    value = int(raw)
    return value if value > 0 else None


def invalid_webinar_id() -> ApiError:
    """400 for a path whose webinar id breaks the rule."""
    return ApiError(
        400, "22P02", "The webinar id must be a positive integer", details="invalid_webinar_id"
    )
