"""Faults: the shim under a restarted, frozen or exhausted database, a stalled client and
its own SIGKILL — ``python -m bench.faults [--quick] [--only restart,freeze,...]``.

Each scenario runs real processes on loopback: a throwaway PostgreSQL
(``shim.pg.throwaway.TemporaryServer``, migrated), the shim as ``eventlive serve`` in its own
process group, and viewers that call ``POST /api/webinars/{id}/access/track`` for a
webinar with ``entry = auto`` (each viewer is new, so each 2xx means "registered").
Viewers behave like the front end should: a 2xx ends them; a 503 is retried after
``Retry-After``, a refused or dropped connection after a short pause; a 4xx is final.

Counted per scenario: attempts by outcome (HTTP status, or ``refused`` / ``dropped`` /
``timeout`` when no answer came), viewers acknowledged (got a 2xx) against registrations
stored (read from the database afterwards) — ``lost`` is acknowledged but not stored and
must be 0 — the slowest error answer, and the recovery time (end of the fault to the
first 2xx). ``tests/bench/test_faults.py`` runs the quick forms of the same scenarios.
"""

from bench.faults.harness import Database
from bench.faults.results import FaultResult
from bench.faults.scenarios import (
    pool_exhausted,
    postgres_frozen,
    postgres_restart,
    shim_killed,
    stalled_clients,
)

__all__ = [
    "Database",
    "FaultResult",
    "pool_exhausted",
    "postgres_frozen",
    "postgres_restart",
    "shim_killed",
    "stalled_clients",
]
