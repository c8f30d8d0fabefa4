"""Housekeeping (``functions/70_housekeeping.sql``, ``shim/serve/housekeeping.py``):
the sweep ends exactly the sessions not seen within their webinar's presence window
(``expired``) and keeps the rest; a heartbeat in flight during a sweep is neither waited
for nor lost; history past its retention goes in batches; the registration counters'
deltas are folded into the counters with every count exact before, during and after,
also while entries race the fold; one runner works at a time (the other returns at
once); and the shim's lifespan runs it by itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
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
    untouched. In batches of 1: two batches end two sessions, a third finds none (each
    also folds one of the seven registrations' counter deltas)."""
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

    assert _step(db, batch=1) == {"expired": 1, "pruned": 0, "folded": 1}
    assert _step(db, batch=1) == {"expired": 1, "pruned": 0, "folded": 1}
    assert _step(db, batch=1) == {"expired": 0, "pruned": 0, "folded": 1}

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
    assert swept == {"expired": 1, "pruned": 0, "folded": 2}
    assert waited < 1
    after = _sessions(admin_conn)
    assert after[session][0] is None
    assert after[session][2] is True  # present
    assert after[stale][0] == "expired"
    assert _step(db) == {"expired": 0, "pruned": 0, "folded": 0}
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
        assert row[0] == {"expired": 3, "pruned": 0, "folded": 3}
        started = time.monotonic()
        assert _step(db) is None  # the second runner, meanwhile
        assert time.monotonic() - started < 1
    assert _step(db) == {"expired": 0, "pruned": 0, "folded": 0}
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
    steps = [_step(db, batch=2, retention="5 days 12 hours") for _ in range(4)]
    assert steps == [{"expired": 0, "pruned": n, "folded": 0} for n in (2, 2, 1, 0)]
    left = admin_conn.execute(
        "select count(*), max(now() - at) < interval '5 days 12 hours' from eventlive.access_log"
    ).fetchone()
    assert left == (5, True)
    for retention, batch in (("59 minutes", 10), ("30 days", 0), ("30 days", 100_001)):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            _step(db, batch=batch, retention=retention)


def _counts(admin: psycopg.Connection[Any], webinar: int, staff: str) -> tuple[Any, Any]:
    """In one snapshot (repeatable read): the registrations as they are, and as
    access_stats counts them (counters plus unfolded deltas), as the webinar's staff."""
    admin.execute("begin isolation level repeatable read")
    try:
        actual = admin.execute(
            "select count(*), count(first_entered_at) from eventlive.registrations"
            " where webinar_id = %s",
            (webinar,),
        ).fetchone()
        admin.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": staff, "role": "authenticated"}),),
        )
        row = admin.execute("select api.access_stats(%s)", (webinar,)).fetchone()
    finally:
        admin.execute("rollback")
    assert row is not None
    return actual, (row[0]["registrations"], row[0]["unique_viewers"])


def _deltas(admin: psycopg.Connection[Any]) -> int:
    row = admin.execute("select count(*) from eventlive.webinar_counter_deltas").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.usefixtures("webinars")
