"""Housekeeping (``functions/70_housekeeping.sql``, ``shim/serve/housekeeping.py``):
the sweep ends exactly the sessions not seen within their webinar's presence window
(``expired``) and keeps the rest; a heartbeat in flight during a sweep is neither waited
for nor lost; history past its retention goes in batches; one runner works at a time
(the other returns at once); and the shim's lifespan runs it by itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from shim_support import NO_HUB

from shim.http.settings import Settings
from shim.serve.housekeeping import Housekeeper
from shim.testing import act_as, as_service_role, create_user
from shim.testing.plugin import EventliveDatabase

SHORT, LONG = 201, 202  # heartbeat 120 s (window 180 s) and 600 s (window 900 s)
STEP = "select eventlive.housekeeping_step(%s::interval, %s)"


def _enter(db: psycopg.Connection[Any], user: str, webinar: int) -> str:
    with act_as(db, user, commit=True) as c:
        row = c.execute("select api.track_access(%s)", (webinar,)).fetchone()
    assert row is not None
    return str(row[0]["session_id"])


def _seen(admin: psycopg.Connection[Any], session: str, seconds_ago: int) -> None:
    admin.execute(
        "update eventlive.presence set last_seen_at = now() - make_interval(secs => %s)"
        " where session_id = %s",
        (seconds_ago, session),
    )


def _step(db: psycopg.Connection[Any], batch: int = 1000, retention: str = "30 days") -> Any:
    with as_service_role(db, commit=True) as c:
        row = c.execute(STEP, (retention, batch)).fetchone()
    assert row is not None
    return row[0]


def _sessions(admin: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    rows = admin.execute(
        "select vs.session_id::text, vs.end_reason, vs.ended_at, p.last_seen_at is not null"
        " from eventlive.viewer_sessions as vs"
        " left join eventlive.presence as p on p.session_id = vs.session_id"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture
def webinars(admin_conn: psycopg.Connection[Any]) -> None:
    admin_conn.execute("select api.upsert_webinar(%s, 'Short', heartbeat_seconds => 120)", (SHORT,))
    admin_conn.execute("select api.upsert_webinar(%s, 'Long', heartbeat_seconds => 600)", (LONG,))


@pytest.mark.usefixtures("webinars")
def test_the_sweep_ends_exactly_the_stale_sessions_and_keeps_the_rest(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Seen 1 h and 190 s ago with a 180 s window -> expired, ended at their last
    heartbeat, presence gone; 170 s ago (inside the window), 700 s ago in a webinar whose
    window is 900 s, just now, a session that was left and one that was superseded ->
    untouched. In batches of 1: two batches end two sessions, a third finds nothing."""
    ages = {"hour": (SHORT, 3600), "past": (SHORT, 190), "inside": (SHORT, 170),
            "long": (LONG, 700), "fresh": (SHORT, 0)}  # fmt: skip
    users = {name: str(create_user(admin_conn)) for name in [*ages, "left", "twice"]}
    sessions = {name: _enter(db, users[name], webinar) for name, (webinar, _) in ages.items()}
    for name, (_, seconds) in ages.items():
        _seen(admin_conn, sessions[name], seconds)
    sessions["left"] = _enter(db, users["left"], SHORT)
    with act_as(db, users["left"], commit=True) as c:
        c.execute("select api.presence_leave(%s, %s)", (SHORT, sessions["left"]))
    sessions["superseded"] = _enter(db, users["twice"], SHORT)
    sessions["twice"] = _enter(db, users["twice"], SHORT)
    _seen(admin_conn, sessions["twice"], 60)
    last_seen = dict(
        admin_conn.execute("select session_id::text, last_seen_at from eventlive.presence")
    )
    before = _sessions(admin_conn)

    assert _step(db, batch=1) == {"expired": 1, "pruned": 0}
    assert _step(db, batch=1) == {"expired": 1, "pruned": 0}
    assert _step(db, batch=1) == {"expired": 0, "pruned": 0}

    after = _sessions(admin_conn)
    expired = {sessions["hour"], sessions["past"]}
    assert {s for s, row in after.items() if row[0] == "expired"} == expired
    for s in expired:
        assert after[s] == ("expired", last_seen[s], False)
    assert {s: row for s, row in after.items() if s not in expired} == {
        s: row for s, row in before.items() if s not in expired
    }


