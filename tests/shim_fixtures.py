"""Fixtures of the shim's tests; test modules load them with
``pytest_plugins = ["shim_fixtures"]`` (the root conftest belongs to the test kit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from shim_support import TEST_SCHEMA_SQL, ShimDb, TcpProxy


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
