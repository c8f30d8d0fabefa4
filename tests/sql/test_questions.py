"""Q&A (functions/61_qa.sql): question_ask's checks in chat_send's order, 3
questions per 60 s with Retry-After, anonymous questions, one idempotent vote per
viewer (also under concurrent double votes), vote counts pushed at most once per
question per second (the rest by flush_question_votes), the questions cursor, and
staff answers."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from shim.http.errors import from_database, status_for_sqlstate
from shim.testing import act_as, create_user, freeze_now

LIVE, ENDED, UNKNOWN = 501, 502, 999
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@dataclass
class Room:
    viewer: uuid.UUID
    peer: uuid.UUID
    stranger: uuid.UUID
    host: uuid.UUID
    moderator: uuid.UUID


@pytest.fixture
def room(admin_conn: psycopg.Connection[Any]) -> Room:
    for wid, state in ((LIVE, "live"), (ENDED, "ended")):
        admin_conn.execute("select api.upsert_webinar(%s, %s, %s)", (wid, f"Q&A {wid}", state))
    r = Room(*(create_user(admin_conn) for _ in range(5)))
    admin_conn.execute("select api.set_staff(%s, %s, 'host')", (LIVE, r.host))
    admin_conn.execute("select api.set_staff(%s, %s, 'moderator')", (LIVE, r.moderator))
    for user, name in ((r.viewer, "Viewer"), (r.peer, "Peer")):
        admin_conn.execute(
            "insert into eventlive.registrations (webinar_id, user_id, source)"
            " values (%s, %s, 'self'), (%s, %s, 'self')",
            (LIVE, user, ENDED, user),
        )
        admin_conn.execute(
            "insert into eventlive.profiles (user_id, display_name) values (%s, %s)", (user, name)
        )
    return r


Outcome = tuple[Any, ...]


def call(
    db: psycopg.Connection[Any],
    fn: str,
    args: dict[str, Any],
    user: uuid.UUID | None,
    *,
    role: str = "authenticated",
) -> Outcome:
    """("ok", value) or (HTTP status, reason, Retry-After) as the shim would answer."""
    named = ", ".join(f"{k} => %({k})s" for k in args)
    try:
        with act_as(db, user, role=role, commit=True) as c:
            row = c.execute(f"select api.{fn}({named})", args).fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate == "PGRST":
            body = json.loads(exc.diag.message_primary or "")
            meta = json.loads(exc.diag.message_detail or "")
            return (meta["status"], body["details"], meta["headers"].get("Retry-After"))
        return (
            status_for_sqlstate(exc.sqlstate or "", role == "anon"),
            exc.diag.message_detail,
            None,
        )
    return ("ok", row[0] if row else None)


def ask(
    db: psycopg.Connection[Any], user: uuid.UUID | None, body: str | None = "Why?", **kw: Any
) -> Outcome:
    return call(db, "question_ask", {"webinar_id": LIVE, "body": body, **kw}, user)


def vote(
    db: psycopg.Connection[Any], user: uuid.UUID | None, question: int, up: bool = True
) -> Outcome:
    return call(db, "question_vote", {"question_id": question, "up": up}, user)


def listing(
    db: psycopg.Connection[Any], user: uuid.UUID | None, after: int = 0, **kw: Any
) -> dict[str, Any]:
    out = call(db, "questions", {"webinar_id": LIVE, "after_seq": after, **kw}, user)
    assert out[0] == "ok", out
    return dict(out[1])


def qa_events(admin: psycopg.Connection[Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = admin.execute(
        "select event, payload from eventlive.room_events where webinar_id = %s and channel = 'qa' order by seq",
        (LIVE,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_question_ask_checks_in_the_documented_order(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Each case breaks two rules and gets the earlier one: 401 -> 404 -> webinar_closed
    -> not_registered -> qa_disabled / banned -> replay -> 400 -> 429."""
    freeze_now(admin_conn, T0)
    key = uuid.uuid4()
    assert ask(db, room.viewer, "first", client_msg_id=key)[0] == "ok"
    assert ask(db, room.viewer, "second")[0] == "ok"
    assert ask(db, room.viewer, "third")[0] == "ok"  # 3 in 60 s: limit reached
    assert call(db, "chat_ban", {"webinar_id": LIVE, "user_id": room.peer}, room.host)[0] == "ok"
    got = {
        "anon": call(db, "question_ask", {"webinar_id": UNKNOWN, "body": ""}, None, role="anon"),
        "401": call(db, "question_ask", {"webinar_id": UNKNOWN, "body": ""}, None),
        "404": call(db, "question_ask", {"webinar_id": UNKNOWN, "body": ""}, room.stranger),
        "closed": call(db, "question_ask", {"webinar_id": ENDED, "body": ""}, room.stranger),
        "not_registered": ask(db, room.stranger, ""),
        "banned": ask(db, room.peer, "", client_msg_id=key),
        "replay": ask(db, room.viewer, "", client_msg_id=key)[0],
        "empty": ask(db, room.viewer, "\u3000"),
        "too long": ask(db, room.viewer, "?" * 501),
        "429": ask(db, room.viewer, "fourth"),
    }
    assert (
        call(db, "room_settings", {"webinar_id": LIVE, "qa_enabled": False}, room.host)[0] == "ok"
    )
    got["qa_disabled"] = ask(db, room.peer, "")
    got["qa_disabled before replay"] = ask(db, room.viewer, "x", client_msg_id=key)
    assert got == {
        "anon": (401, None, None),
        "401": (401, "not_authenticated", None),
        "404": (404, "webinar_not_found", None),
        "closed": (403, "webinar_closed", None),
        "not_registered": (403, "not_registered", None),
        "banned": (403, "banned", None),
        "replay": "ok",
        "empty": (400, "empty_message", None),
        "too long": (400, "message_too_long", None),
        "429": (429, "rate_limited", "60"),
        "qa_disabled": (403, "qa_disabled", None),
        "qa_disabled before replay": (403, "qa_disabled", None),
    }


