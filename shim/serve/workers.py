"""How many processes ``eventlive serve`` runs (``--workers``), and what they must share.

``--workers auto`` is one worker per core this process may run on; docs/deployment.md
gives the figures behind the default and what a larger host should run.
"""

from __future__ import annotations

import argparse
import os
import secrets

# Drawn at random by each worker when unset; one draw per server instead (see below).
SHARED_PER_SERVER = ("EVENTLIVE_REALTIME_TICKET_SECRET",)


DEFAULT = "auto"


def count(text: str) -> int:
    """``--workers``: a positive number, or ``auto``: one per core this process may run on
    (its CPU affinity, e.g. a container's cpuset), as docs/deployment.md recommends for a
    shim host; argparse applies it to the default too."""
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, not {n}")
    return n


def share_secrets(workers: int, environ: dict[str, str] | os._Environ[str]) -> None:
    """A secret each worker would otherwise draw at random is drawn once here, for all of
    this server's workers (they read the environment): an SSE ticket signed by one worker
    is then accepted by the others. A value already set (several nodes) is kept."""
    for name in SHARED_PER_SERVER:
        if workers > 1 and not environ.get(name):
            environ[name] = secrets.token_hex(32)
