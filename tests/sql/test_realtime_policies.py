"""The policies on ``realtime.messages`` (policies/realtime_messages.sql) decide who may
join a webinar's topics, checked the way Supabase's Realtime checks them
(``Realtime.Tenants.Authorization``): probe rows inserted by a privileged role, then --
as the joining role with its claims and ``realtime.topic`` set -- a select of those rows
(may receive) and an insert of its own (may send), all rolled back. Every actor x topic
x receive/send against the table of who receives what (README, the live room), the stand-in's shape against Supabase's,
``realtime.send``, and the check's cost (primary-key lookups only).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from shim.testing import act_as, create_user

A, B = 301, 302


@dataclass(frozen=True)
class Probe:
    receive: bool
    send: bool


def _configure(
    conn: psycopg.Connection[Any], role: str, uid: str | None, topic: str, claims: dict[str, Any]
) -> None:
    payload: dict[str, Any] = {"role": role, **({"sub": uid} if uid else {}), **claims}
    conn.execute(
        "select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
        " set_config('request.jwt.claims', %s, true), set_config('request.headers', '{}', true)",
        (role, topic, json.dumps(payload)),
    )


def probe(
    db: psycopg.Connection[Any],
    role: str,
    uid: str | None,
    topic: str,
    claims: dict[str, Any] | None = None,
) -> Probe:
    """Supabase's join check on the ``authenticator`` connection, rolled back."""
    claims = claims or {}
    with db.transaction(force_rollback=True):
        # The probe rows are written by a privileged role (Supabase: its admin login).
        db.execute("select set_config('role', 'service_role', true)")
        ids = {
            ext: db.execute(
                "insert into realtime.messages (topic, extension) values (%s, %s) returning id",
                (topic, ext),
            ).fetchone()[0]  # type: ignore[index]
            for ext in ("broadcast", "presence")
        }
        _configure(db, role, uid, topic, claims)
        seen = {
            r[0]
            for r in db.execute(
                "select id from realtime.messages where topic = %s"
                " and ((extension = 'broadcast' and id = %s) or (extension = 'presence' and id = %s))",
                (topic, ids["broadcast"], ids["presence"]),
            ).fetchall()
        }
    with db.transaction(force_rollback=True):
        _configure(db, role, uid, topic, claims)
        try:
            with db.transaction():
                db.execute(
                    "insert into realtime.messages (topic, extension) values (%s, 'broadcast')",
                    (topic,),
                )
            send = True
        except psycopg.errors.InsufficientPrivilege:
            send = False
    return Probe(receive=ids["broadcast"] in seen, send=send)


@dataclass
class Room:
    viewer: str  # registered to A, entered
    lurker: str  # registered to A, never entered
    host: str  # host of A
    moderator: str  # moderator of A
    stranger: str  # signed in, nothing anywhere
    outsider: str  # registered to B, entered


@pytest.fixture
def room(admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> Room:
    for wid in (A, B):
        admin_conn.execute("select api.upsert_webinar(%s, %s)", (wid, f"Room {wid}"))
    r = Room(*(str(create_user(admin_conn)) for _ in range(6)))
    admin_conn.execute("select api.set_staff(%s, %s, 'host')", (A, r.host))
    admin_conn.execute("select api.set_staff(%s, %s, 'moderator')", (A, r.moderator))
    admin_conn.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'service')",
        (A, r.lurker),
    )
    for who, wid in ((r.viewer, A), (r.outsider, B)):
        with act_as(db, who, commit=True) as c:
            c.execute("select api.track_access(%s)", (wid,))
    return r


def topics(wid: int, r: Room) -> dict[str, str]:
    return {
        "chat": f"webinar:{wid}:chat",
        "qa": f"webinar:{wid}:qa",
        "admin": f"webinar:{wid}:admin",
        "user:viewer": f"webinar:{wid}:user:{r.viewer}",
        "user:host": f"webinar:{wid}:user:{r.host}",
        "user:outsider": f"webinar:{wid}:user:{r.outsider}",
        "user:stranger": f"webinar:{wid}:user:{r.stranger}",
    }


# Who receives what (README, the live room), written independently of the SQL: (actor, topic kind on webinar A) -> receive.
# Nobody but service_role (which bypasses RLS, as Supabase's service key does) may send.
RECEIVES_ON_A = {
    "viewer": {"chat", "qa", "user:viewer"},
    "lurker": {"chat", "qa"},
    "host": {"chat", "qa", "admin", "user:host"},
    "moderator": {"chat", "qa", "admin"},
    "stranger": set(),
    "outsider": set(),
    "anon": set(),
}
RECEIVES_ON_B = {"outsider": {"chat", "qa", "user:outsider"}}