def test_three_questions_per_minute_then_429_and_staff_are_exempt(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    freeze_now(admin_conn, T0)
    for n in range(3):
        freeze_now(admin_conn, T0 + dt.timedelta(seconds=10 * n))
        assert ask(db, room.viewer, f"q{n}")[0] == "ok"
    assert ask(db, room.viewer, "q3") == (429, "rate_limited", "40")
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=60))
    assert ask(db, room.viewer, "q3")[0] == "ok"
    for n in range(5):
        assert ask(db, room.moderator, f"staff {n}")[0] == "ok"


def test_an_anonymous_question_hides_its_author_from_viewers_not_from_staff(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    out = ask(db, room.viewer, "Secret?", anonymous=True)
    assert out[0] == "ok"
    assert set(out[1]) == {"id", "seq", "created_at", "status"}
    viewer_view = listing(db, room.peer)["questions"][0]
    assert (viewer_view["user_id"], viewer_view["display_name"], viewer_view["anonymous"]) == (
        None,
        None,
        True,
    )
    staff_view = listing(db, room.host)["questions"][0]
    assert (staff_view["user_id"], staff_view["display_name"]) == (str(room.viewer), "Viewer")
    assert qa_events(admin_conn) == [("question", viewer_view)]
    assert str(room.viewer) not in json.dumps(qa_events(admin_conn))


def test_one_vote_per_viewer_idempotent_and_withdrawable(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    q = ask(db, room.viewer, "Vote me")[1]["id"]
    assert vote(db, room.peer, q) == ("ok", {"question_id": q, "votes": 1, "up": True})
    assert vote(db, room.peer, q) == ("ok", {"question_id": q, "votes": 1, "up": True})
    assert vote(db, room.viewer, q)[1]["votes"] == 2
    assert vote(db, room.peer, q, up=False)[1]["votes"] == 1
    assert vote(db, room.peer, q, up=False)[1]["votes"] == 1
    assert listing(db, room.peer)["questions"][0]["votes"] == 1
    count = admin_conn.execute("select count(*) from eventlive.question_votes").fetchone()
    assert count == (1,)


@pytest.mark.parametrize(
    ("actor", "question", "want"),
    [
        ("no_sub", "open", (401, "not_authenticated", None)),
        ("viewer", "unknown", (404, "question_not_found", None)),
        ("stranger", "open", (403, "not_registered", None)),
        ("peer", "dismissed", (409, "question_closed", None)),
        ("peer", "ended", (403, "webinar_closed", None)),
        ("banned", "open", (403, "banned", None)),
    ],
)
def test_question_vote_refuses(  # noqa: PLR0917 - pytest passes fixtures and parameters
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    room: Room,
    actor: str,
    question: str,
    want: Outcome,
) -> None:
    q = ask(db, room.viewer, "A question")[1]["id"]
    ids = {"open": q, "unknown": 10**12, "dismissed": q, "ended": q}
    if question == "dismissed":
        assert (
            call(db, "question_answer", {"question_id": q, "status": "dismissed"}, room.host)[0]
            == "ok"
        )
    if question == "ended":
        admin_conn.execute("update eventlive.webinars set state = 'ended' where id = %s", (LIVE,))
    user = getattr(room, actor, None)
    if actor == "banned":
        assert (
            call(db, "chat_ban", {"webinar_id": LIVE, "user_id": room.peer}, room.host)[0] == "ok"
        )
        user = room.peer
    assert vote(db, user, ids[question]) == want


def test_concurrent_double_votes_and_retried_questions_never_escape_as_errors(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, db: psycopg.Connection[Any], room: Room
) -> None:
    """16 connections at once: 8 votes of one viewer on one question, 8 retries of one
    question: no 23505, one vote, one question."""
    q = ask(db, room.viewer, "Hot question")[1]["id"]
    key = uuid.uuid4()
    barrier = threading.Barrier(16)
    results: list[Outcome] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with psycopg.connect(eventlive_db.dsn) as conn:
            barrier.wait(30)
            out = (
                vote(conn, room.peer, q)
                if n < 8
                else ask(conn, room.peer, "Retried", client_msg_id=key)
            )
            with lock:
                results.append(out)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r for r in results if r[0] != "ok"] == []
    assert len({r[1]["id"] for r in results if "id" in r[1]}) == 1
    counts = admin_conn.execute(
        "select (select count(*) from eventlive.question_votes),"
        " (select votes from eventlive.questions where id = %s),"
        " (select count(*) from eventlive.questions where client_msg_id = %s)",
        (q, key),
    ).fetchone()
    assert counts == (1, 1, 1)


def test_vote_counts_are_pushed_at_most_once_per_question_per_second_and_flushed_after(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Votes within a second of the question's last event are merged: no event, the row
    marked; the next vote a second later pushes the merged count; flush_question_votes
    (the hub's, once the second is over) pushes what is left, and only then."""
    freeze_now(admin_conn, T0)
    q = ask(db, room.viewer, "Merge my votes")[1]["id"]
    voters = [create_user(admin_conn) for _ in range(3)]
    for v in voters:
        admin_conn.execute(
            "insert into eventlive.registrations (webinar_id, user_id, source) values (%s, %s, 'self')",
            (LIVE, v),
        )
    assert vote(db, room.peer, q)[1]["votes"] == 1  # same instant as the question: merged
    assert [e for e, _ in qa_events(admin_conn)] == ["question"]
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=1))
    assert vote(db, voters[0], q)[1]["votes"] == 2
    assert [(e, p["votes"]) for e, p in qa_events(admin_conn)] == [
        ("question", 0),
        ("question_updated", 2),
    ]
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=1.5))
    assert vote(db, voters[1], q)[1]["votes"] == 3
    assert vote(db, voters[2], q)[1]["votes"] == 4

    def flush() -> int:
        with act_as(db, None, role="eventlive_hub", commit=True) as c:
            row = c.execute("select eventlive.flush_question_votes(%s)", (LIVE,)).fetchone()
        assert row is not None
        return int(row[0])

    assert flush() == 0  # the last event is half a second old
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=2))
    assert flush() == 1
    assert flush() == 0
    assert [(e, p["votes"]) for e, p in qa_events(admin_conn)][-1] == ("question_updated", 4)
    assert listing(db, room.peer)["questions"][0]["seq"] == qa_events(admin_conn)[-1][1]["seq"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, room.host) as c:
        c.execute("select eventlive.flush_question_votes(%s)", (LIVE,))


