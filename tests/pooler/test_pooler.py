"""Behind a transaction pooler (PgBouncer, transaction mode): the shim tells one from a
direct connection (``shim.http.database.transaction_pooled``), prepares no statement
there (nor anywhere with ``EVENTLIVE_PREPARE=0``), and says at start-up when its LISTEN
would go through the pooler (``EVENTLIVE_LISTEN_URL`` unset)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import SECRET, ShimDb, TcpProxy, bearer, serve, settings_for, token

from shim.http.database import transaction_pooled
from shim.http.settings import Settings
from shim.serve.app import LISTEN_POOLED, LOST_NOTIFICATIONS
from shim.testing.pgbouncer import PgBouncer
from shim.testing.process import ShimProcess

pytestmark = pytest.mark.anyio
AUTH = bearer(token())
# Statements prepared in the calling session: the settings statement is one when
# statements are prepared (shim.http.exchange), none when they are not.
PREPARED_SQL = """
create function test_api.prepared() returns bigint language sql volatile
as $$ select count(*) from pg_catalog.pg_prepared_statements $$;
grant execute on function test_api.prepared() to authenticated;
"""


def _prepared_fn(shim_db: ShimDb) -> None:
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(PREPARED_SQL)
        conn.execute("notify eventlive_reload")


async def test_the_probe_tells_a_transaction_pooler_from_every_direct_connection(
    eventlive_db: Any, eventlive_server: Any
) -> None:
    assert await transaction_pooled(eventlive_db.dsn) is True  # PgBouncer, transaction mode
    assert await transaction_pooled(eventlive_db.direct_dsn) is False
    proxy = TcpProxy(eventlive_db.direct_dsn)  # a plain TCP hop: one session per client
    try:
        assert await transaction_pooled(proxy.dsn) is False
    finally:
        proxy.close()
    users = {eventlive_server.user: eventlive_server.password, "authenticator": None}
    with PgBouncer(eventlive_server.host, eventlive_server.port, users, mode="session") as b:
        assert await transaction_pooled(b.dsn(eventlive_db.direct_dsn)) is False
    assert await transaction_pooled("host=127.0.0.1 port=1 dbname=x connect_timeout=1") is None


async def test_behind_the_pooler_no_statement_is_prepared_and_calls_keep_working(
    shim_db: ShimDb, eventlive_db: Any
) -> None:
    _prepared_fn(shim_db)
    async with serve(settings_for(shim_db.dsn)) as client:
        database = client._transport.app.state.service.database  # type: ignore[attr-defined]
        assert (database.pooled, database.prepare) == (True, False)
        # More calls than psycopg's auto-prepare threshold (5), concurrently, so PgBouncer
        # hands them different server connections: a prepared name would be missing there.
        for _ in range(4):
            answers = await asyncio.gather(
                *(client.post("/rpc/prepared", headers=AUTH) for _ in range(8))
            )
            assert {r.status_code for r in answers} == {200}, answers[0].text
            assert {r.json() for r in answers} == {0}


@pytest.mark.parametrize(("prepare", "prepared"), [("1", True), ("0", False)])
async def test_direct_statements_are_prepared_unless_eventlive_prepare_is_0(
    shim_db: ShimDb, eventlive_db: Any, prepare: str, prepared: bool
) -> None:
    _prepared_fn(shim_db)
    setting = Settings.from_env({"EVENTLIVE_PREPARE": prepare}).prepare
    async with serve(settings_for(eventlive_db.direct_dsn, prepare=setting)) as client:
        database = client._transport.app.state.service.database  # type: ignore[attr-defined]
        assert (database.pooled, database.prepare) == (False, prepared)
        r = await client.post("/rpc/prepared", headers=AUTH)
        assert r.status_code == 200, r.text
        assert (r.json() > 0) is prepared


async def test_listen_through_the_pooler_is_said_at_start(
    shim_db: ShimDb, eventlive_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventlive.shim")
    warned = lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]  # noqa: E731
    # the pool through PgBouncer, LISTEN too: the warning
    async with serve(settings_for(shim_db.dsn, listen_url=None)):
        assert warned() == [LOST_NOTIFICATIONS]
    caplog.clear()
    # the pool through PgBouncer, LISTEN direct (EVENTLIVE_LISTEN_URL): nothing to say
    async with serve(settings_for(shim_db.dsn, listen_url=eventlive_db.direct_dsn)):
        assert warned() == []
    # direct, LISTEN named through PgBouncer: said too
    async with serve(settings_for(eventlive_db.direct_dsn, listen_url=shim_db.dsn)):
        assert warned() == [LISTEN_POOLED]
    caplog.clear()
    async with serve(settings_for(eventlive_db.direct_dsn, listen_url=None)):
        assert warned() == []


def test_eventlive_serve_prints_the_warning_line_unless_listen_has_its_own_url(
    shim_db: ShimDb, eventlive_db: Any
) -> None:
    env = {
        "DATABASE_URL": shim_db.dsn,
        "JWT_SECRET": SECRET,
        "EVENTLIVE_SCHEMAS": "test_api",
        "EVENTLIVE_POOL_MIN": "1",
        "EVENTLIVE_HOUSEKEEPING_INTERVAL": "0",
    }
    for listen, expected in ((None, True), (eventlive_db.direct_dsn, False)):
        extra = {"EVENTLIVE_LISTEN_URL": listen} if listen else {}
        shim = ShimProcess({**env, **extra})
        try:
            shim.start(timeout=30)
            assert httpx.post(f"{shim.base}/rpc/whoami", headers=AUTH).status_code == 200
        finally:
            shim.stop()
            log = shim.log.read_text()
            shim.close()
        assert (LOST_NOTIFICATIONS in log) is expected, log