def test_every_actor_receives_exactly_the_topics_design_gives_it_and_sends_on_none(
    db: psycopg.Connection[Any], room: Room
) -> None:
    """7 actors x 2 webinars x 7 topics, receive and send, as Supabase's join check runs
    them; plus the same viewer forging ``role: service_role`` in its claims."""
    actors: dict[str, tuple[str, str | None, dict[str, Any]]] = {
        name: ("authenticated", getattr(room, name), {})
        for name in ("viewer", "lurker", "host", "moderator", "stranger", "outsider")
    }
    actors["anon"] = ("anon", None, {})
    actors["viewer_forging_service_role"] = ("authenticated", room.viewer, {"role": "service_role"})
    got: dict[tuple[str, int, str], Probe] = {}
    want: dict[tuple[str, int, str], Probe] = {}
    for name, (role, uid, claims) in actors.items():
        oracle = name.removesuffix("_forging_service_role")
        for wid, table in ((A, RECEIVES_ON_A), (B, RECEIVES_ON_B)):
            for kind, topic in topics(wid, room).items():
                got[name, wid, kind] = probe(db, role, uid, topic, claims)
                want[name, wid, kind] = Probe(receive=kind in table.get(oracle, set()), send=False)
    assert {k: v for k, v in got.items() if v != want[k]} == {}
    assert sum(p.receive for p in got.values()) == 18  # 3 + 2 + 4 + 3 + 3 on B + 3 forging


def test_service_role_receives_and_sends_everywhere_as_on_supabase(
    db: psycopg.Connection[Any], room: Room
) -> None:
    """service_role bypasses RLS (the server's own key): the policies do not apply to it."""
    for topic in topics(A, room).values():
        assert probe(db, "service_role", None, topic) == Probe(receive=True, send=True)


@pytest.mark.parametrize(
    "topic",
    [
        "webinar:{A}:CHAT",
        "webinar:{A}:chat ",
        " webinar:{A}:chat",
        "webinar:0{A}:chat",
        "webinar:{A}:chat:extra",
        "webinar:{A}",
        "webinar::chat",
        "webinar:{A}:user:{upper}",
        "webinar:{A}:user:",
        "webinar:99999999999999999999:chat",
        "realtime:webinar:{A}:chat",
        "",
    ],
)
def test_a_malformed_or_foreign_topic_is_received_by_nobody(
    db: psycopg.Connection[Any], room: Room, topic: str
) -> None:
    """Only the four exact topic shapes open anything, even to the host."""
    name = topic.format(A=A, upper=room.host.upper())
    for uid in (room.host, room.viewer):
        assert probe(db, "authenticated", uid, name) == Probe(receive=False, send=False)


