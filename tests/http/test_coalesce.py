"""Coalesced heartbeats (``shim.http.coalesce``): concurrent ``presence_ping`` calls of one
shim go to Postgres as one statement, every caller still gets exactly its own answer, a
lone ping goes out at once, each batch is one round trip, and the batch function is out
of reach of every HTTP caller and every token."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import TcpProxy, bearer, new_users, serve, settings_for, token

from shim.serve import demo

pytestmark = pytest.mark.anyio

SECRET = "coalesce-tests-secret-of-at-least-32-bytes!"
BASE = f"/api/webinars/{demo.DEMO_WEBINAR}"


@pytest.fixture
def api_db(eventlive_db: Any) -> Any:
    """The migrated clone with the demo webinar (149402, auto entry)."""
    demo.prepare(eventlive_db.admin_dsn, SECRET)
    return eventlive_db


def _settings(dsn: str, **overrides: Any) -> Any:
    return settings_for(dsn, **{"schemas": ("api",), "jwt_secret": SECRET, **overrides})


async def _enter(client: httpx.AsyncClient, user: str) -> str:
    r = await client.post(f"{BASE}/access/track", headers=bearer(demo.dev_token(SECRET, user)))
    assert r.status_code == 200, r.text
    return str(r.json()["session_id"])


def _stale(admin_dsn: str) -> None:
    """Every heartbeat from now on is a real write (outside the throttle window)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("update eventlive.presence set last_seen_at = now() - interval '1 hour'")


async def _crowd(client: httpx.AsyncClient, calls: list[tuple[str, str, str]]) -> list[Any]:
    """(route, user, session) posted all at once; their responses in order."""

    async def one(route: str, user: str, session: str) -> Any:
        headers = bearer(demo.dev_token(SECRET, user))
        if route == "rpc":
            return await client.post(
                "/rpc/presence_ping",
                headers=headers,
                json={"webinar_id": demo.DEMO_WEBINAR, "session_id": session},
            )
        return await client.post(
            f"{BASE}/presence/ping", headers=headers, json={"session_id": session}
        )

    return list(await asyncio.gather(*(one(*c) for c in calls)))


async def test_concurrent_pings_share_statements_and_each_caller_gets_its_own_answer(
    api_db: Any,
) -> None:
    """40 viewers ping at once through one connection: fewer statements than pings, and
    each caller's answer is its own: 204 for the active, 403 not_registered for the
    stranger, 409 session_superseded for the old device, with the exact body the single
    path gives the same call."""
    users = new_users(api_db.admin_dsn, 41)
    viewers, stranger = users[:40], users[40]
    calls: list[tuple[str, str, str]] = []
    async with serve(_settings(api_db.dsn, pool_min=1, pool_max=1, coalesce_slots=1)) as client:
        sessions = [await _enter(client, u) for u in viewers]
        superseded = sessions[0]
        sessions[0] = await _enter(client, viewers[0])
        _stale(api_db.admin_dsn)
        for i, (u, s) in enumerate(zip(viewers, sessions, strict=True)):
            calls.append(("rpc" if i % 2 else "legacy", u, s))
        calls += [("rpc", stranger, str(uuid.uuid4())), ("legacy", viewers[0], superseded)]
        coalescer = client._transport.app.state.service.database.coalescer  # type: ignore[attr-defined]
        before = (coalescer.batches, coalescer.pings)
        answers = await _crowd(client, calls)
        batches = coalescer.batches - before[0]
        pings = coalescer.pings - before[1]
    assert [r.status_code for r in answers[:40]] == [204] * 40
    assert (answers[40].status_code, answers[40].json()["details"]) == (403, "not_registered")
    assert (answers[41].status_code, answers[41].json()["details"]) == (409, "session_superseded")
    assert pings == 42
    assert batches < pings / 3, (batches, pings)
    with psycopg.connect(api_db.admin_dsn) as conn:
        row = conn.execute(
            "select count(*) from eventlive.presence where last_seen_at > now() - interval '1 minute'"
        ).fetchone()
    assert row == (40,)  # every accepted ping was written
    # the single path answers the same two errors with the very same bodies
    async with serve(_settings(api_db.dsn, coalesce=False)) as client:
        single = await _crowd(client, calls[40:])
    assert [(r.status_code, r.json()) for r in single] == [
        (r.status_code, r.json()) for r in answers[40:]
    ]