def test_questions_reads_by_cursor_with_dismissed_ones_as_tombstones_for_viewers(
    db: psycopg.Connection[Any], room: Room
) -> None:
    ids = [ask(db, room.viewer, f"q{n}")[1]["id"] for n in range(3)]
    first = listing(db, room.peer, max_rows=2)
    assert [q["body"] for q in first["questions"]] == ["q0", "q1"]
    assert first["poll_after_seconds"] == 2
    dismissed = call(
        db, "question_answer", {"question_id": ids[0], "status": "dismissed"}, room.moderator
    )[1]
    rest = listing(db, room.peer, after=first["next_seq"])
    assert rest["questions"][0]["body"] == "q2"
    assert rest["questions"][1] == {"id": ids[0], "seq": dismissed["seq"], "status": "dismissed"}
    assert listing(db, room.host, after=first["next_seq"])["questions"][1]["body"] == "q0"
    assert listing(db, room.peer, after=rest["next_seq"])["questions"] == []


def test_staff_answer_questions_and_keep_the_answer_when_only_the_status_changes(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    q = ask(db, room.viewer, "What time is it?")[1]["id"]
    answered = call(
        db,
        "question_answer",
        {"question_id": q, "status": "answered", "answer": "Noon."},
        room.moderator,
    )
    assert answered[0] == "ok"
    assert (answered[1]["status"], answered[1]["answer"]) == ("answered", "Noon.")
    pinned = call(db, "question_answer", {"question_id": q, "status": "pinned"}, room.host)[1]
    assert (pinned["status"], pinned["answer"]) == ("pinned", "Noon.")
    same = call(db, "question_answer", {"question_id": q, "status": "pinned"}, room.host)[1]
    assert same["seq"] == pinned["seq"]  # nothing changed: nothing published
    assert [e for e, _ in qa_events(admin_conn)] == [
        "question",
        "question_updated",
        "question_updated",
    ]
    refusals = {
        "no_sub": call(db, "question_answer", {"question_id": q, "status": "open"}, None),
        "bad status": call(
            db, "question_answer", {"question_id": q, "status": "closed"}, room.host
        ),
        "long": call(
            db,
            "question_answer",
            {"question_id": q, "status": "answered", "answer": "a" * 2001},
            room.host,
        ),
        "unknown": call(
            db, "question_answer", {"question_id": 10**12, "status": "open"}, room.host
        ),
        "viewer": call(db, "question_answer", {"question_id": q, "status": "open"}, room.viewer),
    }
    assert refusals == {
        "no_sub": (401, "not_authenticated", None),
        "bad status": (400, "invalid_status", None),
        "long": (400, "answer_too_long", None),
        "unknown": (404, "question_not_found", None),
        "viewer": (403, "not_staff", None),
    }


def test_an_unreadable_pgrst_raise_is_an_internal_error_not_a_guess(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """The shim honours RAISE SQLSTATE 'PGRST' only when message and detail are the JSON
    PostgREST expects; otherwise a 500 that shows nothing (PostgREST: PGRST121)."""
    cases = {
        "ok": (
            '{"code":"PT429","message":"m","details":"rate_limited","hint":null}',
            '{"status":429,"headers":{"Retry-After":"3"}}',
        ),
        "not json": ("rate limited", '{"status":429}'),
        "no status": ('{"message":"m"}', "{}"),
        "bad header": ('{"message":"m"}', '{"status":429,"headers":{"X\\r\\nY":"1"}}'),
        "status 200": ('{"message":"m"}', '{"status":200}'),
    }
    got = {}
    for name, (message, detail) in cases.items():
        with pytest.raises(psycopg.Error) as info:
            admin_conn.execute(
                sql.SQL(
                    "do $$ begin raise sqlstate 'PGRST' using message = {}, detail = {}; end $$"
                ).format(sql.Literal(message), sql.Literal(detail))
            )
        err = from_database(info.value, anonymous=False, request_id="r1", retry_after=1)
        got[name] = (err.status, err.code, err.details, err.headers)
    assert got == {
        "ok": (429, "PT429", "rate_limited", {"Retry-After": "3"}),
        "not json": (500, "PGRSTX00", "request_id=r1", {}),
        "no status": (500, "PGRSTX00", "request_id=r1", {}),
        "bad header": (500, "PGRSTX00", "request_id=r1", {}),
        "status 200": (500, "PGRSTX00", "request_id=r1", {}),
    }
