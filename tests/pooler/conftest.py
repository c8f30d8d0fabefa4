"""The pooler group: existing tests of tests/http and tests/realtime run again with the
shim's pool going through PgBouncer in transaction mode (``eventlive_pgbouncer``, the
plugin's fixture; it skips when the binary is absent, and ``.ci/run`` installs it).

``eventlive_db`` is the plugin's clone with ``.dsn`` (the shim's ``DATABASE_URL``, as
``authenticator``) through PgBouncer; ``admin_dsn`` and ``migrator_dsn`` stay direct (a
test's own setup, and migrations, never go through a transaction pooler). The settings
every reused test builds with ``shim_support.settings_for`` get ``listen_url`` = the
clone's direct DSN: the deployment docs/deployment.md describes (pool through the pooler,
LISTEN direct). ``direct_dsn`` is that DSN, for the tests of this folder.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shim_support

from shim.http.settings import Settings

TESTS = Path(__file__).resolve().parent.parent
for folder in ("http", "realtime"):  # the modules whose tests this folder runs again
    if str(TESTS / folder) not in sys.path:
        sys.path.insert(0, str(TESTS / folder))

from live_support import Live, start_live  # noqa: E402


@pytest.fixture
def direct_dsn(eventlive_db: Any) -> str:
    """The clone as ``authenticator``, straight to the server (not through PgBouncer)."""
    return str(eventlive_db.direct_dsn)


@dataclasses.dataclass(frozen=True)
class PooledDatabase:
    """The plugin's ``EventliveDatabase`` with ``dsn`` through PgBouncer."""

    name: str
    admin_dsn: str
    dsn: str
    direct_dsn: str
    clone_seconds: float
    migrator_dsn: str


@pytest.fixture
def eventlive_db(
    eventlive_db: Any, eventlive_pgbouncer: Any, monkeypatch: pytest.MonkeyPatch
) -> PooledDatabase:
    """The clone, its shim DSN through PgBouncer (module doc)."""
    pooled = PooledDatabase(
        name=eventlive_db.name,
        admin_dsn=eventlive_db.admin_dsn,
        dsn=eventlive_pgbouncer.dsn(eventlive_db.dsn),
        direct_dsn=eventlive_db.dsn,
        clone_seconds=eventlive_db.clone_seconds,
        migrator_dsn=eventlive_db.migrator_dsn,
    )
    # settings_for() builds ``Settings(...)`` from its module's global: LISTEN goes direct.
    monkeypatch.setattr(
        shim_support, "Settings", functools.partial(Settings, listen_url=eventlive_db.dsn)
    )
    return pooled


@pytest.fixture
def live(eventlive_db: PooledDatabase) -> Iterator[Live]:
    """The shim with its realtime hub, pool through PgBouncer (tests/realtime's fixture)."""
    yield from start_live(eventlive_db)
