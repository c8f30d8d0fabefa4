"""The catalog: which functions are routable, what is read about them, and reloads on
NOTIFY eventlive_reload and SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal

import psycopg
import pytest
from shim_support import ShimDb, serve, settings_for

from shim.http.catalog import load

pytestmark = pytest.mark.anyio


async def test_only_functions_an_api_role_may_execute_are_routable(shim_db: ShimDb) -> None:
    async with await psycopg.AsyncConnection.connect(shim_db.dsn, autocommit=True) as conn:
        catalog = await load(conn, ("test_api",), ("anon", "authenticated", "service_role"), "5s")
    names = {name for (_, name) in catalog.routines}
    assert "echo" in names
    assert "only_service" in names
    assert "hidden" not in names
    assert "writer" not in names  # test_private is not exposed
    echo = catalog.find("test_api", "echo")[0]
    assert [(a.name, a.type, a.has_default) for a in echo.args][:3] == [
        ("a", "bigint", False),
        ("b", "uuid", True),
        ("c", "jsonb", True),
    ]
    assert echo.readonly
    assert echo.returns_json
    assert echo.comment == "Echo the arguments."
    series = catalog.find("test_api", "series")[0]
    assert series.returns_set
    assert catalog.find("test_api", "nothing")[0].returns_void
    assert not catalog.find("test_api", "whoami")[0].readonly
    stats = catalog.find("test_api", "stats")[0]
    assert (stats.cache_seconds, stats.cache_public) == (5, False)


async def test_names_enter_sql_only_as_quoted_identifiers(shim_db: ShimDb) -> None:
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute("""
            create function test_api."odd name; drop table x"("we""ird" int) returns int
            language sql stable as $$ select $1 $$;
            grant execute on function test_api."odd name; drop table x"(int) to anon;
        """)
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/odd name; drop table x", json={'we"ird': 3})
        assert r.status_code == 200
        assert r.json() == 3


async def test_notify_reload_makes_a_new_function_routable(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        assert (await client.post("/rpc/fresh")).status_code == 404
        with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
            conn.execute("""
                create function test_api.fresh() returns int language sql as $$ select 7 $$;
                grant execute on function test_api.fresh() to anon;
                notify eventlive_reload;
            """)
        for _ in range(100):  # the listener reloads asynchronously
            r = await client.post("/rpc/fresh")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200
        assert r.json() == 7


async def test_sighup_reloads_the_catalog(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
            conn.execute("""
                create function test_api.by_hup() returns int language sql as $$ select 8 $$;
                grant execute on function test_api.by_hup() to anon;
            """)
        assert (await client.post("/rpc/by_hup")).status_code == 404  # no NOTIFY sent
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            r = await client.post("/rpc/by_hup")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert r.json() == 8