@pytest.mark.usefixtures("webinars")
def test_a_heartbeat_in_flight_during_a_sweep_is_not_waited_for_and_not_lost(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
) -> None:
    """A stale viewer's heartbeat has updated its row but not committed when the sweep
    runs: the sweep does not wait for it (lock_timeout 1 s is never hit: SKIP LOCKED)
    and does not end the session; the heartbeat commits, the session stays active, and
    the next sweep keeps it (it is fresh now). A stale viewer next to it is expired."""
    viewer, other = str(create_user(admin_conn)), str(create_user(admin_conn))
    session, stale = _enter(db, viewer, SHORT), _enter(db, other, SHORT)
    _seen(admin_conn, session, 400)
    _seen(admin_conn, stale, 400)
    db.execute("set lock_timeout = '1s'")  # a wait for the heartbeat's row would fail
    db.commit()
    with (
        psycopg.connect(eventlive_db.dsn) as pinger,
        act_as(pinger, viewer, commit=True) as c,  # commits at the end of the block
    ):
        c.execute("select api.presence_ping(%s, %s)", (SHORT, session))
        started = time.monotonic()
        swept = _step(db)
        waited = time.monotonic() - started
    assert swept == {"expired": 1, "pruned": 0}
    assert waited < 1
    after = _sessions(admin_conn)
    assert after[session][0] is None
    assert after[session][2] is True  # present
    assert after[stale][0] == "expired"
    assert _step(db) == {"expired": 0, "pruned": 0}
    with act_as(db, viewer) as c:  # and the viewer's next heartbeat is accepted
        c.execute("select api.presence_ping(%s, %s)", (SHORT, session))


@pytest.mark.usefixtures("webinars")
def test_two_runners_at_once_one_works_and_the_other_returns_at_once(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
) -> None:
    """While one runner's batch is open, another's step returns null at once (it neither
    waits nor works); after the first commits, the work is done exactly once."""
    users = [str(create_user(admin_conn)) for _ in range(3)]
    for user in users:
        _seen(admin_conn, _enter(db, user, SHORT), 3600)
    with psycopg.connect(eventlive_db.dsn) as first, as_service_role(first, commit=True) as c:
        row = c.execute(STEP, ("30 days", 1000)).fetchone()
        assert row is not None
        assert row[0] == {"expired": 3, "pruned": 0}
        started = time.monotonic()
        assert _step(db) is None  # the second runner, meanwhile
        assert time.monotonic() - started < 1
    assert _step(db) == {"expired": 0, "pruned": 0}
    expired = admin_conn.execute(
        "select count(*) from eventlive.viewer_sessions where end_reason = 'expired'"
    ).fetchone()
    assert expired == (3,)


