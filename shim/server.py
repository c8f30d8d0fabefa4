"""``eventlive serve``: uvicorn with the shim app.

With ``DATABASE_URL`` the app logs in there (it must be the ``authenticator`` role).
Without it the embedded PostgreSQL is started and migrated (``shim.embedded``), a demo
webinar and a development token are made and printed with curl lines (``shim.demo``),
and the app logs in to it as ``authenticator``. Each worker reads its settings from the
environment (``shim.app.app_from_env``), so what is decided here is put there.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import uvicorn
from psycopg.conninfo import make_conninfo
from uvicorn.config import LOGGING_CONFIG

from shim import demo
from shim.header_timeout import HeaderTimeoutProtocol


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


def _embedded_default(host: str, port: int) -> None:
    from shim import embedded  # noqa: PLC0415 - only without DATABASE_URL

    admin_dsn = embedded.ensure_running(migrate=True)
    secret_path = embedded.DEFAULT_DATA_DIR.absolute().parent / "dev-jwt-secret"
    secret = os.environ.get("JWT_SECRET") or demo.dev_secret(secret_path)
    walkthrough = demo.prepare(admin_dsn, secret)
    os.environ["DATABASE_URL"] = make_conninfo(admin_dsn, user="authenticator")
    os.environ["JWT_SECRET"] = secret
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a comparison
    print(demo.instructions(f"http://{shown}:{port}", walkthrough, secret_path), flush=True)


def run(host: str, port: int, workers: int) -> None:
    """Serve until interrupted (blocking)."""
    if not os.environ.get("DATABASE_URL"):
        _embedded_default(host, port)
    uvicorn.run(
        "shim.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the shim writes one JSON line per request itself
        log_config=_log_config(),
        lifespan="on",
        http=HeaderTimeoutProtocol,  # closes connections stalled in their headers
    )
