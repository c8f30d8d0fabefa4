"""What the hot-path, admin and management functions do beyond their error table:
sessions and supersession, the ping throttle, durability settings, the per-minute
presence minutes behind access_stats, keyset pagination, profile visibility and idempotency."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from test_api_behaviour import AUTO, World, build_world, call

from shim.testing import act_as, as_service_role, create_user, freeze_now

T0 = dt.datetime(2026, 2, 6, 13, 30, 5, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _webinar(admin: psycopg.Connection[Any], wid: int = AUTO, entry: str = "auto") -> None:
    admin.execute("select api.upsert_webinar(%s, 'Hot path', 'live', %s)", (wid, entry))


def _presence(admin: psycopg.Connection[Any], user: uuid.UUID) -> tuple[Any, ...] | None:
    return admin.execute(
        "select session_id, last_seen_at, xmin::text from eventlive.presence"
        " where webinar_id = %s and user_id = %s",
        (AUTO, user),
    ).fetchone()


def test_track_access_returns_the_documented_fields_and_auto_registers_once(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    first = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)
    again = call(
        db,
        "track_access",
        {"webinar_id": AUTO, "session_id": first["session_id"]},
        user,
        commit=True,
    )
    assert set(first) >= {
        "session_id",
        "registered",
        "auto_registered",
        "superseded_session_id",
        "heartbeat_seconds",
        "track_seconds",
        "first_ping_in",
    }
    assert (first["registered"], first["auto_registered"], first["superseded_session_id"]) == (
        True,
        True,
        None,
    )
    assert (first["heartbeat_seconds"], first["track_seconds"]) == (120, 300)
    assert (again["session_id"], again["auto_registered"], again["superseded_session_id"]) == (
        first["session_id"],
        False,
        None,
    )
    source = admin_conn.execute(
        "select source from eventlive.registrations where webinar_id = %s and user_id = %s",
        (AUTO, user),
    ).fetchall()
    kinds = admin_conn.execute(
        "select kind from eventlive.access_log where user_id = %s order by id", (user,)
    ).fetchall()
    assert source == [("auto",)]
    assert kinds == [("enter",), ("track",)]


def test_first_ping_in_is_spread_over_the_whole_heartbeat_interval(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    draws = [
        call(db, "track_access", {"webinar_id": AUTO}, user)["first_ping_in"] for _ in range(200)
    ]
    assert all(1 <= d <= 120 for d in draws)
    # uniform over 1..120: 200 draws all above 30 or all below 90 has odds ~1e-25
    assert min(draws) <= 30
    assert max(draws) >= 90
    assert len(set(draws)) > 50


def test_a_new_session_supersedes_the_old_one_and_names_it(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    old = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)["session_id"]
    new = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)
    assert new["superseded_session_id"] == old
    rows = admin_conn.execute(
        "select session_id::text, end_reason, superseded_by::text from eventlive.viewer_sessions"
        " where user_id = %s order by started_at, end_reason nulls last",
        (user,),
    ).fetchall()
    assert sorted(rows, key=str) == sorted(
        [(old, "superseded", new["session_id"]), (new["session_id"], None, None)], key=str
    )
    presence = _presence(admin_conn, user)
    assert presence is not None
    assert str(presence[0]) == new["session_id"]


def test_presence_ping_skips_the_write_inside_the_throttle_window(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], ping_path: str
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    freeze_now(admin_conn, at(0))
    session = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)["session_id"]
    written = _presence(admin_conn, user)
    freeze_now(admin_conn, at(29))  # throttle = heartbeat / 4 = 30 s
    call(db, "presence_ping", {"webinar_id": AUTO, "session_id": session}, user, commit=True)
    throttled = _presence(admin_conn, user)
    freeze_now(admin_conn, at(31))
    call(db, "presence_ping", {"webinar_id": AUTO, "session_id": session}, user, commit=True)
    rewritten = _presence(admin_conn, user)
    assert written is not None
    assert throttled is not None
    assert rewritten is not None
    assert throttled == written  # same last_seen_at and same tuple (xmin): nothing written
    assert rewritten[1] == at(31)


def test_heartbeats_skip_the_wal_flush_but_entries_stay_durable(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    session = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)["session_id"]
    with act_as(db, user) as c:
        c.execute("select api.track_access(%s)", (AUTO,))
        after_track = c.execute("show synchronous_commit").fetchone()
    admin_conn.execute(
        "update eventlive.presence set last_seen_at = last_seen_at - interval '1 hour' where user_id = %s",
        (user,),
    )
    with act_as(db, user) as c:
        c.execute("select api.presence_ping(%s, %s)", (AUTO, session))
        after_ping = c.execute("show synchronous_commit").fetchone()
    with act_as(db, user) as c:
        after_nothing = c.execute("show synchronous_commit").fetchone()
    assert (after_track, after_ping, after_nothing) == (("on",), ("off",), ("on",))


def test_a_viewer_whose_registration_is_removed_cannot_keep_pinging(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], ping_path: str
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    session = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)["session_id"]
    admin_conn.execute("delete from eventlive.registrations where user_id = %s", (user,))
    admin_conn.execute(
        "update eventlive.presence set last_seen_at = '2020-01-01' where user_id = %s", (user,)
    )
    with pytest.raises(psycopg.Error) as refused:
        call(db, "presence_ping", {"webinar_id": AUTO, "session_id": session}, user)
    assert (refused.value.sqlstate, refused.value.diag.message_detail) == (
        "PT403",
        "not_registered",
    )


def test_presence_leave_ends_the_session_at_once_and_is_idempotent(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    session = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)["session_id"]
    for _ in range(2):
        call(db, "presence_leave", {"webinar_id": AUTO, "session_id": session}, user, commit=True)
    assert _presence(admin_conn, user) is None
    ended = admin_conn.execute(
        "select end_reason from eventlive.viewer_sessions where session_id = %s", (session,)
    ).fetchall()
    leaves = admin_conn.execute(
        "select count(*) from eventlive.access_log where session_id = %s and kind = 'leave'",
        (session,),
    ).fetchone()
    assert ended == [("left",)]
    assert leaves == (1,)


def test_access_stats_reports_presence_minutes_and_counters(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    staff = create_user(admin_conn)
    admin_conn.execute("select api.set_staff(%s, %s)", (AUTO, staff))
    viewers = [create_user(admin_conn) for _ in range(3)]
    registered_only = create_user(admin_conn)
    admin_conn.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'service')",
        (AUTO, registered_only),
    )
    sessions = {}
    freeze_now(admin_conn, at(0))  # minute 13:30
    for v in viewers:
        sessions[v] = call(db, "track_access", {"webinar_id": AUTO}, v, commit=True)["session_id"]
    freeze_now(admin_conn, at(60))  # minute 13:31: the first ping samples 3 viewers
    call(
        db,
        "presence_ping",
        {"webinar_id": AUTO, "session_id": sessions[viewers[0]]},
        viewers[0],
        commit=True,
    )
    call(
        db,
        "presence_leave",
        {"webinar_id": AUTO, "session_id": sessions[viewers[1]]},
        viewers[1],
        commit=True,
    )
    freeze_now(admin_conn, at(120))  # minute 13:32: 2 left present
    call(
        db,
        "presence_ping",
        {"webinar_id": AUTO, "session_id": sessions[viewers[0]]},
        viewers[0],
        commit=True,
    )
    stats = call(db, "access_stats", {"webinar_id": AUTO}, staff)
    start = T0.replace(second=0)
    # 13:30 was sampled by the first entry (1 present), 13:31 by the first ping (3),
    # 13:32 after one viewer left (2)
    assert [(dt.datetime.fromisoformat(p["minute"]), p["viewers"]) for p in stats["timeline"]] == [
        (start, 1),
        (start + dt.timedelta(minutes=1), 3),
        (start + dt.timedelta(minutes=2), 2),
    ]
    assert stats["current_participants"] == 2  # present now (as the 13:32 sample says)
    assert (stats["peak_participants"], dt.datetime.fromisoformat(stats["peak_at"])) == (
        3,
        T0.replace(second=0) + dt.timedelta(minutes=1),
    )
    assert (stats["registrations"], stats["unique_viewers"]) == (4, 3)
    freeze_now(admin_conn, at(120 + 181))  # no heartbeat within 1.5 heartbeats: nobody present
    assert call(db, "access_stats", {"webinar_id": AUTO}, staff)["current_participants"] == 0


def test_access_stats_counts_the_viewers_present_now_even_in_the_first_minute(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """current_participants is the count now, not the minute's sample: three viewers who
    entered in the webinar's first minute are all counted at once, while the minute's
    sample (taken by the first entry: 1) stays in the timeline as it was. sampled_at is
    when the count was made; the peak is the count now while no minute sample is higher
    (never below current_participants). A viewer who left is not counted; once nobody
    was seen within the presence window, nobody is, and the peak is the samples' again."""
    _webinar(admin_conn)
    staff = create_user(admin_conn)
    admin_conn.execute("select api.set_staff(%s, %s)", (AUTO, staff))
    viewers = [create_user(admin_conn) for _ in range(3)]
    freeze_now(admin_conn, at(0))  # minute 13:30
    sessions = [
        call(db, "track_access", {"webinar_id": AUTO}, v, commit=True)["session_id"]
        for v in viewers
    ]

    def stats_at(seconds: float) -> tuple[Any, ...]:
        freeze_now(admin_conn, at(seconds))
        s = call(db, "access_stats", {"webinar_id": AUTO}, staff)
        timeline = [(dt.datetime.fromisoformat(p["minute"]), p["viewers"]) for p in s["timeline"]]
        assert timeline == [(T0.replace(second=0), 1)]
        assert dt.datetime.fromisoformat(s["sampled_at"]) == at(seconds)
        return s["current_participants"], s["peak_participants"], s["peak_at"]

    assert stats_at(20) == (3, 3, at(20).isoformat())
    call(
        db,
        "presence_leave",
        {"webinar_id": AUTO, "session_id": sessions[0]},
        viewers[0],
        commit=True,
    )
    assert stats_at(30) == (2, 2, at(30).isoformat())
    # 200 s after the entries, no heartbeat since: outside the 180 s presence window
    assert stats_at(200) == (0, 1, T0.replace(second=0).isoformat())


