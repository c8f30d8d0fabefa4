"""One network round trip per request: counted at a TCP proxy between shim and Postgres.

The proxy counts client->server write bursts (a burst starts when the client sends after
the server last spoke), so BEGIN / settings / call / COMMIT sent as four exchanges would
count 4. The schema ``test_api`` is usable only by the API roles, not by the login role,
so a call parsed before the role switch would fail (privileges are checked at parse
time, as the role of that moment): success proves the order.
"""

from __future__ import annotations

import httpx
import pytest
from shim_support import NO_HUB, ShimDb, TcpProxy, bearer, serve, settings_for, token

pytestmark = pytest.mark.anyio


async def test_each_post_and_get_is_exactly_one_round_trip(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    auth = bearer(token())
    async with serve(settings_for(proxy.dsn, pool_min=1, pool_max=1)) as client:
        await client.post("/rpc/whoami", headers=auth)  # the pool's connection is open
        for _ in range(12):  # past psycopg's prepare threshold (5): prepared too
            proxy.reset()
            r = await client.post("/rpc/whoami", headers=auth)
            assert r.status_code == 200
            assert r.json()["user"] == "authenticated"
            assert proxy.bursts == 1
            proxy.reset()
            r = await client.get("/rpc/echo", params={"a": "1"}, headers=auth)
            assert r.status_code == 200
            assert proxy.bursts == 1


async def test_a_failing_call_is_one_round_trip_and_leaves_the_connection_clean(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    auth = bearer(token())
    async with serve(settings_for(proxy.dsn, pool_min=1, pool_max=1)) as client:
        await client.post("/rpc/whoami", headers=auth)
        for _ in range(3):
            proxy.reset()
            r = await client.post(
                "/rpc/fail", headers=auth, json={"code": "P0001", "msg": "no", "det": "x"}
            )
            assert r.status_code == 400
            assert proxy.bursts == 1
            proxy.reset()
            r = await client.post("/rpc/whoami")  # same connection: rolled back, anon now
            assert r.json()["user"] == "anon"
            assert r.json()["statement_timeout"] == "5s"
            assert proxy.bursts == 1


async def test_settings_do_not_leak_between_requests_on_one_connection(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    async with serve(settings_for(proxy.dsn, pool_min=1, pool_max=1)) as client:
        r = await client.get("/rpc/whoami_ro", headers=bearer(token()))
        assert r.json() == {"user": "authenticated", "read_only": "on"}
        r = await client.post("/rpc/whoami")
        assert r.json()["user"] == "anon"
        assert r.json()["read_only"] == "off"
        assert r.json()["claims"] == {"role": "anon"}


async def test_without_prepared_statements_still_one_round_trip(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    settings = settings_for(proxy.dsn, pool_min=1, pool_max=1, prepare=False)
    async with serve(settings) as client:
        await client.post("/rpc/whoami")
        for _ in range(3):
            proxy.reset()
            r = await client.post("/rpc/whoami", headers=bearer(token()))
            assert r.json()["user"] == "authenticated"
            assert proxy.bursts == 1


async def test_a_vanished_prepared_statement_is_prepared_again_transparently(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    from shim.serve.app import create_app

    app = create_app(settings_for(proxy.dsn, pool_min=1, pool_max=1), NO_HUB)
    async with app.router.lifespan_context(app):
        service = app.state.service
        await app.state.listener.listening.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
            assert (await client.post("/rpc/whoami")).status_code == 200
            async with service.database.connections.connection() as conn:
                await conn.execute("deallocate all")  # what DISCARD ALL or a pooler does
            proxy.reset()
            r = await client.post("/rpc/whoami")
            assert r.status_code == 200
            assert proxy.bursts == 2  # the failed attempt and the re-prepared one
            proxy.reset()
            assert (await client.post("/rpc/whoami")).status_code == 200
            assert proxy.bursts == 1
