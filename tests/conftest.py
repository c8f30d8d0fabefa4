"""The repository's own tests: the eventlive pytest plugin, and the fixtures shared by the
HTTP and SQL folders (the plugin's clone plus the ``test_api`` schema, a counting proxy).

Installed (``pip install -e '.[test]'``) the plugin arrives through its ``pytest11``
entry point; registering it twice is an error, so it is named here only when the
entry point is absent (e.g. running the suite straight from a checkout).
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import psycopg
import pytest
from shim_support import TEST_SCHEMA_SQL, ShimDb, TcpProxy

_PLUGIN = "shim.testing.plugin"

pytest_plugins = (
    [] if any(ep.value == _PLUGIN for ep in entry_points(group="pytest11")) else [_PLUGIN]
)


@pytest.fixture
def shim_db(eventlive_db: Any) -> ShimDb:
    """The plugin's fresh clone plus ``test_api`` / ``test_api2``."""
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as conn:
        conn.execute(TEST_SCHEMA_SQL)
    return ShimDb(eventlive_db.dsn, eventlive_db.admin_dsn)


@pytest.fixture
def proxy(shim_db: ShimDb) -> Iterator[TcpProxy]:
    """A counting proxy in front of the test database."""
    p = TcpProxy(shim_db.dsn)
    yield p
    p.close()


@pytest.fixture
def anyio_backend() -> str:
    """In-process tests run on asyncio (the shim's loop in production)."""
    return "asyncio"