def test_access_stats_is_stable_so_the_shim_may_cache_it(
    admin_conn: psycopg.Connection[Any],
) -> None:
    volatility = admin_conn.execute(
        "select provolatile from pg_proc where oid = 'api.access_stats(bigint)'::regprocedure"
    ).fetchone()
    assert volatility == ("s",)


# The counts as access_stats sums them: the folded counters plus the deltas (sql/0011).
COUNTED = (
    "select sum(registrations), sum(unique_viewers) from ("
    " select registrations, unique_viewers from eventlive.webinar_counters where webinar_id = %s"
    " union all"
    " select registrations, unique_viewers from eventlive.webinar_counter_deltas where webinar_id = %s"
    ") as c"
)


def test_registration_counters_follow_every_insert_entry_and_delete(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    users = [create_user(admin_conn) for _ in range(20)]
    for u in users[:10]:
        call(db, "track_access", {"webinar_id": AUTO}, u, commit=True)
    for u in users[10:]:
        call(db, "register", {"webinar_id": AUTO}, u, commit=True)
    # housekeeping's fold in the middle: what follows is counted on top of its sums
    admin_conn.execute("select eventlive.fold_counter_deltas(1000)")
    for u in users[15:]:
        call(db, "track_access", {"webinar_id": AUTO}, u, commit=True)
    admin_conn.execute("delete from eventlive.registrations where user_id = any(%s)", (users[:2],))
    with as_service_role(db, commit=True) as c:  # direct DML by service_role counts too
        c.execute(
            "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'service')",
            (AUTO, users[0]),
        )
    counted = admin_conn.execute(COUNTED, (AUTO, AUTO)).fetchone()
    actual = admin_conn.execute(
        "select count(*), count(first_entered_at) from eventlive.registrations where webinar_id = %s",
        (AUTO,),
    ).fetchone()
    assert counted == actual == (19, 13)


def test_participants_pages_through_current_viewers_by_keyset(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    staff = create_user(admin_conn)
    admin_conn.execute("select api.set_staff(%s, %s)", (AUTO, staff))
    viewers = [create_user(admin_conn) for _ in range(5)]
    stale = create_user(admin_conn)
    for v in [*viewers, stale]:
        call(db, "track_access", {"webinar_id": AUTO}, v, commit=True)
    admin_conn.execute(
        "update eventlive.presence set last_seen_at = now() - interval '1 hour' where user_id = %s",
        (stale,),
    )
    admin_conn.execute(
        "insert into eventlive.profiles (user_id, display_name) values (%s, 'Ada')", (viewers[0],)
    )
    seen: list[str] = []
    after = None
    pages = []
    while True:
        page = call(db, "participants", {"webinar_id": AUTO, "after": after, "max_rows": 2}, staff)
        pages.append(len(page["participants"]))
        seen += [p["user_id"] for p in page["participants"]]
        after = page["next_after"]
        if after is None:
            break
    assert pages == [2, 2, 1]
    assert seen == sorted(str(v) for v in viewers)
    named = call(db, "participants", {"webinar_id": AUTO}, staff)["participants"]
    assert {p["user_id"]: p["display_name"] for p in named}[str(viewers[0])] == "Ada"


def test_profiles_batch_shows_own_and_staffed_registrants_profiles_only(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    world: World = build_world(admin_conn, db)
    for user, name in [
        (world.viewer, "Viewer"),
        (world.stranger, "Stranger"),
        (world.staff, "Staff"),
    ]:
        admin_conn.execute(
            "insert into eventlive.profiles (user_id, display_name) values (%s, %s)", (user, name)
        )
    ids = [world.viewer, world.stranger, world.staff, uuid.uuid4()]

    def names(user: uuid.UUID | None, role: str = "authenticated") -> list[str]:
        return sorted(
            p["display_name"]
            for p in call(db, "profiles_batch", {"user_ids": ids}, user, role=role)
        )

    assert names(world.staff) == ["Staff", "Viewer"]
    assert names(world.viewer) == ["Viewer"]
    assert names(world.stranger) == ["Stranger"]
    assert names(None, "service_role") == ["Staff", "Stranger", "Viewer"]


def test_register_and_upsert_webinar_are_idempotent(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    made = [
        call(
            db,
            "upsert_webinar",
            {"webinar_id": 7, "title": f"T{i}"},
            None,
            role="service_role",
            commit=True,
        )
        for i in range(2)
    ]
    assert [(m["created"], m["title"]) for m in made] == [(True, "T0"), (False, "T1")]
    user = create_user(admin_conn)
    regs = [call(db, "register", {"webinar_id": 7}, user, commit=True) for _ in range(2)]
    assert [(r["created"], r["source"]) for r in regs] == [(True, "self"), (False, "self")]


def rows_written_by(
    db: psycopg.Connection[Any], user: uuid.UUID, statement: str, params: tuple[Any, ...]
) -> int:
    """Rows the statement inserted, updated or deleted in eventlive, run as ``user``: the
    difference of this backend's not-yet-flushed table statistics around the call."""
    count = (
        "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int"
        " from pg_stat_xact_user_tables where schemaname = 'eventlive'"
    )
    with act_as(db, user) as c:
        before = c.execute(count).fetchone()
        c.execute(statement, params)
        after = c.execute(count).fetchone()
    assert before is not None
    assert after is not None
    return int(after[0]) - int(before[0])


def test_a_heartbeat_writes_one_row_and_a_throttled_one_none(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    _webinar(admin_conn)
    user = create_user(admin_conn)
    freeze_now(admin_conn, at(0))  # 13:30:05; the entry samples minute 13:30
    session = call(db, "track_access", {"webinar_id": AUTO}, user, commit=True)["session_id"]
    ping = "select api.presence_ping(%s, %s)"
    freeze_now(admin_conn, at(40))  # same minute, outside the 30 s throttle
    writing = rows_written_by(db, user, ping, (AUTO, session))
    freeze_now(admin_conn, at(20))  # inside the throttle
    throttled = rows_written_by(db, user, ping, (AUTO, session))
    reconfirm = rows_written_by(db, user, "select api.track_access(%s, %s)", (AUTO, session))
    assert (writing, throttled) == (1, 0)
    assert reconfirm == 2  # presence + the access record