@pytest.mark.usefixtures("webinars")
def test_history_past_its_retention_is_pruned_in_batches_and_the_rest_kept(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """access_log rows older than the retention go, at most a batch per step; newer rows
    stay. Retention under an hour and absurd batches are refused (22023)."""
    admin_conn.execute(
        "insert into eventlive.access_log (webinar_id, user_id, session_id, kind, at)"
        " select %s, gen_random_uuid(), gen_random_uuid(), 'enter', now() - make_interval(days => d)"
        " from generate_series(1, 10) as d",
        (SHORT,),
    )
    assert _step(db, batch=2, retention="5 days 12 hours") == {"expired": 0, "pruned": 2}
    assert _step(db, batch=2, retention="5 days 12 hours") == {"expired": 0, "pruned": 2}
    assert _step(db, batch=2, retention="5 days 12 hours") == {"expired": 0, "pruned": 1}
    assert _step(db, batch=2, retention="5 days 12 hours") == {"expired": 0, "pruned": 0}
    left = admin_conn.execute(
        "select count(*), max(now() - at) < interval '5 days 12 hours' from eventlive.access_log"
    ).fetchone()
    assert left == (5, True)
    for retention, batch in (("59 minutes", 10), ("30 days", 0), ("30 days", 100_001)):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            _step(db, batch=batch, retention=retention)


def test_only_service_role_may_run_housekeeping(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """A viewer cannot end everyone's sessions: housekeeping_step is service_role's."""
    user = str(create_user(admin_conn))
    with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, user) as c:
        c.execute(STEP, ("30 days", 10))


def test_housekeeping_settings_come_from_the_environment() -> None:
    s = Settings.from_env({})
    assert (s.housekeeping_interval, s.history_retention_days, s.housekeeping_batch) == (
        60.0,
        30.0,
        1000,
    )
    s = Settings.from_env(
        {
            "EVENTLIVE_HOUSEKEEPING_INTERVAL": "0",
            "EVENTLIVE_HISTORY_RETENTION_DAYS": "7",
            "EVENTLIVE_HOUSEKEEPING_BATCH": "200",
        }
    )
    assert (s.housekeeping_interval, s.history_retention_days, s.housekeeping_batch) == (
        0.0,
        7.0,
        200,
    )


@pytest.mark.usefixtures("webinars")
def test_two_python_runners_at_once_expire_each_session_once(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
) -> None:
    """Two ``Housekeeper``s (two shim processes) tick together over 30 stale sessions in
    batches of 4: together they expire 30, each session once (a runner that meets the
    other's lock skips to its next tick)."""
    users = [str(create_user(admin_conn)) for _ in range(30)]
    for user in users:
        _seen(admin_conn, _enter(db, user, SHORT), 3600)
    settings = Settings(housekeeping_batch=4)

    async def both() -> list[Any]:
        pools = [
            AsyncConnectionPool(eventlive_db.dsn, min_size=1, max_size=1, open=False)
            for _ in range(2)
        ]
        for pool in pools:
            await pool.open()
        try:
            runners = [Housekeeper(pool, settings) for pool in pools]
            sweeps: list[Any] = []
            while sum(s.expired for s in sweeps) < 30 and len(sweeps) < 40:
                sweeps += await asyncio.gather(*(r.run_once() for r in runners))
            return sweeps
        finally:
            for pool in pools:
                await pool.close()

    sweeps = asyncio.run(both())
    assert sum(s.expired for s in sweeps) == 30
    expired = admin_conn.execute(
        "select count(*) from eventlive.viewer_sessions where end_reason = 'expired'"
    ).fetchone()
    assert expired == (30,)


@pytest.mark.usefixtures("webinars")
def test_the_shims_lifespan_runs_housekeeping_by_itself(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
) -> None:
    """``eventlive serve``'s app, with a 0.2 s interval: a stale session is expired
    without anyone calling anything, and stopping the app stops the runner."""
    from shim.serve.app import create_app

    session = _enter(db, str(create_user(admin_conn)), SHORT)
    _seen(admin_conn, session, 3600)
    settings = Settings(
        database_url=eventlive_db.dsn, pool_min=1, pool_max=2, housekeeping_interval=0.2
    )

    async def serve_a_while() -> None:
        app = create_app(settings, NO_HUB)
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = admin_conn.execute(
                    "select end_reason from eventlive.viewer_sessions where session_id = %s",
                    (uuid.UUID(session),),
                ).fetchone()
                if row == ("expired",):
                    return
                await asyncio.sleep(0.1)

    asyncio.run(serve_a_while())
    row = admin_conn.execute(
        "select end_reason, ended_at < now() - interval '59 minutes'"
        " from eventlive.viewer_sessions where session_id = %s",
        (uuid.UUID(session),),
    ).fetchone()
    assert row == ("expired", True)
    assert dt.timedelta(days=settings.history_retention_days) == dt.timedelta(days=30)