async def test_a_lone_ping_goes_out_at_once_in_a_batch_of_one(api_db: Any) -> None:
    """No added wait at low load: an idle shim sends a ping immediately, alone."""
    (user,) = new_users(api_db.admin_dsn, 1)
    async with serve(_settings(api_db.dsn)) as client:
        session = await _enter(client, user)
        coalescer = client._transport.app.state.service.database.coalescer  # type: ignore[attr-defined]
        before = (coalescer.batches, coalescer.pings)
        (r,) = await _crowd(client, [("rpc", user, session)])
        assert r.status_code == 204
        assert (coalescer.batches - before[0], coalescer.pings - before[1]) == (1, 1)


async def test_a_coalesced_batch_is_one_round_trip(api_db: Any) -> None:
    """Counted at a TCP proxy: one ping is one round trip, and eight concurrent pings on
    one connection take fewer round trips than pings."""
    users = new_users(api_db.admin_dsn, 8)
    proxy = TcpProxy(api_db.dsn)
    try:
        settings = _settings(proxy.dsn, pool_min=1, pool_max=1, coalesce_slots=1)
        async with serve(settings) as client:
            sessions = [await _enter(client, u) for u in users]
            for _ in range(3):  # first one prepares the batch statement: still one trip
                proxy.reset()
                (r,) = await _crowd(client, [("rpc", users[0], sessions[0])])
                assert r.status_code == 204
                assert proxy.bursts == 1
            proxy.reset()
            answers = await _crowd(
                client, [("legacy", u, s) for u, s in zip(users, sessions, strict=True)]
            )
            assert [r.status_code for r in answers] == [204] * 8
            assert proxy.bursts < 8
    finally:
        proxy.close()


@pytest.mark.parametrize("roles", [None, "anon,authenticated,service_role,eventlive_batcher"])
async def test_no_token_can_claim_the_batch_role(api_db: Any, roles: str | None) -> None:
    """A validly signed token naming eventlive_batcher is 401, even when an operator lists
    the role in EVENTLIVE_JWT_ROLES, and nothing reaches the database."""
    settings = _settings(api_db.dsn)
    if roles:
        settings = dataclasses.replace(settings, jwt_roles=tuple(roles.split(",")))
    forged = token({"role": "eventlive_batcher"}, key=SECRET)
    async with serve(settings) as client:
        for path in ("/rpc/presence_ping", f"{BASE}/presence/ping"):
            r = await client.post(
                path,
                headers=bearer(forged),
                json={"webinar_id": demo.DEMO_WEBINAR, "session_id": str(uuid.uuid4())}
                if path.startswith("/rpc")
                else {"session_id": str(uuid.uuid4())},
            )
            assert r.status_code == 401, r.text
            assert "WWW-Authenticate" in r.headers


@pytest.mark.parametrize("schemas", [("api",), ("api", "eventlive")])
async def test_the_batch_function_is_not_routable_over_http(
    api_db: Any, schemas: tuple[str, ...]
) -> None:
    """presence_ping_batch is unknown to the shim (404) for every caller, even with
    eventlive listed as exposed: the catalog takes only functions an API role may run."""
    async with serve(_settings(api_db.dsn, schemas=schemas)) as client:
        for headers in (
            {},
            bearer(demo.dev_token(SECRET)),
            bearer(token({"role": "service_role"}, key=SECRET)),
        ):
            for profile in schemas:
                r = await client.post(
                    "/rpc/presence_ping_batch",
                    headers={**headers, "Content-Profile": profile},
                    json={"p_webinar_ids": "{1}", "p_user_ids": "{}", "p_session_ids": "{}"},
                )
                assert r.status_code == 404, r.text


