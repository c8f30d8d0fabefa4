"""No error escapes under concurrency: real parallel connections (one psycopg connection
per thread, as ``authenticator`` switching roles like the shim), released together by a
barrier so that the calls really collide in the database."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from test_api_behaviour import AUTO, call
from test_api_hot_path import COUNTED

from shim.testing import act_as

Task = Callable[[psycopg.Connection[Any]], Any]


def free_connection_slots(admin: psycopg.Connection[Any]) -> int:
    row = admin.execute(
        "select current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - (select count(*) from pg_stat_activity)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def run_in_waves(dsn: str, waves: Sequence[Sequence[Task]], workers: int) -> list[BaseException]:
    """Run each wave's tasks at once, one task per worker connection; waves in order.

    Every worker waits on a barrier before each wave, so the tasks of a wave start
    together. Returns the exceptions raised (the tests expect none).
    """
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)
    conns = [psycopg.connect(dsn) for _ in range(workers)]

    def worker(index: int) -> None:
        for wave in waves:
            barrier.wait(timeout=60)
            if index < len(wave):
                try:
                    wave[index](conns[index])
                except BaseException as exc:  # noqa: BLE001 - collected and asserted empty
                    with lock:
                        errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        for c in conns:
            c.close()
    return errors


def chunk(tasks: list[Task], size: int) -> list[list[Task]]:
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def track(user: uuid.UUID, session: str | None = None) -> Task:
    args: dict[str, Any] = {"webinar_id": AUTO}
    if session is not None:
        args["session_id"] = session
    return lambda conn: call(conn, "track_access", args, user, commit=True)


def bulk_users(admin: psycopg.Connection[Any], n: int) -> list[uuid.UUID]:
    rows = admin.execute(
        "insert into auth.users (id) select gen_random_uuid() from generate_series(1, %s) returning id",
        (n,),
    ).fetchall()
    return [r[0] for r in rows]


def one_active_session_per_viewer(admin: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Viewers whose sessions, presence and registration disagree (expected: none)."""
    return admin.execute(
        """
        select r.user_id, count(vs.session_id) filter (where vs.ended_at is null) as active,
               p.session_id as present
        from eventlive.registrations as r
        left join eventlive.viewer_sessions as vs on vs.webinar_id = r.webinar_id and vs.user_id = r.user_id
        left join eventlive.presence as p on p.webinar_id = r.webinar_id and p.user_id = r.user_id
        where r.webinar_id = %s
        group by r.user_id, p.session_id
        having count(vs.session_id) filter (where vs.ended_at is null) <> 1
            or p.session_id is distinct from max(vs.session_id::text) filter (where vs.ended_at is null)::uuid
        """,
        (AUTO,),
    ).fetchall()


@pytest.fixture
def workers(admin_conn: psycopg.Connection[Any]) -> int:
    admin_conn.execute("select api.upsert_webinar(%s, 'Join storm')", (AUTO,))
    return max(2, min(200, free_connection_slots(admin_conn) - 10))


@pytest.mark.timeout(300)
def test_200_concurrent_entries_of_one_viewer_leave_one_registration_and_one_active_session(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, workers: int
) -> None:
    (viewer,) = bulk_users(admin_conn, 1)
    errors = run_in_waves(
        eventlive_db.dsn, chunk([track(viewer) for _ in range(200)], workers), workers
    )
    sessions = admin_conn.execute(
        "select count(*), count(*) filter (where ended_at is null),"
        " count(*) filter (where end_reason = 'superseded')"
        " from eventlive.viewer_sessions where user_id = %s",
        (viewer,),
    ).fetchone()
    registrations = admin_conn.execute(
        "select count(*) from eventlive.registrations where user_id = %s", (viewer,)
    ).fetchone()
    assert errors == []
    assert registrations == (1,)
    assert sessions == (200, 1, 199)
    assert one_active_session_per_viewer(admin_conn) == []


@pytest.mark.timeout(300)
def test_2000_viewers_with_a_fifth_entering_twice_at_once_get_no_error(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, workers: int
) -> None:
    viewers = bulk_users(admin_conn, 2000)
    doubles = set(viewers[::5])  # 20 %
    waves: list[list[Task]] = []
    wave: list[Task] = []
    for v in viewers:
        calls = [track(v), track(v)] if v in doubles else [track(v)]
        if len(wave) + len(calls) > workers:
            waves.append(wave)
            wave = []
        wave += calls  # a viewer's two calls sit in the same wave: released together
    waves.append(wave)
    errors = run_in_waves(eventlive_db.dsn, waves, workers)
    counts = admin_conn.execute(
        "select count(*), count(distinct user_id) from eventlive.registrations where webinar_id = %s",
        (AUTO,),
    ).fetchone()
    counters = admin_conn.execute(COUNTED, (AUTO, AUTO)).fetchone()
    assert [type(e).__name__ + ": " + str(e) for e in errors][:5] == []
    assert counts == (2000, 2000)
    assert counters == (2000, 2000)
    assert one_active_session_per_viewer(admin_conn) == []


@pytest.mark.timeout(300)
def test_ping_racing_leave_and_a_new_entry_ends_in_one_consistent_state(
    admin_conn: psycopg.Connection[Any],
    eventlive_db: Any,
    db: psycopg.Connection[Any],
    ping_path: str,
) -> None:
    admin_conn.execute("select api.upsert_webinar(%s, 'Race')", (AUTO,))
    (viewer,) = bulk_users(admin_conn, 1)
    documented = {("PT409", "session_superseded"), ("PT409", "session_ended")}
    undocumented: list[str] = []
    for _ in range(40):
        old = call(db, "track_access", {"webinar_id": AUTO}, viewer, commit=True)["session_id"]
        # make the ping a real write (outside the throttle window)
        admin_conn.execute(
            "update eventlive.presence set last_seen_at = now() - interval '1 minute'"
        )
        results: dict[str, Any] = {}

        def ping(conn: psycopg.Connection[Any], old: str = old) -> None:
            try:
                call(
                    conn,
                    "presence_ping",
                    {"webinar_id": AUTO, "session_id": old},
                    viewer,
                    commit=True,
                )
            except psycopg.Error as exc:
                if (exc.sqlstate, exc.diag.message_detail) not in documented:
                    raise

        def leave(conn: psycopg.Connection[Any], old: str = old) -> None:
            call(
                conn, "presence_leave", {"webinar_id": AUTO, "session_id": old}, viewer, commit=True
            )

        def enter(conn: psycopg.Connection[Any], results: dict[str, Any] = results) -> None:
            results["new"] = call(conn, "track_access", {"webinar_id": AUTO}, viewer, commit=True)[
                "session_id"
            ]

        errors = run_in_waves(eventlive_db.dsn, [[ping, leave, enter]], 3)
        undocumented += [f"{type(e).__name__}: {e}" for e in errors]
        state = admin_conn.execute(
            """
            select p.session_id::text,
                   (select array_agg(session_id::text) from eventlive.viewer_sessions
                    where user_id = %(u)s and ended_at is null),
                   (select end_reason from eventlive.viewer_sessions where session_id = %(old)s)
            from eventlive.presence as p where p.user_id = %(u)s
            """,
            {"u": viewer, "old": old},
        ).fetchone()
        # the new entry always wins: it is present and the only active session; the old
        # one ended, by leave or by supersession, whichever came first
        assert state is not None
        assert state[0] == results["new"]
        assert state[1] == [results["new"]]
        assert state[2] in ("left", "superseded")
    assert undocumented == []
    with act_as(db, viewer) as c:
        assert c.execute("select count(*) from eventlive.presence").fetchone() == (1,)
