"""``eventlive serve``: uvicorn with the shim app.

With ``DATABASE_URL`` the app logs in there (it must be the ``authenticator`` role).
Without it the embedded PostgreSQL is started and migrated (``shim.pg.embedded``), a demo
webinar and a development token are made and printed with curl lines (``shim.http.demo``),
and the app logs in to it as ``authenticator``. Each worker reads its settings from the
environment (``shim.http.app.app_from_env``), so what is decided here is put there.
"""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG


def _log_config() -> dict[str, Any]:
    """uvicorn's logging plus the shim's loggers: JSON access lines on stdout as they are."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plain"] = {"format": "%(message)s"}
    config["handlers"]["plain"] = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["eventlive"] = {"handlers": ["plain"], "level": "INFO", "propagate": False}
    return config


def run(host: str, port: int, workers: int) -> None:
    """Serve until interrupted (blocking). Each worker reads ``DATABASE_URL`` and the rest
    of its settings from the environment."""
    uvicorn.run(
        "shim.http.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the shim writes one JSON line per request itself
        log_config=_log_config(),
        lifespan="on",
        # The realtime hub writes one frame to thousands of sockets: per-connection
        # deflate would cost CPU per subscriber.
        ws_per_message_deflate=False,
    )