def test_the_fold_moves_each_delta_into_the_counters_once_and_the_counts_never_change(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Entries (+1 registration, +1 viewer), a registration without entry (+1, 0), its
    entry later (0, +1) and a deletion (-1, -1): 8 deltas, folded 3 per step (3, 3, 2,
    then none left); access_stats' counts equal the registrations' before, after each
    step and at the end, when no delta is left and webinar_counters holds the sums."""
    staff = str(create_user(admin_conn))
    admin_conn.execute("select api.set_staff(%s, %s)", (SHORT, staff))
    users = [str(create_user(admin_conn)) for _ in range(6)]
    for user in users[:5]:
        _enter(db, user, SHORT)
    with act_as(db, users[5], commit=True) as c:
        c.execute("select api.register(%s)", (SHORT,))
    _enter(db, users[5], SHORT)
    admin_conn.execute(
        "delete from eventlive.registrations where webinar_id = %s and user_id = %s",
        (SHORT, users[0]),
    )
    assert _deltas(admin_conn) == 8
    actual, counted = _counts(admin_conn, SHORT, staff)
    assert actual == counted == (5, 5)
    folded = []
    for _ in range(4):
        folded.append(_step(db, batch=3)["folded"])
        assert _counts(admin_conn, SHORT, staff) == (actual, actual)
    assert folded == [3, 3, 2, 0]
    assert _deltas(admin_conn) == 0
    counters = admin_conn.execute(
        "select sum(registrations), sum(unique_viewers) from eventlive.webinar_counters"
        " where webinar_id = %s",
        (SHORT,),
    ).fetchone()
    assert counters == actual


@pytest.mark.usefixtures("webinars")
def test_the_fold_leaves_a_webinar_being_deleted_and_does_not_wait_for_it(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
) -> None:
    """A webinar's delete is in flight (its row locked, its cascade not yet committed):
    the fold takes the other webinar's deltas at once (lock_timeout 1 s never hit) and
    leaves the deleted one's, which go with it when the delete commits."""
    for webinar in (SHORT, LONG):
        for _ in range(2):
            _enter(db, str(create_user(admin_conn)), webinar)
    db.execute("set lock_timeout = '1s'")
    db.commit()
    with psycopg.connect(eventlive_db.admin_dsn) as deleter:
        deleter.execute("delete from eventlive.webinars where id = %s", (LONG,))
        started = time.monotonic()
        assert _step(db)["folded"] == 2
        assert time.monotonic() - started < 1
        deleter.commit()
    assert _deltas(admin_conn) == 0
    counters = admin_conn.execute(
        "select webinar_id, sum(registrations) from eventlive.webinar_counters group by 1"
    ).fetchall()
    assert counters == [(SHORT, 2)]


@pytest.mark.usefixtures("webinars")
@pytest.mark.timeout(120)
def test_folds_racing_entries_and_deletions_keep_every_count_exact(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
) -> None:
    """For about two seconds, two writers commit entries, registrations, later entries
    and deletions while a runner folds in batches of 5 as fast as it can and a reader
    compares, in one snapshot each time, access_stats' counts with the registrations:
    they are equal in every snapshot, the fold did fold, and nothing is lost or counted
    twice at the end."""
    staff = str(create_user(admin_conn))
    admin_conn.execute("select api.set_staff(%s, %s)", (SHORT, staff))
    users = [
        str(r[0])
        for r in admin_conn.execute(
            "insert into auth.users (id) select gen_random_uuid() from generate_series(1, 400)"
            " returning id"
        ).fetchall()
    ]
    stop = threading.Event()
    errors: list[BaseException] = []
    folded: list[int] = []

    def writer(mine: list[str]) -> None:
        with (
            psycopg.connect(eventlive_db.dsn) as conn,
            psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as admin,
        ):
            for n, user in enumerate(mine):
                if stop.is_set():
                    return
                if n % 3 == 0:  # registers first, enters later (0, +1)
                    with act_as(conn, user, commit=True) as c:
                        c.execute("select api.register(%s)", (SHORT,))
                _enter(conn, user, SHORT)
                if n % 4 == 1:
                    admin.execute(
                        "delete from eventlive.registrations where webinar_id = %s"
                        " and user_id = %s",
                        (SHORT, user),
                    )

    def runner() -> None:
        with psycopg.connect(eventlive_db.dsn) as conn:
            while not stop.is_set():
                folded.append(_step(conn, batch=5)["folded"])

    def guarded(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted empty
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(writer, users[0::2])),
        threading.Thread(target=guarded, args=(writer, users[1::2])),
        threading.Thread(target=guarded, args=(runner,)),
    ]
    for t in threads:
        t.start()
    snapshots, differ = 0, []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not stop.is_set():
        actual, counted = _counts(admin_conn, SHORT, staff)
        snapshots += 1
        if actual != counted:
            differ.append((actual, counted))
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert differ == []
    assert snapshots > 20
    assert sum(folded) > 50
    actual, counted = _counts(admin_conn, SHORT, staff)
    assert actual == counted
    assert actual[0] > 50


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
    assert sum(s.folded for s in sweeps) == 30  # the 30 registrations' deltas, each once
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
