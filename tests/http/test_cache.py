"""The GET cache: the single-flight cache on its own (one load for concurrent identical
keys, errors shared but not stored, expiry, bound, ETag comparison), then over HTTP on a
real uvicorn on loopback: ETag / 304, Cache-Control from the ``@cache`` marker, and 100
concurrent identical GETs -> one database call, counted at a TCP proxy."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import NO_HUB, ShimDb, TcpProxy, bearer, settings_for, token, uvicorn_server

from shim.http.cache import SharedCache, etag_matches, etag_of
from shim.serve.app import create_app

pytestmark = pytest.mark.anyio


async def _wave(base: str, path: str, headers: dict[str, str], n: int) -> list[bytes]:
    """Open ``n`` connections, then write one GET on each at once (raw HTTP/1.1: a Python
    HTTP client is too slow to put 100 requests in flight together on a busy machine)."""
    host, port = base.removeprefix("http://").split(":")
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(n)]
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: shim\r\n{head}Connection: close\r\n\r\n".encode()
    for _, writer in streams:
        writer.write(request)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        data = await reader.read()
        writer.close()
        return data

    return await asyncio.gather(*(answer(r, w) for r, w in streams))


async def test_hundred_concurrent_identical_gets_cost_one_database_call(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    app = create_app(settings_for(proxy.dsn, pool_min=4, pool_max=4), NO_HUB)
    auth = bearer(token())
    with uvicorn_server(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await client.get("/rpc/echo?a=1", headers=auth)  # token verified, pool open
        for _ in range(2):  # not cached (no @cache marker): each wave costs one call
            proxy.reset()
            answers = await _wave(base, "/rpc/slow_stats?w=7", auth, 100)
            assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
            assert len({a.rpartition(b"\r\n\r\n")[2] for a in answers}) == 1
            assert proxy.bursts == 1


async def test_etag_304_and_cache_control_from_the_marker(shim_db: ShimDb, proxy: TcpProxy) -> None:
    app = create_app(settings_for(proxy.dsn), NO_HUB)
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


# -- the cache on its own ------------------------------------------------------------


async def test_concurrent_identical_keys_load_once_and_errors_are_not_kept() -> None:
    cache = SharedCache(10)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return '{"n": 1}'

    results = await asyncio.gather(*(cache.get("k", 0, load) for _ in range(50)))
    assert calls == 1
    assert {how for _, how in results} == {"miss", "shared"}
    assert len({e.etag for e, _ in results}) == 1

    async def fail() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    outcomes = await asyncio.gather(
        *(cache.get("e", 5, fail) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert calls == 2
    with pytest.raises(ValueError, match="boom"):
        await cache.get("e", 5, fail)  # the error was not stored
    assert calls == 3


async def test_entries_live_ttl_seconds_and_the_cache_is_bounded() -> None:
    cache = SharedCache(2)

    async def load() -> str:
        return "x"

    _, how = await cache.get("a", 60, load)
    assert how == "miss"
    _, how = await cache.get("a", 60, load)
    assert how == "hit"
    _, how = await cache.get("z", 0, load)  # ttl 0: shared in flight only
    _, how = await cache.get("z", 0, load)
    assert how == "miss"
    for key in ("b", "c", "d"):
        await cache.get(key, 60, load)
    assert len(cache._entries) <= 2


def test_etag_comparison() -> None:
    tag = etag_of('{"a":1}')
    assert etag_matches(tag, tag)
    assert etag_matches(f'"other", W/{tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"other"', tag)
    assert etag_of(None) == etag_of("")


# -- answers shared by their readers (@readers) ----------------------------------------------

STAFF = [f"5a1f0000-0000-4000-8000-{i:012d}" for i in range(100)]
STRANGER = "5a1f0000-0000-4000-8000-999999999999"


def _staffed_webinar(admin_dsn: str, webinar: int = 7) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for uid in [*STAFF, STRANGER]:
            conn.execute("insert into auth.users (id) values (%s) on conflict do nothing", (uid,))
        conn.execute(
            "select set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
        )
        conn.execute("set role service_role")
        conn.execute("select api.upsert_webinar(%s, 'Shared stats')", (webinar,))
        for uid in STAFF:
            conn.execute("select api.set_staff(%s, %s)", (webinar, uid))


async def _quiet(client: httpx.AsyncClient, app: Any) -> None:
    """Until the pool's connection and the NOTIFY listener's are open: their handshakes
    must not count as calls."""
    assert (await client.get("/ready")).status_code == 200
    while not app.state.listener.listening.is_set():
        await asyncio.sleep(0.02)


async def test_a_hundred_admins_polling_stats_cost_one_database_call_per_interval(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    """access_stats is staff-only, yet its answer is the same for every reader: the shim
    loads it with its readers once per 5 s and serves every staff member from memory —
    100 admins at once, then each again, one database call per interval (authorization
    included)."""
    _staffed_webinar(shim_db.admin_dsn)
    # One connection: the proxy's count is then calls, never a connection being opened.
    app = create_app(settings_for(proxy.dsn, schemas=("api",), pool_min=1, pool_max=1), NO_HUB)
    admins = [bearer(token({"sub": uid})) for uid in STAFF]
    with uvicorn_server(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await _quiet(client, app)
            proxy.reset()
            started = time.monotonic()
            answers = await asyncio.gather(
                *(client.get("/api/webinars/7/stats/access", headers=h) for h in admins)
            )
            answers += [
                await client.get("/rpc/access_stats?webinar_id=7", headers=h) for h in admins
            ]
            intervals = 1 + int((time.monotonic() - started) // 5)  # a slow machine: > 5 s
            calls = proxy.bursts  # before the shutdown's goodbyes reach the proxy
    assert {r.status_code for r in answers} == {200}
    assert answers[0].json()["webinar_id"] == 7
    assert answers[0].headers["Cache-Control"] == "private, max-age=5"
    assert 1 <= calls <= intervals, (calls, intervals)


async def test_a_shared_answer_is_never_served_to_someone_who_may_not_read_it(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    """With the stats in memory, a stranger still gets their own 403 from the database,
    and a stranger's failed load is not handed to the staff who waited on it."""
    _staffed_webinar(shim_db.admin_dsn)
    app = create_app(settings_for(proxy.dsn, schemas=("api",), pool_min=1, pool_max=1), NO_HUB)
    staff, stranger = bearer(token({"sub": STAFF[0]})), bearer(token({"sub": STRANGER}))
    service = bearer(token({"role": "service_role", "sub": None}))
    with uvicorn_server(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await _quiet(client, app)
            # The stranger first, with staff arriving while its load is in flight.
            first = await asyncio.gather(
                client.get("/rpc/access_stats?webinar_id=7", headers=stranger),
                *(client.get("/rpc/access_stats?webinar_id=7", headers=staff) for _ in range(5)),
            )
            assert first[0].status_code == 403
            assert first[0].json()["details"] == "not_staff"
            assert {r.status_code for r in first[1:]} == {200}
            proxy.reset()
            again = await client.get("/rpc/access_stats?webinar_id=7", headers=stranger)
            assert again.status_code == 403  # its own call: the cached answer is not for it
            assert proxy.bursts == 1
            proxy.reset()
            ok = await client.get("/rpc/access_stats?webinar_id=7", headers=service)
            assert ok.status_code == 200  # service_role is a reader of every webinar
            assert proxy.bursts == 0


# -- chat and Q&A polling: one shared answer per class of readers ----------------------------

VIEWERS = [f"5a1f0000-0000-4000-8000-{i:012d}" for i in range(200, 300)]


def _room_with_a_held_message(admin_dsn: str, webinar: int = 8) -> None:
    """A webinar with three staff and 100 registered viewers; one visible message, then
    (hold for review on) one held message, both from the first viewer; hold off again."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for uid in [*STAFF[:3], *VIEWERS, STRANGER]:
            conn.execute("insert into auth.users (id) values (%s) on conflict do nothing", (uid,))
        conn.execute(
            "select set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
        )
        conn.execute("set role service_role")
        conn.execute("select api.upsert_webinar(%s, 'Shared chat')", (webinar,))
        for uid in STAFF[:3]:
            conn.execute("select api.set_staff(%s, %s)", (webinar, uid))
        for uid in VIEWERS:
            conn.execute("select api.register(%s, %s)", (webinar, uid))
        for hold, text in ((False, "visible"), (True, "held")):
            conn.execute(
                "select api.room_settings(webinar_id => %s, hold_for_review => %s)", (webinar, hold)
            )
            _send_chat(admin_dsn, webinar, VIEWERS[0], text)
        conn.execute(
            "select api.room_settings(webinar_id => %s, hold_for_review => false)", (webinar,)
        )


def _send_chat(admin_dsn: str, webinar: int, viewer: str, text: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            "select set_config('request.jwt.claims', %s, false)",
            (json.dumps({"role": "authenticated", "sub": viewer}),),
        )
        conn.execute("set role authenticated")
        conn.execute("select api.chat_send(%s, %s, gen_random_uuid())", (webinar, text))


async def test_a_hundred_viewers_polling_chat_at_one_cursor_cost_one_call_per_interval_per_class(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    """chat_since and questions answer staff (who see held messages) and viewers
    differently: the shim keeps one shared answer per class, loaded with its readers.
    100 viewers and 3 staff polling the same cursor cost one database call per class per
    interval (authorization included); viewers never get the staff answer; a stranger
    gets its own 403."""
    _room_with_a_held_message(shim_db.admin_dsn)
    app = create_app(settings_for(proxy.dsn, schemas=("api",), pool_min=1, pool_max=1), NO_HUB)
    path = "/rpc/chat_since?webinar_id=8&after_seq=0"
    with uvicorn_server(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await _quiet(client, app)
            proxy.reset()
            started = time.monotonic()
            staff = await asyncio.gather(
                *(client.get(path, headers=bearer(token({"sub": u}))) for u in STAFF[:3])
            )
            viewers = await asyncio.gather(
                *(client.get(path, headers=bearer(token({"sub": u}))) for u in VIEWERS)
            )
            intervals = 1 + int((time.monotonic() - started) // 2)
            calls = proxy.bursts
            stranger = await client.get(path, headers=bearer(token({"sub": STRANGER})))
            # The room's next event makes the shared answers stale at once (RoomClock),
            # not after their 2 s: a viewer rejoining a live room must catch up to it.
            rooms, before = app.state.service.rooms, app.state.service.rooms.reading(8)
            _send_chat(shim_db.admin_dsn, 8, VIEWERS[1], "after")
            deadline = time.monotonic() + 10
            while rooms.reading(8) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert rooms.reading(8) != before, "the room change was never heard"
            fresh = await client.get(path, headers=bearer(token({"sub": VIEWERS[3]})))
            questions = [
                await client.get(
                    "/rpc/questions?webinar_id=8&after_seq=0", headers=bearer(token({"sub": u}))
                )
                for u in (VIEWERS[1], VIEWERS[2], STAFF[1], STAFF[2])
            ]
    assert {r.status_code for r in [*staff, *viewers, *questions]} == {200}
    seen_by_staff = [m["body"] for m in staff[0].json()["messages"]]
    seen_by_viewers = [m.get("body") for m in viewers[0].json()["messages"]]
    assert seen_by_staff == ["visible", "held"]
    assert seen_by_viewers == ["visible"]
    assert {r.text for r in staff} == {staff[0].text}
    assert {r.text for r in viewers} == {viewers[0].text}
    assert 2 <= calls <= 2 * intervals, (calls, intervals)
    assert stranger.status_code == 403
    assert stranger.json()["details"] == "not_registered"
    assert [m.get("body") for m in fresh.json()["messages"]] == ["visible", "after"], (
        fresh.json(),
        fresh.headers,
    )
