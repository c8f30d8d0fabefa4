"""Batched entries (``shim.http.entries``): concurrent ``track_access`` calls of one shim go
to Postgres as one statement per batch, ``eventlive.track_access_batch``, and every
caller still gets exactly the answer the single path gives (success and each error
kind, byte for byte but for its ids and its drawn ``first_ping_in``); a batch is one
round trip; webinars take turns (a storm's backlog delays another webinar's entry by one
batch); a queued entry waits its pool timeout, then gets 503 PGRST003 with
``Retry-After``; a database that is down gives 503 at once; heartbeats keep connections
of their own while entries and other calls hold everything they may (``exchange.Share``).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import TcpProxy, bearer, new_users, serve, settings_for

from shim.serve import demo

pytestmark = pytest.mark.anyio

SECRET = "entry-batches-tests-secret-of-at-least-32-bytes"
S, Q, CLOSED, BY_REGISTRATION, MISSING = 501, 502, 503, 504, 999_999


@pytest.fixture
def api_db(eventlive_db: Any) -> Any:
    """The migrated clone with webinars S and Q (live, automatic entry), one ended, one
    that requires registration."""
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as conn:
        conn.execute(
            "insert into eventlive.webinars (id, title, state, entry) values"
            " (%s, 'S', 'live', 'auto'), (%s, 'Q', 'live', 'auto'),"
            " (%s, 'ended', 'ended', 'auto'), (%s, 'by registration', 'live', 'registered')",
            (S, Q, CLOSED, BY_REGISTRATION),
        )
    return eventlive_db


def _settings(dsn: str, **overrides: Any) -> Any:
    return settings_for(dsn, **{"schemas": ("api",), "jwt_secret": SECRET, **overrides})


def _auth(user: str) -> dict[str, str]:
    return bearer(demo.dev_token(SECRET, user))


def _batcher(client: httpx.AsyncClient) -> Any:
    return client._transport.app.state.service.database.entries  # type: ignore[attr-defined]


def _sent(client: httpx.AsyncClient) -> tuple[int, int]:
    """Batches and entries both batchers sent: first entries' and re-confirmations'."""
    database = client._transport.app.state.service.database  # type: ignore[attr-defined]
    pairs = [(b.batches, b.entries) for b in (database.entries, database.reconfirms) if b]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


async def _track(
    http: httpx.AsyncClient, user: str, webinar: int, session: str | None = None, **more: Any
) -> httpx.Response:
    body: dict[str, Any] = {"webinar_id": webinar, **more}
    if session is not None:
        body["session_id"] = session
    return await http.post("/rpc/track_access", headers=_auth(user), json=body)


async def _enter(client: httpx.AsyncClient, user: str, webinar: int = S) -> str:
    r = await _track(client, user, webinar)
    assert r.status_code == 200, r.text
    return str(r.json()["session_id"])


_IDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DRAWN = re.compile(rb'"first_ping_in": \d+')


def _seen(r: httpx.Response) -> tuple[Any, ...]:
    """Status, the body's bytes with its ids and drawn number masked, and the headers that
    carry meaning."""
    body = _DRAWN.sub(b'"first_ping_in": <n>', _IDS.sub(b"<id>", r.content))
    headers = tuple(r.headers.get(h) for h in ("content-type", "www-authenticate", "retry-after"))
    return r.status_code, body, headers


Step = Callable[[], Awaitable[httpx.Response]]


async def _every_kind(client: httpx.AsyncClient, admin_dsn: str) -> list[tuple[str, Step]]:
    """Fresh viewers in each state the cases need (set up one call at a time), and the
    cases: one call each, every answer kind of track_access."""
    (new, again, old_device, left, stranger, closed, missing, unregistered, big, quoted,
     made_id, legacy) = new_users(admin_dsn, 12)  # fmt: skip
    gone = str(uuid.uuid4())  # a token whose user was deleted (or never existed)
    session = await _enter(client, again)
    superseded = await _enter(client, old_device)
    await _enter(client, old_device)
    ended = await _enter(client, left)
    r = await client.post(
        "/rpc/presence_leave", headers=_auth(left), json={"webinar_id": S, "session_id": ended}
    )
    assert r.status_code == 204, r.text
    return [
        ("new entry", lambda: _track(client, new, S)),
        ("re-confirm", lambda: _track(client, again, S, session)),
        ("superseded", lambda: _track(client, old_device, S, superseded)),
        ("ended", lambda: _track(client, left, S, ended)),
        ("another's session", lambda: _track(client, stranger, S, session)),
        ("closed", lambda: _track(client, closed, CLOSED)),
        ("missing", lambda: _track(client, missing, MISSING)),
        ("not registered", lambda: _track(client, unregistered, BY_REGISTRATION)),
        ("client too large", lambda: _track(client, big, S, client={"x": "a" * 5000})),
        ("user deleted", lambda: _track(client, gone, S)),
        ("client", lambda: _track(client, quoted, S, client={"ua": 'a "b" \\ ü', "n": [1.5]})),
        ("client-made id", lambda: _track(client, made_id, S, str(uuid.uuid4()))),
        (
            "legacy",
            lambda: client.post(
                f"/api/webinars/{Q}/access/track", headers=_auth(legacy), json={"client": {}}
            ),
        ),
    ]


async def _answers(api_db: Any, batched: bool) -> tuple[list[tuple[str, Any]], int, int]:
    """Every kind at once, batched or single: the answers, and the batches and entries
    the batcher sent for them."""
    settings = _settings(
        api_db.dsn, pool_max=2, coalesce_slots=1, entry_slots=1, entry_batch=batched
    )
    async with serve(settings) as client:
        cases = await _every_kind(client, api_db.admin_dsn)
        before = _sent(client)
        answers = await asyncio.gather(*(step() for _, step in cases))
        after = _sent(client)
    seen = [(name, _seen(r)) for (name, _), r in zip(cases, answers, strict=True)]
    return seen, after[0] - before[0], after[1] - before[1]


async def test_concurrent_entries_each_get_the_single_paths_answer(api_db: Any) -> None:
    """Thirteen viewers enter at once, one of each kind (new, re-confirm, superseded,
    ended, another viewer's session id, closed, missing, not registered, client too
    large, deleted user, a client object, a client-made session id, the legacy route):
    batched in fewer statements than entries, each gets the single path's status, body
    and headers."""
    batched, batches, entries = await _answers(api_db, batched=True)
    single, none, _ = await _answers(api_db, batched=False)
    assert batched == single
    assert entries == len(batched)
    assert batches < entries / 2, (batches, entries)
    assert none == 0
    statuses = {name: seen[0] for name, seen in batched}
    assert statuses == {
        "new entry": 200,
        "re-confirm": 200,
        "superseded": 409,
        "ended": 409,
        "another's session": 400,
        "closed": 403,
        "missing": 404,
        "not registered": 403,
        "client too large": 400,
        "user deleted": 401,
        "client": 200,
        "client-made id": 200,
        "legacy": 200,
    }


async def test_two_tabs_in_one_batch_end_as_two_calls_in_a_row(api_db: Any) -> None:
    """One viewer entering from two tabs at once (one batch): one registration, one
    active session, and the second answer names the first as superseded."""
    (user,) = new_users(api_db.admin_dsn, 1)
    settings = _settings(api_db.dsn, pool_max=2, coalesce_slots=1, entry_slots=1)
    async with serve(settings) as client:
        batcher = _batcher(client)
        before = batcher.batches
        first, second = await asyncio.gather(_track(client, user, S), _track(client, user, S))
        assert batcher.batches - before == 1
    a, b = first.json(), second.json()
    assert {a["superseded_session_id"], b["superseded_session_id"]} == {None, a["session_id"]}
    with psycopg.connect(api_db.admin_dsn) as conn:
        row = conn.execute(
            "select (select count(*) from eventlive.registrations where user_id = %s),"
            " (select count(*) from eventlive.viewer_sessions"
            "  where user_id = %s and ended_at is null),"
            " (select session_id from eventlive.presence where user_id = %s)::text",
            (user, user, user),
        ).fetchone()
    assert row == (1, 1, b["session_id"])


async def test_an_entry_batch_is_one_round_trip_and_counted_in_metrics(api_db: Any) -> None:
    """Counted at a TCP proxy: a lone entry is one round trip (the first prepares the
    batch statement in the same one), eight at once take fewer round trips than entries;
    /metrics counts the batches and the entries they carried."""
    users = new_users(api_db.admin_dsn, 8)
    proxy = TcpProxy(api_db.dsn)
    try:
        settings = _settings(proxy.dsn, pool_min=2, pool_max=2, coalesce_slots=1, entry_slots=1)
        async with serve(settings) as client:
            await client.get("/ready")  # the pool's connections are open
            for user in users[:3]:
                proxy.reset()
                assert (await _track(client, user, S)).status_code == 200
                assert proxy.bursts == 1
            proxy.reset()
            answers = await asyncio.gather(*(_track(client, u, Q) for u in users))
            assert [r.status_code for r in answers] == [200] * 8
            assert proxy.bursts < 8
            batcher = _batcher(client)
            metrics = (await client.get("/metrics")).text
        assert f"eventlive_entry_batches_total {float(batcher.batches)}" in metrics
        assert f"eventlive_entries_batched_total {float(batcher.entries)}" in metrics
        assert batcher.entries == 11
        assert "eventlive_entry_wait_seconds_count 11.0" in metrics
    finally:
        proxy.close()


class _Held:
    """A transaction holding webinar ``webinar``'s row ``for update``: a new viewer's
    entry there waits (its registration's foreign key needs a share lock on that row)."""

    def __init__(self, admin_dsn: str, webinar: int) -> None:
        self._dsn = admin_dsn
        self._conn = psycopg.connect(admin_dsn)
        self._conn.execute("select 1 from eventlive.webinars where id = %s for update", (webinar,))

    def waiting(self) -> int:
        """Backends waiting for a lock (entries stuck behind this one)."""
        with psycopg.connect(self._dsn) as conn:
            row = conn.execute(
                "select count(*) from pg_catalog.pg_stat_activity where wait_event_type = 'Lock'"
            ).fetchone()
        return int(row[0]) if row else 0

    def release(self) -> None:
        self._conn.rollback()
        self._conn.close()


async def _until(check: Callable[[], bool], seconds: float = 10) -> None:
    """Wait (on the event loop, polling) until ``check()`` holds."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_webinars_take_turns_so_a_backlog_delays_another_webinar_by_one_batch(
    api_db: Any,
) -> None:
    """S's first entry is held in flight (a lock), 120 more of S queue behind it, then
    one first entry of Q: once the lock goes, Q's entry is in the very next batch
    (FIFO would have put it behind S's 120, three batches later), and every entry
    succeeds."""
    storm = new_users(api_db.admin_dsn, 121)
    (calm,) = new_users(api_db.admin_dsn, 1)
    settings = _settings(
        api_db.dsn, pool_min=3, pool_max=3, coalesce_slots=1, entry_slots=1, pool_timeout=20
    )
    async with serve(settings) as client:
        batcher = _batcher(client)
        sent: list[list[int]] = []
        batcher.observe = lambda webinars, waited: sent.append(webinars)
        held = _Held(api_db.admin_dsn, S)
        try:
            first = asyncio.ensure_future(_track(client, storm[0], S))
            await _until(lambda: held.waiting() >= 1)
            rest = [asyncio.ensure_future(_track(client, u, S)) for u in storm[1:]]
            await _until(lambda: batcher.queued == 120)
            mine = asyncio.ensure_future(_track(client, calm, Q))
            await _until(lambda: batcher.queued == 121)
        finally:
            held.release()
        answers = await asyncio.gather(first, *rest, mine)
    assert [r.status_code for r in answers] == [200] * 122
    assert sent[0] == [S]
    assert Q in sent[1], sent[1]
    assert [len(b) for b in sent] == [1, 50, 50, 21]
    assert sum(b.count(Q) for b in sent) == 1


async def test_a_heartbeat_does_not_wait_for_the_turns_entries_wait_for(api_db: Any) -> None:
    """One entry per turn of the event loop (``EVENTLIVE_ENTRY_TURN=1``): 40 first entries
    of S, 30 of them waiting for their turn, then a heartbeat of Q. It reaches the database while
    most of S's entries still wait for their turn (had it waited for turns too, they
    would all have started before it), and every entry is then stored with its own
    session."""
    storm = new_users(api_db.admin_dsn, 40)
    (calm,) = new_users(api_db.admin_dsn, 1)
    settings = _settings(api_db.dsn, entry_turn=1, pool_timeout=20)
    async with serve(settings) as client:
        session = await _enter(client, calm, Q)
        service = client._transport.app.state.service  # type: ignore[attr-defined]
        database, turns = service.database, service.turns
        waiting_then: list[int] = []
        ping_through = database.ping

        async def ping_seen(*args: Any) -> None:  # the heartbeat's step into the database
            waiting_then.append(turns.waiting)
            await ping_through(*args)

        database.ping = ping_seen
        entries = [asyncio.ensure_future(_track(client, u, S)) for u in storm]
        while turns.waiting < 30:  # S's entries read, most waiting for their turn
            await asyncio.sleep(0)
        ping = await client.post(
            "/rpc/presence_ping", headers=_auth(calm), json={"webinar_id": Q, "session_id": session}
        )
        answers = await asyncio.gather(*entries)
    assert ping.status_code == 204, ping.text
    assert len(waiting_then) == 1
    assert waiting_then[0] >= 20, waiting_then
    assert [r.status_code for r in answers] == [200] * 40
    assert len({r.json()["session_id"] for r in answers}) == 40
    with psycopg.connect(api_db.admin_dsn) as conn:
        stored = conn.execute(
            "select count(*) from eventlive.viewer_sessions where webinar_id = %s", (S,)
        ).fetchone()
    assert stored == (40,)


async def test_a_re_confirmation_does_not_wait_behind_a_batch_of_first_entries(
    api_db: Any,
) -> None:
    """One entry slot: S's first entries are held in flight by a lock and more of S queue
    for that slot; an entered viewer of Q re-confirms and is answered at once, in a batch
    of its own (first entries' batches and re-confirmations' have slots of their own)."""
    storm = new_users(api_db.admin_dsn, 5)
    (calm,) = new_users(api_db.admin_dsn, 1)
    settings = _settings(api_db.dsn, pool_max=4, coalesce_slots=1, entry_slots=1, pool_timeout=20)
    async with serve(settings) as client:
        session = await _enter(client, calm, Q)
        batcher = _batcher(client)
        held = _Held(api_db.admin_dsn, S)
        try:
            first = asyncio.ensure_future(_track(client, storm[0], S))
            await _until(lambda: held.waiting() >= 1)
            rest = [asyncio.ensure_future(_track(client, u, S)) for u in storm[1:]]
            await _until(lambda: batcher.queued == 4)
            started = time.monotonic()
            again = await _track(client, calm, Q, session)
            elapsed = time.monotonic() - started
            assert again.status_code == 200, again.text
            assert again.json()["session_id"] == session
            assert elapsed < 0.5, elapsed
            assert batcher.queued == 4  # S's entries still wait for their slot
        finally:
            held.release()
        assert [r.status_code for r in await asyncio.gather(first, *rest)] == [200] * 5


async def test_a_queued_entry_waits_its_pool_timeout_then_gets_503_with_retry_after(
    api_db: Any,
) -> None:
    """With the one entry slot held in flight, entries queued behind it get 503 PGRST003
    and Retry-After once they have waited EVENTLIVE_POOL_TIMEOUT; the held one then
    succeeds when the lock goes."""
    users = new_users(api_db.admin_dsn, 4)
    timeout = 0.6
    settings = _settings(
        api_db.dsn, pool_min=3, pool_max=3, coalesce_slots=1, entry_slots=1, pool_timeout=timeout
    )
    async with serve(settings) as client:
        held = _Held(api_db.admin_dsn, S)
        try:
            first = asyncio.ensure_future(_track(client, users[0], S))
            await _until(lambda: held.waiting() >= 1)
            started = time.monotonic()
            late = await asyncio.gather(*(_track(client, u, S) for u in users[1:]))
            waited = time.monotonic() - started
        finally:
            held.release()
        assert (await first).status_code == 200
    for r in late:
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "PGRST003"
        assert r.headers["Retry-After"] == "1"
    assert timeout <= waited < timeout + 1.0, waited


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
async def test_heartbeats_answer_while_entries_hold_every_connection_they_may(
    api_db: Any, batched: bool
) -> None:
    """A pool of 3 with one heartbeat slot: entries of S held by a lock take the two
    connections everything else may hold (four more wait their turn, and /metrics counts
    them waiting); a heartbeat of Q still answers 204 at once, on the connection kept for
    heartbeats."""
    storm = new_users(api_db.admin_dsn, 6)
    (calm,) = new_users(api_db.admin_dsn, 1)
    settings = _settings(
        api_db.dsn,
        pool_min=3,
        pool_max=3,
        coalesce_slots=1,
        entry_slots=2,
        entry_fill=1,  # each waiting entry may take the second slot (the share is the subject)
        entry_batch=batched,
        pool_timeout=10,
    )
    async with serve(settings) as client:
        session = await _enter(client, calm, Q)
        share = client._transport.app.state.service.database.share
        held = _Held(api_db.admin_dsn, S)
        try:
            stuck = []
            for user in storm:  # one at a time, so that each gets its own batch or call
                stuck.append(asyncio.ensure_future(_track(client, user, S)))
                await asyncio.sleep(0.05)
            await _until(lambda: held.waiting() >= 2)
            started = time.monotonic()
            r = await client.post(
                "/rpc/presence_ping",
                headers=_auth(calm),
                json={"webinar_id": Q, "session_id": session},
            )
            elapsed = time.monotonic() - started
            assert r.status_code == 204, r.text
            assert elapsed < 0.5, elapsed
            assert held.waiting() == 2  # the entries still wait: nothing took their place
            assert share.held == 2
            # The four behind them count as waiting for a connection (queued or in the share).
            assert "eventlive_pool_waiting 4.0" in (await client.get("/metrics")).text
        finally:
            held.release()
        assert [r.status_code for r in await asyncio.gather(*stuck)] == [200] * 6


async def test_a_database_that_is_down_gives_every_queued_entry_503_at_once(
    api_db: Any,
) -> None:
    """The database vanishes (a TCP proxy is cut): concurrent entries get 503 with
    Retry-After within a second, and entries succeed again once it is back."""
    users = new_users(api_db.admin_dsn, 10)
    proxy = TcpProxy(api_db.dsn)
    try:
        async with serve(_settings(proxy.dsn, pool_min=2, pool_max=2)) as client:
            assert (await _track(client, users[0], S)).status_code == 200
            proxy.cut()
            started = time.monotonic()
            answers = await asyncio.gather(*(_track(client, u, S) for u in users[1:]))
            elapsed = time.monotonic() - started
            assert {r.status_code for r in answers} == {503}
            assert all(r.headers["Retry-After"] == "1" for r in answers)
            assert elapsed < 1.0, elapsed
            proxy.restore()
            deadline = time.monotonic() + 15
            while (r := await _track(client, users[1], S)).status_code != 200:
                assert r.status_code == 503
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
    finally:
        proxy.close()


async def test_a_second_batch_waits_for_a_fill_while_one_is_in_flight(api_db: Any) -> None:
    """Two slots, fill 4: S's first entry is held in flight (a lock); three more wait for
    it rather than take the free slot alone (one backend waiting, one batch sent); the
    fourth fills a batch, which then goes out beside it (two waiting). Once the lock goes,
    all five succeed in two batches; idle again, a lone entry goes at once, alone."""
    storm = new_users(api_db.admin_dsn, 5)
    (late,) = new_users(api_db.admin_dsn, 1)
    settings = _settings(
        api_db.dsn, pool_min=3, pool_max=3, coalesce_slots=1, entry_slots=2, entry_fill=4,
        pool_timeout=20,
    )  # fmt: skip
    async with serve(settings) as client:
        batcher = _batcher(client)
        held = _Held(api_db.admin_dsn, S)
        try:
            first = asyncio.ensure_future(_track(client, storm[0], S))
            await _until(lambda: held.waiting() == 1)
            waiting = [asyncio.ensure_future(_track(client, u, S)) for u in storm[1:4]]
            await _until(lambda: batcher.queued == 3)
            await asyncio.sleep(0.2)  # time enough for a second batch to go, were it let
            assert held.waiting() == 1
            assert batcher.queued == 3
            waiting.append(asyncio.ensure_future(_track(client, storm[4], S)))
            await _until(lambda: held.waiting() == 2)
            assert batcher.queued == 0
        finally:
            held.release()
        answers = await asyncio.gather(first, *waiting)
        assert [r.status_code for r in answers] == [200] * 5
        assert (batcher.batches, batcher.entries) == (2, 5)
        r = await _track(client, late, S)
        assert r.status_code == 200
        assert (batcher.batches, batcher.entries) == (3, 6)
