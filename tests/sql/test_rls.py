"""Direct table reads (supabase-js ``.from(...)``) under RLS as real API roles: viewers
see their own rows, staff their webinars' rows, anon nothing; writes only through api."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from test_api_behaviour import AUTO, DRAFT, ENDED, REGISTERED_ONLY, World, build_world, call

from shim.testing import act_as, as_anon

PER_VIEWER_TABLES = ["registrations", "viewer_sessions", "presence", "access_log"]


@pytest.fixture
def world(admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> World:
    w = build_world(admin_conn, db)
    # a second viewer in AUTO, so "own rows only" has rows to hide
    call(db, "track_access", {"webinar_id": AUTO}, w.stranger, commit=True)
    # a viewer of ENDED (entered while it was live), which AUTO's staff must not see
    admin_conn.execute("update eventlive.webinars set state = 'live' where id = %s", (ENDED,))
    call(db, "track_access", {"webinar_id": ENDED}, w.stranger, commit=True)
    admin_conn.execute("update eventlive.webinars set state = 'ended' where id = %s", (ENDED,))
    return w


def visible(
    db: psycopg.Connection[Any], user: Any, table: str, column: str = "user_id"
) -> set[Any]:
    with act_as(db, user) as c:
        query = sql.SQL("select {} from eventlive.{}").format(
            sql.Identifier(column), sql.Identifier(table)
        )
        return {r[0] for r in c.execute(query).fetchall()}


@pytest.mark.parametrize("table", PER_VIEWER_TABLES)
def test_a_viewer_sees_only_their_own_rows(
    db: psycopg.Connection[Any], world: World, table: str
) -> None:
    assert visible(db, world.viewer, table) == {world.viewer}
    assert visible(db, world.stranger, table) == {world.stranger}


@pytest.mark.parametrize("table", PER_VIEWER_TABLES)
def test_staff_see_the_rows_of_their_webinars_only(
    db: psycopg.Connection[Any], world: World, table: str
) -> None:
    assert visible(db, world.staff, table, "webinar_id") <= {AUTO, REGISTERED_ONLY}
    assert visible(db, world.staff, table) >= {world.viewer, world.stranger}
    assert visible(db, world.other_staff, table, "webinar_id") == {ENDED}


@pytest.mark.parametrize(
    "table",
    [
        *PER_VIEWER_TABLES,
        "webinars",
        "webinar_staff",
        "profiles",
        "presence_minutes",
        "webinar_counters",
        "webinar_counter_deltas",
    ],
)
def test_anon_cannot_read_any_table(db: psycopg.Connection[Any], table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_anon(db) as c:
        c.execute(sql.SQL("select from eventlive.{}").format(sql.Identifier(table)))


@pytest.mark.parametrize(
    "table", ["presence_minutes", "webinar_counters", "webinar_counter_deltas"]
)
def test_presence_minutes_and_counters_are_visible_to_staff_only(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], world: World, table: str
) -> None:
    if table == "webinar_counters":  # the entries' deltas folded into the counters
        admin_conn.execute("select eventlive.fold_counter_deltas(1000)")
    assert visible(db, world.viewer, table, "webinar_id") == set()
    assert visible(db, world.staff, table, "webinar_id") == {AUTO, REGISTERED_ONLY}


def test_drafts_are_hidden_from_everyone_but_their_staff(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], world: World
) -> None:
    admin_conn.execute("select api.set_staff(%s, %s)", (DRAFT, world.other_staff))
    assert DRAFT not in visible(db, world.viewer, "webinars", "id")
    assert DRAFT in visible(db, world.other_staff, "webinars", "id")


def test_staff_rows_are_visible_to_the_staff_member_and_fellow_staff(
    db: psycopg.Connection[Any], world: World
) -> None:
    assert visible(db, world.viewer, "webinar_staff") == set()
    assert visible(db, world.staff, "webinar_staff") == {world.staff}
    assert visible(db, world.other_staff, "webinar_staff") == {world.other_staff}


@pytest.mark.parametrize(
    "statement",
    [
        "insert into eventlive.registrations (webinar_id, user_id, source) values (1, %(me)s, 'self')",
        "update eventlive.presence set last_seen_at = now() where user_id = %(me)s",
        "delete from eventlive.viewer_sessions where user_id = %(me)s",
        "insert into eventlive.access_log (webinar_id, user_id, session_id, kind) values (1, %(me)s, %(me)s, 'enter')",
        "insert into eventlive.webinar_staff (webinar_id, user_id) values (1, %(me)s)",
    ],
)
def test_viewers_cannot_write_hot_path_tables_directly(
    db: psycopg.Connection[Any], world: World, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, world.viewer) as c:
        c.execute(statement, {"me": world.viewer})


def test_users_write_their_own_profile_and_no_one_elses(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], world: World
) -> None:
    admin_conn.execute(
        "insert into eventlive.profiles (user_id, display_name) values (%s, 'S')", (world.stranger,)
    )
    with act_as(db, world.viewer, commit=True) as c:
        c.execute(
            "insert into eventlive.profiles (user_id, display_name) values (%s, 'V')",
            (world.viewer,),
        )
        others = c.execute(
            "update eventlive.profiles set display_name = 'hacked' where user_id = %s",
            (world.stranger,),
        ).rowcount
    with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, world.viewer) as c:
        c.execute(
            "insert into eventlive.profiles (user_id, display_name) values (%s, 'X')",
            (world.staff,),
        )
    names = admin_conn.execute("select display_name from eventlive.profiles order by 1").fetchall()
    assert others == 0
    assert names == [("S",), ("V",)]
