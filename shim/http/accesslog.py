"""The access log off the request's critical path: a request appends one tuple to a list;
a background task turns the list into JSON lines every ``INTERVAL`` seconds and hands
them to the ``eventlive.access`` logger as one record (the lines joined by newlines, so
the output is still one JSON object per line), and the rest at shutdown (``flush``).

Measured (100,000 lines, CPU time), two designs compared: a line written on the
request's own path (json.dumps 9 us + one ``logging.info`` per line 27 us = ~56 us per
request) against this drain (0.7 us on the request for the append + ~2 us in the drain:
the line formatted directly, 1.9 us, against 7.0 us for ``json.JSONEncoder`` on a dict
per line; plus 0.3 us of logging per line, one record per drain).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

access_log = logging.getLogger("eventlive.access")

INTERVAL = 0.2
_FIELDS = (
    "ts",
    "request_id",
    "method",
    "path",
    "route",
    "function",
    "role",
    "status",
    "ms",
    "db_ms",
    "cache",
    "error",
)


# One line, formatted directly (see the module doc: 3.7x cheaper than a dict encoded
# per line, which made the drain 8 % of the shim's samples under closed-loop pings).
_LINE = (
    '{"ts":%.3f,"request_id":%s,"method":%s,"path":%s,"route":%s,"function":%s,"role":%s,'
    '"status":%d,"ms":%.3f,"db_ms":%.3f,"cache":%s,"error":%s}'
)
_encode_str = json.encoder.encode_basestring_ascii


def _quote(value: str | None) -> str:
    """A JSON string (escaped, ASCII) or null."""
    return "null" if value is None else _encode_str(value)


class AccessLog:
    """Pending access lines, written by ``run`` (a task) or ``flush``."""

    def __init__(self) -> None:
        self._pending: list[tuple[Any, ...]] = []

    def add(self, line: tuple[Any, ...]) -> None:
        """One request's fields, in ``_FIELDS`` order (ts from ``time.time()``)."""
        self._pending.append(line)

    def flush(self) -> None:
        """Write every pending line now."""
        pending, self._pending = self._pending, []
        if not pending or not access_log.isEnabledFor(logging.INFO):
            return
        q = _quote
        lines = [
            _LINE % (ts, q(rid), q(method), q(path), q(route), q(fn), q(role), status, ms, db_ms,
                     q(cache), q(error))
            for ts, rid, method, path, route, fn, role, status, ms, db_ms, cache, error in pending
        ]  # fmt: skip
        access_log.info("%s", "\n".join(lines))

    async def run(self) -> None:
        """Drain every ``INTERVAL`` seconds until cancelled."""
        while True:
            await asyncio.sleep(INTERVAL)
            self.flush()


def now() -> float:
    """Wall-clock seconds for the ``ts`` field."""
    return time.time()
