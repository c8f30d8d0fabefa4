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


SLOW = "slow"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        help="also run the tests marked slow (bench smoke runs, fault drills); .ci/run does",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SLOW}: a bench smoke run or fault drill (seconds to minutes); left out unless --slow is given",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the default run under ten minutes: the bench smoke runs only with --slow."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker(SLOW)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker(SLOW)]


@pytest.fixture
def shim_db(eventlive_db: Any) -> ShimDb:
    """The plugin's fresh clone plus ``test_api`` / ``test_api2``, created by the role
    migrations ran as (its default privileges: no execute for PUBLIC)."""
    with psycopg.connect(eventlive_db.migrator_dsn, autocommit=True) as conn:
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
