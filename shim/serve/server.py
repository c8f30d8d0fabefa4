"""``eventlive serve``: uvicorn with the shim app (``shim.serve.app.app_from_env``).

The app logs in with ``DATABASE_URL`` (it must be the ``authenticator`` role); without
one, ``eventlive serve`` (``shim.cli``) first starts the embedded PostgreSQL and puts its
URL there. Each worker reads its settings from the environment. Connections stalled in
their request headers are closed (``shim.serve.header_timeout``). With ``--workers N``
(N > 1) the workers share a private metrics directory, so that ``/metrics`` of any of
them is the node's (``shim.http.metrics``).
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from shim import realtime
from shim.http.metrics import MULTIPROC_ENV
from shim.http.settings import Settings, SettingsError
from shim.serve.header_timeout import HeaderTimeoutProtocol


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
    of its settings from the environment.

    The settings are read here first, once, so that a value no worker could read stops
    the server before it starts: ``error: EVENTLIVE_X=...`` on stderr and exit 2 (else
    each worker would die with a traceback, and the supervisor exit 0)."""
    try:
        Settings.from_env()
        realtime.HubSettings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    # Several workers: one scrape of any of them answers for the node (prometheus-client's
    # multiprocess mode over a private directory, removed at exit; shim.http.metrics).
    # An operator's own PROMETHEUS_MULTIPROC_DIR is used as it is and left in place.
    own = workers > 1 and not os.environ.get(MULTIPROC_ENV)
    if own:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="eventlive-metrics-")
    try:
        _serve(host, port, workers)
    finally:
        if own:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)


def _serve(host: str, port: int, workers: int) -> None:
    uvicorn.run(
        "shim.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the shim writes one JSON line per request itself
        # The shim never reads the client's address or scheme: no X-Forwarded-* rewrite
        # per request (uvicorn's proxy-headers middleware, 1 % of the CPU per ping).
        proxy_headers=False,
        log_config=_log_config(),
        lifespan="on",
        http=HeaderTimeoutProtocol,  # closes connections stalled in their headers
        # The realtime hub writes one frame to thousands of sockets: per-connection
        # deflate would cost CPU per subscriber.
        ws_per_message_deflate=False,
    )