def test_losing_registration_or_staff_role_closes_the_topics_at_the_next_check(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """The check reads the current rows: the recheck at token refresh sees a removal."""
    assert probe(db, "authenticated", room.lurker, f"webinar:{A}:chat").receive
    assert probe(db, "authenticated", room.moderator, f"webinar:{A}:admin").receive
    admin_conn.execute(
        "delete from eventlive.registrations where webinar_id = %s and user_id = %s",
        (A, room.lurker),
    )
    admin_conn.execute("select api.remove_staff(%s, %s)", (A, room.moderator))
    assert not probe(db, "authenticated", room.lurker, f"webinar:{A}:chat").receive
    assert not probe(db, "authenticated", room.moderator, f"webinar:{A}:admin").receive


def test_a_viewer_reads_stored_messages_of_the_authorized_topic_only(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Setting realtime.topic to a topic one may receive does not open the stored
    messages of other topics (another webinar's chat, the admin topic)."""
    for topic in (f"webinar:{A}:chat", f"webinar:{A}:admin", f"webinar:{B}:chat"):
        admin_conn.execute(
            "insert into realtime.messages (topic, extension, event, payload, private)"
            " values (%s, 'broadcast', 'message', '{}', true)",
            (topic,),
        )
    with act_as(db, room.viewer) as c:
        c.execute("select set_config('realtime.topic', %s, true)", (f"webinar:{A}:chat",))
        seen = [r[0] for r in c.execute("select topic from realtime.messages").fetchall()]
        c.execute("select set_config('realtime.topic', '', true)")
        unset = c.execute("select count(*) from realtime.messages").fetchone()
    assert seen == [f"webinar:{A}:chat"]
    assert unset == (0,)


def test_the_join_check_costs_primary_key_lookups_however_many_registrations(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """With 5,000 registrations and 5,000 staff rows the receive check of every kind of
    topic scans neither table: only index lookups (pg_stat_xact_user_tables, this
    transaction's own counters)."""
    admin_conn.execute(
        "insert into auth.users (id) select gen_random_uuid() from generate_series(1, 5000)"
    )
    admin_conn.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source)"
        " select %s, id, 'service' from auth.users on conflict do nothing",
        (B,),
    )
    admin_conn.execute(
        "insert into eventlive.webinar_staff (webinar_id, user_id)"
        " select %s, id from auth.users on conflict do nothing",
        (B,),
    )
    admin_conn.execute("analyze eventlive.registrations, eventlive.webinar_staff")
    counters = (
        "select coalesce(sum(seq_scan), 0), coalesce(sum(idx_scan), 0) from pg_stat_xact_user_tables"
        " where relid in ('eventlive.registrations'::regclass, 'eventlive.webinar_staff'::regclass)"
    )
    lookups = {}
    for kind, topic in topics(A, room).items():
        with db.transaction(force_rollback=True):
            db.execute("select set_config('role', 'service_role', true)")
            db.execute(
                "insert into realtime.messages (topic, extension) values (%s, 'broadcast')",
                (topic,),
            )
            _configure(db, "authenticated", room.viewer, topic, {})
            # PG 15 reports not-yet-flushed counts of earlier transactions too: take a delta.
            before = db.execute(counters).fetchone()
            seen = db.execute(
                "select count(*) from realtime.messages where topic = %s", (topic,)
            ).fetchone()
            after = db.execute(counters).fetchone()
        assert seen == ((1,) if kind in RECEIVES_ON_A["viewer"] else (0,)), kind
        assert before is not None
        assert after is not None
        assert after[0] == before[0], f"{kind}: a sequential scan"
        lookups[kind] = int(after[1] - before[1])
    # viewer: staff miss + registration hit; someone else's user topic: refused unread
    assert lookups == {
        "chat": 2,
        "qa": 2,
        "admin": 1,
        "user:viewer": 2,
        "user:host": 0,
        "user:outsider": 0,
        "user:stranger": 0,
    }


def test_the_stand_in_has_supabase_columns_and_primary_key(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """realtime.messages as supabase/realtime creates it (squashed migrations, 2026)."""
    cols = admin_conn.execute(
        "select column_name, data_type, is_nullable, column_default"
        " from information_schema.columns where table_schema = 'realtime' and table_name = 'messages'"
        " order by ordinal_position"
    ).fetchall()
    assert [(c[0], c[1], c[2]) for c in cols] == [
        ("topic", "text", "NO"),
        ("extension", "text", "NO"),
        ("payload", "jsonb", "YES"),
        ("event", "text", "YES"),
        ("private", "boolean", "YES"),
        ("updated_at", "timestamp without time zone", "NO"),
        ("inserted_at", "timestamp without time zone", "NO"),
        ("id", "uuid", "NO"),
    ]
    pk = admin_conn.execute(
        "select pg_get_constraintdef(oid) from pg_constraint"
        " where conrelid = 'realtime.messages'::regclass and contype = 'p'"
    ).fetchone()
    assert pk == ("PRIMARY KEY (id, inserted_at)",)
    rls = admin_conn.execute(
        "select relrowsecurity from pg_class where oid = 'realtime.messages'::regclass"
    ).fetchone()
    assert rls == (True,)


def test_realtime_send_inserts_under_the_callers_rights_and_turns_refusal_into_a_warning(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Supabase's realtime.send: service_role's message is stored with an id in its
    payload and realtime.topic set; a viewer's send to a webinar topic is refused by the
    insert policy and only warned about (the call itself succeeds)."""
    with act_as(db, None, role="service_role", commit=True) as c:
        c.execute(
            "select realtime.send(%s, 'message', %s)", (Jsonb({"body": "hi"}), f"webinar:{A}:chat")
        )
        topic = c.execute("select realtime.topic()").fetchone()
    assert topic == (f"webinar:{A}:chat",)
    notices: list[str] = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    with act_as(db, room.viewer, commit=True) as c:
        c.execute("select realtime.send('{}', 'message', %s)", (f"webinar:{A}:chat",))
    rows = admin_conn.execute(
        "select topic, event, payload, private from realtime.messages"
    ).fetchall()
    assert len(rows) == 1
    assert rows[0][0:2] == (f"webinar:{A}:chat", "message")
    assert rows[0][2]["body"] == "hi"
    assert uuid.UUID(rows[0][2]["id"])
    assert rows[0][3] is True
    assert any(n.startswith("ErrorSendingBroadcastMessage") for n in notices), notices
