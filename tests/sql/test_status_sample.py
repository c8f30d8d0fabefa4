"""The status page's database read (functions/75_status.sql): eventlive.status_sample,
called by the sampler as service_role. Present viewers follow eventlive.presence_window
(the rule access_stats and housekeeping apply), entries are the last minute's sessions,
live webinars only, most viewers first, at most 50; service_role alone may call it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from shim.testing import act_as, create_user, freeze_now

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def sample(db: psycopg.Connection[Any]) -> list[tuple[int, str, int, int]]:
    with act_as(db, None, role="service_role") as c:
        return [tuple(r) for r in c.execute("select * from eventlive.status_sample()").fetchall()]


def present(
    admin: psycopg.Connection[Any], webinar: int, seen_ago: float, started_ago: float
) -> None:
    """A registered viewer with a session started and last seen that many seconds ago."""
    uid = create_user(admin)
    session = uuid.uuid4()
    admin.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'self')",
        (webinar, uid),
    )
    admin.execute(
        "insert into eventlive.viewer_sessions (session_id, webinar_id, user_id, started_at)"
        " values (%s, %s, %s, %s)",
        (session, webinar, uid, T0 - dt.timedelta(seconds=started_ago)),
    )
    admin.execute(
        "insert into eventlive.presence (webinar_id, user_id, session_id, started_at, last_seen_at)"
        " values (%s, %s, %s, %s, %s)",
        (
            webinar,
            uid,
            session,
            T0 - dt.timedelta(seconds=started_ago),
            T0 - dt.timedelta(seconds=seen_ago),
        ),
    )


def test_viewers_follow_the_presence_window_and_entries_the_last_minute(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Heartbeat 60 s: the window is 90 s (1.5 heartbeats). Seen 89 s ago counts, 91 s
    ago does not; a session started 59 s ago is an entry, 61 s ago is not. A draft or
    ended webinar is not listed; the larger audience comes first."""
    freeze_now(admin_conn, T0)
    for wid, state in ((71, "live"), (72, "live"), (73, "ended"), (74, "draft")):
        admin_conn.execute(
            "select api.upsert_webinar(%s, %s, %s, heartbeat_seconds => 60)",
            (wid, f"Webinar {wid}", state),
        )
    present(admin_conn, 71, seen_ago=89, started_ago=59)
    present(admin_conn, 71, seen_ago=91, started_ago=61)
    for _ in range(2):
        present(admin_conn, 72, seen_ago=10, started_ago=3600)
    present(admin_conn, 73, seen_ago=1, started_ago=1)
    assert sample(db) == [(72, "Webinar 72", 2, 0), (71, "Webinar 71", 1, 1)]
    # the window is the SQL helper's: a longer window (here, a redefined one) counts more
    admin_conn.execute(
        "create or replace function eventlive.presence_window(heartbeat_seconds integer)"
        " returns interval language sql immutable set search_path = ''"
        " as $$ select pg_catalog.make_interval(secs => heartbeat_seconds * 2) $$"
    )
    assert sample(db) == [(71, "Webinar 71", 2, 1), (72, "Webinar 72", 2, 0)]


def test_at_most_50_webinars_most_viewers_first(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    freeze_now(admin_conn, T0)
    admin_conn.execute(
        "insert into eventlive.webinars (id, title, state) select n, 'w', 'live'"
        " from generate_series(1, 60) as n"
    )
    present(admin_conn, 60, seen_ago=1, started_ago=1)
    rows = sample(db)
    assert len(rows) == 50
    assert rows[0] == (60, "w", 1, 1)
    assert [r[0] for r in rows[1:]] == list(range(1, 50))


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("service_role", True), ("authenticated", False), ("anon", False), ("authenticator", False)],
)
def test_only_service_role_may_call_it(
    admin_conn: psycopg.Connection[Any], role: str, allowed: bool
) -> None:
    got = admin_conn.execute(
        "select has_function_privilege(%s, 'eventlive.status_sample()', 'execute'),"
        " obj_description('eventlive.status_sample()'::regprocedure, 'pg_proc') <> ''",
        (role,),
    ).fetchone()
    assert got == (allowed, True)
