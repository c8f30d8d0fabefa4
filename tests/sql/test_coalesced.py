"""The coalesced heartbeat entry, ``eventlive.presence_ping_batch``, in SQL: who may run it,
what its role may do besides, and a mixed batch answered element by element."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from test_api_behaviour import AUTO, World, build_world, call

from shim.testing import act_as

BATCH = "eventlive.presence_ping_batch(bigint[], uuid[], uuid[])"


def test_only_the_batch_role_may_execute_the_batch_function(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """Not PUBLIC, not anon, authenticated or service_role: eventlive_batcher alone (and
    the function's owner, the migration role: Supabase's postgres is no superuser)."""
    rows = admin_conn.execute(
        "select r.rolname from pg_catalog.pg_roles as r"
        " where pg_catalog.has_function_privilege(r.oid, %s, 'execute')"
        " and not r.rolsuper and r.rolname not like 'pg\\_%%'"
        " and not pg_catalog.pg_has_role(r.oid,"
        "   (select p.proowner from pg_catalog.pg_proc as p where p.oid = %s::regprocedure),"
        "   'usage')",
        (BATCH, BATCH),
    ).fetchall()
    assert {r[0] for r in rows} == {"eventlive_batcher"}
    role = admin_conn.execute(
        "select rolcanlogin, rolinherit from pg_catalog.pg_roles where rolname = 'eventlive_batcher'"
    ).fetchone()
    assert role == (False, False)
    members = admin_conn.execute(
        "select m.rolname from pg_catalog.pg_auth_members as a"
        " join pg_catalog.pg_roles as m on m.oid = a.member"
        " where a.roleid = 'eventlive_batcher'::regrole"
    ).fetchall()
    assert {m[0] for m in members} == {"authenticator"}


@pytest.mark.parametrize(
    "statement",
    [
        "select api.presence_ping(1, gen_random_uuid())",
        "select api.track_access(1)",
        "select count(*) from eventlive.presence",
        "select count(*) from eventlive.registrations",
        "update eventlive.presence set last_seen_at = now()",
        "select eventlive.ping_core(1, gen_random_uuid(), gen_random_uuid(), now())",
        # the entry batch's helpers: the batcher runs them only through it
        "select eventlive.track_core(1, gen_random_uuid(), null, null, now())",
        "select eventlive.tell_superseded(1, gen_random_uuid(), '{}')",
        "select eventlive.lock_viewers(array[1], array[gen_random_uuid()])",
        "select count(*) from eventlive.webinar_counter_deltas",
    ],
)
def test_the_batch_role_may_do_nothing_but_the_batch(
    db: psycopg.Connection[Any], statement: str
) -> None:
    """The role's only privileges are the batch functions: the API, the tables and the
    helpers behind the batches are refused."""
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        act_as(db, None, role="eventlive_batcher") as c,
    ):
        c.execute(statement)


def test_a_mixed_batch_answers_each_element_as_the_single_entry_would(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """One statement, five viewers: accepted, throttled, not registered, superseded and
    the same viewer twice; each element gets the single entry's answer."""
    world: World = build_world(admin_conn, db)
    admin_conn.execute("update eventlive.presence set last_seen_at = now() - interval '1 hour'")
    elements = [
        (AUTO, world.viewer, world.active),  # written
        (AUTO, world.stranger, uuid.uuid4()),  # not registered
        (AUTO, world.viewer, world.superseded),  # superseded
        (AUTO, world.viewer, world.active),  # same viewer again: throttled, accepted
        (999, world.viewer, world.active),  # unknown webinar
    ]
    with act_as(db, None, role="eventlive_batcher", commit=True) as c:
        row = c.execute(
            "select eventlive.presence_ping_batch(%s::bigint[], %s::uuid[], %s::uuid[])",
            ([e[0] for e in elements], [e[1] for e in elements], [e[2] for e in elements]),
        ).fetchone()
    assert row is not None
    answers = {int(k): (v["code"], v["details"]) for k, v in row[0].items()}
    assert answers == {
        2: ("PT403", "not_registered"),
        3: ("PT409", "session_superseded"),
        5: ("PT404", "webinar_not_found"),
    }
    single = []
    for wid, user, session in elements:
        try:
            call(db, "presence_ping", {"webinar_id": wid, "session_id": session}, user)
            single.append(None)
        except psycopg.Error as exc:
            single.append((exc.sqlstate, exc.diag.message_detail))
    assert single == [answers.get(i) for i in range(1, 6)]
    seen = admin_conn.execute(
        "select last_seen_at > now() - interval '1 minute' from eventlive.presence"
        " where webinar_id = %s and user_id = %s",
        (AUTO, world.viewer),
    ).fetchone()
    assert seen == (True,)
