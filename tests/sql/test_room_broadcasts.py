"""The live room's deployment-wide state (sql/0009, functions/05_room.sql): broadcasts
through NOTIFY (the message itself, or the id of a stored row when too large for a NOTIFY
payload), SSE tickets' first use decided by one insert, both callable by the hub's role
alone, and housekeeping removing what is spent."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import psycopg
import pytest

from shim.testing import act_as, as_service_role, create_user

TICKET = "select eventlive.use_sse_ticket(%s, now() + interval '30 seconds')"


def _broadcast(c: psycopg.Connection[Any], messages: list[dict[str, Any]]) -> int:
    row = c.execute("select eventlive.broadcast(%s::json)", (json.dumps(messages),)).fetchone()
    assert row is not None
    return int(row[0])


def test_broadcasts_travel_in_the_notify_in_order_and_large_ones_by_a_stored_row(
    eventlive_db: Any,
) -> None:
    """Each message is one notice on eventlive_room, in the call's order, none folded
    (identical bodies, distinct keys); the payload keeps the sender's text; a notice that
    would be 8000 bytes or more names a room_broadcasts row instead, which
    room_broadcast(id) returns as sent. A rolled-back call sends nothing."""
    small = '{"b": 1,  "a": [2]}'  # key order and spacing as the sender wrote them
    big = {"x": "y" * 9000}
    messages = [
        {"topic": "webinar:1:chat", "event": "e", "key": "k1", "payload": json.loads(small)},
        {"topic": "webinar:1:chat", "event": "e", "key": "k2", "payload": {"b": 1}},
        {"topic": "webinar:1:chat", "event": "e", "key": "k3", "payload": {"b": 1}},
        {"topic": "lobby", "event": "big", "key": "k4", "payload": big},
    ]
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as listener:
        listener.execute("listen eventlive_room")
        with psycopg.connect(eventlive_db.admin_dsn) as writer:
            writer.execute(
                "select eventlive.broadcast(json_build_array(json_build_object("
                "'topic', 'webinar:1:chat', 'event', 'e', 'key', 'k0', 'payload', %s::json)))",
                (small,),
            )
            assert _broadcast(writer, messages) == 4
            writer.commit()
            _broadcast(writer, messages)
            writer.rollback()
        got = [json.loads(n.payload) for n in listener.notifies(timeout=1.0)]
    assert [g.get("k") for g in got] == ["k0", "k1", "k2", "k3", None]
    assert got[0]["p"] == json.loads(small)
    assert got[4]["t"] == "lobby"
    assert set(got[4]) == {"t", "id"}
    with psycopg.connect(eventlive_db.admin_dsn) as admin:
        row = admin.execute(
            "select topic, event, key, payload from eventlive.room_broadcast(%s)", (got[4]["id"],)
        ).fetchone()
        stored = admin.execute("select count(*) from eventlive.room_broadcasts").fetchone()
    assert row is not None
    assert row[:3] == ("lobby", "big", "k4")
    assert json.loads(row[3]) == big
    assert stored == (1,)


def test_the_sender_text_of_a_small_payload_is_kept(eventlive_db: Any) -> None:
    """payload is json, not jsonb: the notice carries it as written (spacing, key order)."""
    small = '{"b": 1,  "a": [2]}'
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as conn:
        conn.execute("listen eventlive_room")
        conn.execute(
            "select eventlive.broadcast(json_build_array(json_build_object("
            "'topic', 't', 'event', 'e', 'key', 'k', 'payload', %s::json)))",
            (small,),
        )
        notes = list(conn.notifies(timeout=1.0))
    assert len(notes) == 1
    assert small in notes[0].payload


@pytest.mark.parametrize(
    "messages",
    [
        {"topic": "t"},
        [{"topic": "t", "event": "e", "payload": []}],
        [{"topic": "t", "event": "", "payload": {}}],
        [{"topic": "t", "event": "e" * 256, "payload": {}}],
        [{"topic": 1, "event": "e", "payload": {}}],
    ],
)
def test_a_malformed_broadcast_is_refused_and_sends_nothing(
    admin_conn: psycopg.Connection[Any], messages: Any
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        admin_conn.execute("select eventlive.broadcast(%s::json)", (json.dumps(messages),))


def test_an_sse_ticket_is_used_once_whoever_uses_it(eventlive_db: Any) -> None:
    """use_sse_ticket is true at a nonce's first use only, including when many
    connections (processes) try the same fresh nonce at once."""
    nonce = uuid.uuid4().hex
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as c:
        assert c.execute(TICKET, (nonce,)).fetchone() == (True,)
        assert c.execute(TICKET, (nonce,)).fetchone() == (False,)
    racing = uuid.uuid4().hex
    answers: list[bool] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as c:
            barrier.wait(timeout=10)
            row = c.execute(TICKET, (racing,)).fetchone()
            assert row is not None
            answers.append(bool(row[0]))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(answers) == [False] * 7 + [True]


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_only_the_hub_role_broadcasts_and_uses_tickets(
    db: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], role: str
) -> None:
    user = create_user(admin_conn) if role == "authenticated" else None
    for call, args in (
        ("select eventlive.broadcast('[]'::json)", ()),
        (TICKET, (uuid.uuid4().hex,)),
        ("select * from eventlive.room_broadcast(1)", ()),
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, user, role=role) as c:
            c.execute(call, args)
    with act_as(db, None, role="eventlive_hub") as c:
        assert c.execute("select eventlive.broadcast('[]'::json)").fetchone() == (0,)
        assert c.execute(TICKET, (uuid.uuid4().hex,)).fetchone() == (True,)


def test_housekeeping_removes_spent_broadcasts_and_tickets_and_keeps_live_ones(
    db: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any]
) -> None:
    """A stored broadcast older than a minute and a ticket a minute past its expiry go;
    a fresh broadcast and a ticket still valid (or just expired) stay."""
    admin_conn.execute(
        "insert into eventlive.room_broadcasts (topic, event, payload, created_at) values"
        " ('t', 'old', '{}', now() - interval '2 minutes'), ('t', 'new', '{}', now())"
    )
    admin_conn.execute(
        "insert into eventlive.sse_tickets_used (nonce, expires_at) values"
        " (%s, now() - interval '2 minutes'), (%s, now() - interval '10 seconds'),"
        " (%s, now() + interval '30 seconds')",
        ("a" * 32, "b" * 32, "c" * 32),
    )
    admin_conn.commit()
    with as_service_role(db, commit=True) as c:
        row = c.execute("select eventlive.housekeeping_step('30 days', 1000)").fetchone()
    assert row is not None
    assert row[0] == {"expired": 0, "pruned": 2, "folded": 0}
    events = admin_conn.execute("select event from eventlive.room_broadcasts").fetchall()
    nonces = admin_conn.execute(
        "select left(nonce, 1) from eventlive.sse_tickets_used order by 1"
    ).fetchall()
    assert events == [("new",)]
    assert nonces == [("b",), ("c",)]
