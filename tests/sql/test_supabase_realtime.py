"""On a Supabase project, Supabase's own Realtime delivers the live room too:
``eventlive.publish`` sends every event through Supabase's ``realtime.send``, private, on
the topic our hub uses, and the policies on ``realtime.messages`` let exactly those read it
whom our hub's join lets in. On plain PostgreSQL (the project's stand-in ``realtime.send``)
nothing is forwarded."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from shim import migrate as mig
from shim.realtime.authorize import Principal, may_receive
from shim.testing import act_as, create_user
from shim.testing.plugin import SUPABASE, EventliveServer, SupabaseProject

LIVE = 149402
TOPIC = f"webinar:{LIVE}:chat"


def _stored(admin: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return admin.execute(
        "select topic, event, payload, private, extension from realtime.messages order by inserted_at"
    ).fetchall()


def _reads(db: psycopg.Connection[Any], user: uuid.UUID, topic: str) -> int:
    """How many stored messages of ``topic`` ``user`` reads, as Supabase Realtime asks."""
    with act_as(db, user) as c:
        c.execute("select set_config('realtime.topic', %s, true)", (topic,))
        row = c.execute("select count(*) from realtime.messages where topic = %s", (topic,))
        return int((row.fetchone() or (0,))[0])


async def _hub_joins(dsn: str, users: list[uuid.UUID], topic: str) -> list[bool]:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        return [
            await may_receive(
                pool,
                Principal(
                    "authenticated", json.dumps({"sub": str(u), "role": "authenticated"}), None
                ),
                topic,
            )
            for u in users
        ]


def test_each_event_lands_in_supabases_realtime_messages_and_rls_matches_the_hubs_join(
    supabase_project: SupabaseProject,
) -> None:
    mig.migrate(supabase_project.migrator_dsn)
    with (
        psycopg.connect(supabase_project.admin_dsn, autocommit=True) as admin,
        psycopg.connect(supabase_project.dsn) as db,
    ):
        admin.execute("select api.upsert_webinar(%s, 'Supabase room')", (LIVE,))
        viewer, host, stranger = (create_user(admin) for _ in range(3))
        admin.execute("select api.set_staff(%s, %s, 'host')", (LIVE, host))
        admin.execute(
            "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'self')",
            (LIVE, viewer),
        )
        assert admin.execute("select eventlive.forwards_to_realtime()").fetchone() == (True,)
        with act_as(db, viewer, commit=True) as c:
            sent = c.execute(
                "select api.chat_send(%s, 'hello from supabase', %s)", (LIVE, uuid.uuid4())
            ).fetchone()[0]  # type: ignore[index]
        (topic, event, payload, private, extension), *rest = _stored(admin)
        assert rest == []
        assert (topic, private, extension) == (TOPIC, True, "broadcast")
        published = admin.execute(
            "select event, payload from eventlive.room_events where webinar_id = %s", (LIVE,)
        ).fetchone()
        assert (event, payload) == published  # the same event, with seq at its top level
        assert payload["id"] == sent["id"]
        assert payload["seq"] == sent["seq"]

        users = [viewer, host, stranger]
        reads = [_reads(db, u, TOPIC) for u in users]
        joins = asyncio.run(_hub_joins(supabase_project.dsn, users, TOPIC))
        assert joins == [True, True, False]
        assert [n > 0 for n in reads] == joins
        # Another topic's stored rows stay closed even to an entitled viewer.
        assert _reads(db, viewer, f"webinar:{LIVE}:admin") == 0


def test_plain_postgres_forwards_nothing(
    admin_conn: psycopg.Connection[Any], eventlive_server: EventliveServer
) -> None:
    if eventlive_server.shape == SUPABASE:
        pytest.skip("the session's database is Supabase-shaped: forwarding is the other test's")
    assert admin_conn.execute("select eventlive.forwards_to_realtime()").fetchone() == (False,)
    admin_conn.execute("select api.upsert_webinar(%s, 'Plain room')", (LIVE,))
    viewer = create_user(admin_conn)
    admin_conn.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'self')",
        (LIVE, viewer),
    )
    admin_conn.execute(
        "select set_config('request.jwt.claims', %s, false)",
        (json.dumps({"sub": str(viewer), "role": "authenticated"}),),
    )
    admin_conn.execute("select api.chat_send(%s, 'hello')", (LIVE,))
    assert admin_conn.execute("select count(*) from eventlive.room_events").fetchone() == (1,)
    assert _stored(admin_conn) == []
