"""Every statement chat and Q&A run inside their functions is served by an index at
scale (a webinar with 20,000 messages, 5,000 questions and 10,000 votes by 2,000 viewers,
beside another webinar): auto_explain reports the plan of each nested statement as a
NOTICE and the test reads them, so nothing is copied from the SQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

BIG, OTHER = 601, 602
ROOM_TABLES = {
    "chat_messages",
    "questions",
    "question_votes",
    "chat_bans",
    "room_settings",
    "room_sequences",
    "room_events",
    "registrations",
    "webinar_staff",
    "profiles",
    "presence_minutes",
}


@pytest.fixture
def loaded(admin_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    a = admin_conn
    for wid in (BIG, OTHER):
        a.execute("select api.upsert_webinar(%s, %s)", (wid, f"Plans {wid}"))
    a.execute(
        "insert into auth.users (id) select ('00000000-0000-7000-0000-' || lpad(to_hex(n), 12, '0'))::uuid"
        " from generate_series(0, 1999) as n"
    )
    a.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source)"
        " select w, u.id, 'self' from auth.users as u, unnest(array[%s, %s]::bigint[]) as w",
        (BIG, OTHER),
    )
    a.execute(
        "insert into eventlive.profiles (user_id, display_name) select id, 'V' from auth.users"
    )
    a.execute(
        "insert into eventlive.room_sequences (webinar_id, last_seq) values (%s, 25000), (%s, 25000)",
        (BIG, OTHER),
    )
    a.execute(
        "insert into eventlive.chat_messages (webinar_id, user_id, body, status, seq, created_at)"
        " select w, ('00000000-0000-7000-0000-' || lpad(to_hex(s %% 2000), 12, '0'))::uuid, 'm', 'visible', s,"
        " now() - interval '1 hour' + s * interval '10 ms'"
        " from unnest(array[%s, %s]::bigint[]) as w, generate_series(1, 20000) as s",
        (BIG, OTHER),
    )
    a.execute(
        "insert into eventlive.questions (webinar_id, user_id, body, seq, created_at, published_at)"
        " select w, ('00000000-0000-7000-0000-' || lpad(to_hex(s %% 2000), 12, '0'))::uuid, 'q', 20000 + s,"
        " now() - interval '2 hours', now() - interval '2 hours'"
        " from unnest(array[%s, %s]::bigint[]) as w, generate_series(1, 5000) as s",
        (BIG, OTHER),
    )
    a.execute(
        "insert into eventlive.question_votes (question_id, user_id, webinar_id)"
        " select q.id, u.id, q.webinar_id from (select id, webinar_id from eventlive.questions limit 10) as q"
        " cross join auth.users as u"
    )
    # 1,000 other webinars with staff, settings and a room: small tables stay small
    # only in tests, and a planner may rightly scan a table of two rows.
    a.execute(
        "insert into eventlive.webinars (id, title) select n, 'other' from generate_series(1000, 1999) as n"
    )
    a.execute(
        "insert into eventlive.webinar_staff (webinar_id, user_id)"
        " select n, ('00000000-0000-7000-0000-' || lpad(to_hex(n - 1000), 12, '0'))::uuid"
        " from generate_series(1000, 1999) as n"
    )
    a.execute(
        "insert into eventlive.room_sequences (webinar_id, last_seq) select n, 1 from generate_series(1000, 1999) as n"
    )
    a.execute(
        "insert into eventlive.chat_bans (webinar_id, user_id)"
        " select n, ('00000000-0000-7000-0000-' || lpad(to_hex(n - 999), 12, '0'))::uuid"
        " from generate_series(1000, 1999) as n"
    )
    a.execute(
        "insert into eventlive.presence_minutes (webinar_id, minute, viewers)"
        " select n, date_trunc('minute', now()) - m * interval '1 minute', 20"
        " from generate_series(1000, 1999) as n, generate_series(0, 59) as m"
    )
    a.execute("analyze")
    return a


@pytest.fixture
def explain(loaded: psycopg.Connection[Any], eventlive_db: Any) -> Iterator[Any]:
    conn = psycopg.connect(eventlive_db.admin_dsn)  # LOAD needs a superuser; the call switches role
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("load 'auto_explain'")
    for setting, value in [
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_format", "json"),
        ("auto_explain.log_level", "notice"),
    ]:
        conn.execute("select set_config(%s, %s, false)", (setting, value))
    conn.commit()

    def run(
        statement: str, params: tuple[Any, ...], who: uuid.UUID, role: str = "authenticated"
    ) -> dict[str, set[str]]:
        """Scans of the room tables per nested statement: index names or 'Seq Scan on t'."""
        notices.clear()
        with conn.transaction(force_rollback=True):
            conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps({"role": role, "sub": str(who)})),
            )
            notices.clear()
            conn.execute(statement, params)
        out: dict[str, set[str]] = {}
        for text in notices:
            if "plan:" not in text:
                continue
            doc = json.loads(text.split("plan:", 1)[1])
            doc = doc[0] if isinstance(doc, list) else doc
            found: set[str] = set()
            stack = [doc["Plan"]]
            while stack:
                node = stack.pop()
                stack.extend(node.get("Plans", []))
                if node.get("Index Name"):
                    found.add(node["Index Name"])
                elif node.get("Relation Name") in ROOM_TABLES and "Scan" in node["Node Type"]:
                    found.add(f"{node['Node Type']} on {node['Relation Name']}")
            out.setdefault(" ".join(doc["Query Text"].split())[:80], set()).update(found)
        assert out, "auto_explain reported nothing"
        return out

    yield run
    conn.close()


def seq_scans(plans: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        q: {s for s in found if s.startswith("Seq Scan")}
        for q, found in plans.items()
        if any(s.startswith("Seq Scan") for s in found)
    }


def used(plans: dict[str, set[str]]) -> set[str]:
    return set().union(*plans.values())


def test_chat_send_and_chat_since_read_only_through_indexes(explain: Any) -> None:
    viewer = uuid.UUID("00000000-0000-7000-0000-000000000007")
    send = explain("select api.chat_send(%s, 'hello', %s)", (BIG, uuid.uuid4()), viewer)
    assert seq_scans(send) == {}
    assert {
        "chat_messages_webinar_id_user_id_created_at_idx",  # rate limit: the sender's last 5
        "room_sequences_pkey",  # publish
        "registrations_pkey",
    } <= used(send), send
    since = explain("select api.chat_since(%s, 19900, 100)", (BIG,), viewer)
    assert seq_scans(since) == {}
    assert "chat_messages_webinar_id_seq_idx" in used(since), since


def test_question_ask_vote_and_questions_read_only_through_indexes(
    explain: Any, loaded: psycopg.Connection[Any]
) -> None:
    viewer = uuid.UUID("00000000-0000-7000-0000-000000000009")
    ask = explain("select api.question_ask(%s, 'why?', %s)", (BIG, uuid.uuid4()), viewer)
    assert seq_scans(ask) == {}
    assert "questions_webinar_id_user_id_created_at_idx" in used(ask), ask
    row = loaded.execute(
        "select id from eventlive.questions where webinar_id = %s and seq = 20500", (BIG,)
    ).fetchone()
    assert row is not None
    vote = explain("select api.question_vote(%s)", (row[0],), viewer)
    assert seq_scans(vote) == {}
    listing = explain("select api.questions(%s, 24900, 100)", (BIG,), viewer)
    assert seq_scans(listing) == {}
    assert "questions_webinar_id_seq_idx" in used(listing), listing
