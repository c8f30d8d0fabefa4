"""GET on stable functions: ETag / 304, Cache-Control from the ``@cache`` marker, and a
shared single-flight cache (100 concurrent identical GETs -> one database call), on a
real uvicorn on loopback. Database calls are counted at a TCP proxy."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from shim_support import ShimDb, TcpProxy, bearer, settings_for, token, uvicorn_server

from shim.app import create_app

pytest_plugins = ["shim_fixtures"]
pytestmark = pytest.mark.anyio


async def test_hundred_concurrent_identical_gets_cost_one_database_call(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    app = create_app(settings_for(proxy.dsn, pool_min=4, pool_max=4))
    auth = bearer(token())
    with uvicorn_server(app) as base:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:
            await client.get("/rpc/echo?a=1", headers=auth)  # warm
            proxy.reset()
            responses = await asyncio.gather(
                *(client.get("/rpc/slow_stats?w=7", headers=auth) for _ in range(100))
            )
            assert {r.status_code for r in responses} == {200}
            assert len({r.text for r in responses}) == 1
            assert proxy.bursts == 1
            # Not cached (no @cache marker): the next wave costs one call again.
            proxy.reset()
            await asyncio.gather(
                *(client.get("/rpc/slow_stats?w=7", headers=auth) for _ in range(10))
            )
            assert proxy.bursts == 1


async def test_etag_304_and_cache_control_from_the_marker(shim_db: ShimDb, proxy: TcpProxy) -> None:
    app = create_app(settings_for(proxy.dsn))
    alice, bob = bearer(token()), bearer(token({"sub": "0d7f6e2b-8a51-4c4e-9d61-6c2d6f8e9a10"}))
    with uvicorn_server(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await client.get("/rpc/echo?a=1", headers=alice)
            proxy.reset()
            first = await client.get("/rpc/stats?w=1", headers=alice)
            assert first.status_code == 200
            assert first.headers["Cache-Control"] == "private, max-age=5"
            etag = first.headers["ETag"]
            assert etag.startswith('"')
            again = await client.get("/rpc/stats?w=1", headers={"If-None-Match": etag, **alice})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["ETag"] == etag
            stale = await client.get("/rpc/stats?w=1", headers={"If-None-Match": '"x"', **alice})
            assert stale.status_code == 200
            assert stale.text == first.text  # from the cache, within max-age
            assert proxy.bursts == 1
            # Another caller gets an entry of their own (results may depend on who asks).
            other = await client.get("/rpc/stats?w=1", headers=bob)
            assert other.status_code == 200
            assert proxy.bursts == 2
            # Different arguments, different entry.
            await client.get("/rpc/stats?w=2", headers=alice)
            assert proxy.bursts == 3
            plain = await client.get("/rpc/echo?a=1", headers=alice)
            assert plain.headers["Cache-Control"] == "no-cache"
            r = await client.get(
                "/rpc/echo?a=1", headers={"If-None-Match": plain.headers["ETag"], **alice}
            )
            assert r.status_code == 304