async def test_the_lean_path_answers_exactly_as_the_full_path(api_db: Any) -> None:
    """The hot routes answer the same status and body whether the lean path takes them
    (no Origin) or the full Starlette path does (an Origin sends them there), for
    successes, database errors and input errors alike."""
    users = new_users(api_db.admin_dsn, 2)
    async with serve(_settings(api_db.dsn)) as client:
        session = await _enter(client, users[0])
        me = bearer(demo.dev_token(SECRET, users[0]))
        stranger = bearer(demo.dev_token(SECRET, users[1]))
        wid = demo.DEMO_WEBINAR
        cases: list[tuple[str, dict[str, str], Any]] = [
            ("/rpc/presence_ping", me, {"webinar_id": wid, "session_id": session}),
            ("/rest/v1/rpc/presence_ping", stranger, {"webinar_id": wid, "session_id": session}),
            (f"{BASE}/presence/ping", me, {"session_id": str(uuid.uuid4())}),
            (f"{BASE}/presence/ping", me, {"session_id": "not-a-uuid"}),
            (f"{BASE}/presence/ping", me, {"session_id": session, "extra": 1}),
            ("/rpc/presence_ping", me, {"webinar_id": 2**70, "session_id": session}),
            ("/rpc/track_access", me, {"webinar_id": wid, "session_id": session}),
            ("/rpc/track_access", me, {"webinar_id": 999, "session_id": session}),
            (f"{BASE}/access/track", {"Authorization": "Bearer nope"}, {}),
            (f"{BASE}/presence/leave", stranger, {"session_id": str(uuid.uuid4())}),
        ]
        for path, headers, body in cases:
            lean = await client.post(path, headers=headers, json=body)
            full = await client.post(
                path, headers={**headers, "Origin": "http://example.test"}, json=body
            )
            assert lean.status_code == full.status_code, (path, body, lean.text, full.text)
            if lean.status_code != 200 or "track" not in path:
                assert lean.content == full.content, (path, body)
            for h in ("X-Request-Id", "Server-Timing"):
                assert h in lean.headers
            assert lean.headers.get("content-type") == full.headers.get("content-type")
            assert "access-control-allow-origin" in full.headers
            assert "access-control-allow-origin" not in lean.headers


async def test_a_body_stalling_on_the_lean_path_gets_408_soon_after_the_body_timeout(
    api_db: Any,
) -> None:
    """A ping whose body stops half way (the lean path's route, no Origin) gets the full
    path's 408 ``body_timeout`` between the limit and the limit plus an eighth (the
    shared sweep of ``shim.web.deadlines``), and the next request is served."""
    users = new_users(api_db.admin_dsn, 1)
    limit = 0.4

    async def stalled() -> Any:
        yield b'{"session_id": '
        await asyncio.sleep(30)
        yield b'"x"}'

    async with serve(_settings(api_db.dsn, body_timeout=limit)) as client:
        session = await _enter(client, users[0])
        headers = {**bearer(demo.dev_token(SECRET, users[0])), "Content-Type": "application/json"}
        started = asyncio.get_running_loop().time()
        r = await client.post(f"{BASE}/presence/ping", headers=headers, content=stalled())
        elapsed = asyncio.get_running_loop().time() - started
        assert r.status_code == 408, r.text
        assert r.json()["details"] == "body_timeout"
        assert limit <= elapsed < limit * 1.125 + 0.3, elapsed
        ok = await client.post(
            f"{BASE}/presence/ping", headers=headers, json={"session_id": session}
        )
        assert ok.status_code == 204, ok.text


async def test_pings_that_arrive_together_share_a_batch_while_slots_are_free(
    api_db: Any,
) -> None:
    """Twenty pings arriving at once on an idle shim (every slot and connection free)
    go out together, not the first ones alone in a slot each: a batch forms over one
    turn of the event loop."""
    users = new_users(api_db.admin_dsn, 20)
    async with serve(_settings(api_db.dsn, pool_min=4, pool_max=4, coalesce_slots=4)) as client:
        sessions = [await _enter(client, u) for u in users]
        coalescer = client._transport.app.state.service.database.coalescer  # type: ignore[attr-defined]
        before = (coalescer.batches, coalescer.pings)
        answers = await _crowd(
            client, [("rpc", u, s) for u, s in zip(users, sessions, strict=True)]
        )
        assert [r.status_code for r in answers] == [204] * 20
        batches, pings = coalescer.batches - before[0], coalescer.pings - before[1]
    assert pings == 20
    assert batches <= 2, batches
