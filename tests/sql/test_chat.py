"""Chat (functions/60_chat.sql): chat_send's checks in their documented order,
idempotency under concurrent retries, length limits, rate limit and slow mode with a
Retry-After in whole seconds (also as an HTTP 429 through the shim), bans, held
messages for staff only, moderation, room settings for hosts, the chat_since cursor and
its poll_after_seconds, and the events each write publishes. Also track_access's
session_superseded event."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from shim_support import NO_HUB

from shim.http.errors import status_for_sqlstate
from shim.http.settings import Settings
from shim.testing import act_as, create_user, freeze_now

LIVE, OTHER, ENDED, UNKNOWN = 401, 402, 403, 999
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@dataclass
class Room:
    viewer: uuid.UUID
    peer: uuid.UUID
    stranger: uuid.UUID
    host: uuid.UUID
    moderator: uuid.UUID
    other_host: uuid.UUID  # host of OTHER only


@pytest.fixture
def room(admin_conn: psycopg.Connection[Any]) -> Room:
    for wid, state in ((LIVE, "live"), (OTHER, "live"), (ENDED, "ended")):
        admin_conn.execute("select api.upsert_webinar(%s, %s, %s)", (wid, f"Room {wid}", state))
    r = Room(*(create_user(admin_conn) for _ in range(6)))
    admin_conn.execute("select api.set_staff(%s, %s, 'host')", (LIVE, r.host))
    admin_conn.execute("select api.set_staff(%s, %s, 'moderator')", (LIVE, r.moderator))
    admin_conn.execute("select api.set_staff(%s, %s, 'host')", (OTHER, r.other_host))
    for user in (r.viewer, r.peer):
        admin_conn.execute(
            "insert into eventlive.registrations (webinar_id, user_id, source)"
            " values (%s, %s, 'self'), (%s, %s, 'self')",
            (LIVE, user, ENDED, user),
        )
        admin_conn.execute(
            "insert into eventlive.profiles (user_id, display_name) values (%s, %s)",
            (user, "Viewer" if user == r.viewer else "Peer"),
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
        return error_of(exc, anonymous=role == "anon")
    return ("ok", row[0] if row else None)


def error_of(exc: psycopg.Error, *, anonymous: bool = False) -> Outcome:
    sqlstate = exc.sqlstate or ""
    if sqlstate == "PGRST":  # PostgREST's raise: body in message, status in detail
        body = json.loads(exc.diag.message_primary or "")
        meta = json.loads(exc.diag.message_detail or "")
        return (meta["status"], body["details"], meta["headers"].get("Retry-After"))
    return (status_for_sqlstate(sqlstate, anonymous), exc.diag.message_detail, None)


def send(
    db: psycopg.Connection[Any], user: uuid.UUID | None, body: str | None = "hello", **kw: Any
) -> Outcome:
    return call(db, "chat_send", {"webinar_id": LIVE, "body": body, **kw}, user)


def since(
    db: psycopg.Connection[Any], user: uuid.UUID | None, after: int = 0, **kw: Any
) -> dict[str, Any]:
    out = call(db, "chat_since", {"webinar_id": LIVE, "after_seq": after, **kw}, user)
    assert out[0] == "ok", out
    return dict(out[1])


def settings(admin: psycopg.Connection[Any], **values: Any) -> None:
    sets = ", ".join(f"{k} = %({k})s" for k in values)
    admin.execute(f"update eventlive.room_settings set {sets} where webinar_id = {LIVE}", values)  # noqa: S608 - keys are this module's


def events(
    admin: psycopg.Connection[Any], webinar: int = LIVE
) -> list[tuple[int, str, str, dict[str, Any]]]:
    return [
        (int(r[0]), r[1], r[2], r[3])
        for r in admin.execute(
            "select seq, channel, event, payload from eventlive.room_events where webinar_id = %s order by seq",
            (webinar,),
        ).fetchall()
    ]


# --- chat_send: the order of the checks ------------------------------------------------


def test_chat_send_checks_in_the_documented_order(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Each case breaks two rules: the answer is the earlier one in the documented order
    401 -> 404 -> 403 webinar_closed -> 403 not_registered -> 403 chat_disabled / banned
    -> replay -> 400 -> 429."""
    freeze_now(admin_conn, T0)
    stored = uuid.uuid4()
    assert send(db, room.viewer, "first", client_msg_id=stored)[0] == "ok"
    for n in range(4):
        assert send(db, room.viewer, f"m{n}")[0] == "ok"  # 5 in 30 s: the limit is reached
    assert (
        call(db, "chat_ban", {"webinar_id": LIVE, "user_id": room.peer, "minutes": 10}, room.host)[
            0
        ]
        == "ok"
    )
    cases = {
        "anon": (
            call(db, "chat_send", {"webinar_id": UNKNOWN, "body": ""}, None, role="anon"),
            (401, None, None),
        ),
        "401 before 404": (
            call(db, "chat_send", {"webinar_id": UNKNOWN, "body": ""}, None),
            (401, "not_authenticated", None),
        ),
        "404 before 403": (
            call(db, "chat_send", {"webinar_id": UNKNOWN, "body": ""}, room.stranger),
            (404, "webinar_not_found", None),
        ),
        "closed before not_registered": (
            call(db, "chat_send", {"webinar_id": ENDED, "body": "x"}, room.stranger),
            (403, "webinar_closed", None),
        ),
        "not_registered before banned or empty": (
            send(db, room.stranger, ""),
            (403, "not_registered", None),
        ),
        "banned before replay": (
            send(db, room.peer, "x", client_msg_id=stored),
            (403, "banned", None),
        ),
        "banned before 400": (send(db, room.peer, ""), (403, "banned", None)),
    }
    replay = send(db, room.viewer, "", client_msg_id=stored)  # empty body, rate limited: replayed
    cases["400 before 429"] = (send(db, room.viewer, " "), (400, "empty_message", None))
    cases["too long before 429"] = (
        send(db, room.viewer, "x" * 501),
        (400, "message_too_long", None),
    )
    cases["429"] = (send(db, room.viewer, "ok"), (429, "rate_limited", "30"))
    settings(admin_conn, chat_enabled=False)
    cases["chat_disabled before banned"] = (send(db, room.peer, "x"), (403, "chat_disabled", None))
    cases["chat_disabled before replay"] = (
        send(db, room.viewer, "x", client_msg_id=stored),
        (403, "chat_disabled", None),
    )
    assert {k: got for k, (got, want) in cases.items() if got != want} == {}
    assert replay[0] == "ok"
    assert replay[1]["status"] == "visible"
    stored_row = admin_conn.execute(
        "select id, body from eventlive.chat_messages where client_msg_id = %s", (stored,)
    ).fetchone()
    assert stored_row is not None
    assert (replay[1]["id"], stored_row[1]) == (stored_row[0], "first")


def test_a_sent_message_is_stored_published_on_chat_and_read_back_the_same_way(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """The answer names id, seq, created_at and status; the chat event's payload is the
    message exactly as chat_since returns it, seq at its top level."""
    out = send(db, room.viewer, "Hello, room")
    assert out[0] == "ok"
    receipt = out[1]
    assert set(receipt) == {"id", "seq", "created_at", "status"}
    assert receipt["status"] == "visible"
    page = since(db, room.peer)
    assert page["messages"] == [
        {
            "id": receipt["id"],
            "seq": receipt["seq"],
            "user_id": str(room.viewer),
            "display_name": "Viewer",
            "body": "Hello, room",
            "created_at": receipt["created_at"],
        }
    ]
    assert events(admin_conn) == [(receipt["seq"], "chat", "message", page["messages"][0])]


@pytest.mark.parametrize("body", [None, "", " ", "\n\t ", "\u3000\u00a0\u2003", "\ufeff"], ids=repr)
def test_a_blank_message_is_400_empty_message(
    db: psycopg.Connection[Any], room: Room, body: str | None
) -> None:
    assert send(db, room.viewer, body) == (400, "empty_message", None)


def test_the_length_limit_is_the_webinars_in_characters(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Default 500 characters (not bytes: multi-byte text counts per character); a host
    may set another limit."""
    assert send(db, room.viewer, "é" * 500)[0] == "ok"
    assert send(db, room.viewer, "é" * 501) == (400, "message_too_long", None)
    assert (
        call(db, "room_settings", {"webinar_id": LIVE, "max_message_chars": 10}, room.host)[0]
        == "ok"
    )
    assert send(db, room.viewer, "x" * 10)[0] == "ok"
    assert send(db, room.viewer, "x" * 11) == (400, "message_too_long", None)


# --- rate limit and slow mode -----------------------------------------------------------


def test_five_messages_per_30_seconds_then_429_with_the_seconds_until_the_oldest_expires(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Retry-After is whole seconds, rounded up; staff are exempt; a replay does not count."""
    freeze_now(admin_conn, T0)
    key = uuid.uuid4()
    assert send(db, room.viewer, "0", client_msg_id=key)[0] == "ok"
    for n in range(1, 5):
        freeze_now(admin_conn, T0 + dt.timedelta(seconds=n))
        assert send(db, room.viewer, str(n))[0] == "ok"
    assert send(db, room.viewer, "0", client_msg_id=key)[0] == "ok"  # replay: free
    assert send(db, room.viewer, "5") == (429, "rate_limited", "26")
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=29.5))
    assert send(db, room.viewer, "5") == (429, "rate_limited", "1")
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=30))
    assert send(db, room.viewer, "5")[0] == "ok"
    assert send(db, room.viewer, "6") == (429, "rate_limited", "1")
    for n in range(12):
        assert send(db, room.host, f"host {n}")[0] == "ok"
    assert send(db, room.peer, "the limit is per viewer")[0] == "ok"


def test_slow_mode_spaces_a_viewers_messages_and_spares_staff(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    freeze_now(admin_conn, T0)
    assert (
        call(db, "room_settings", {"webinar_id": LIVE, "slow_mode_seconds": 10}, room.host)[0]
        == "ok"
    )
    assert send(db, room.viewer, "a")[0] == "ok"
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=3.2))
    assert send(db, room.viewer, "b") == (429, "rate_limited", "7")
    assert send(db, room.host, "b")[0] == "ok"
    assert send(db, room.host, "c")[0] == "ok"
    freeze_now(admin_conn, T0 + dt.timedelta(seconds=10))
    assert send(db, room.viewer, "b")[0] == "ok"


def test_the_shim_answers_a_rate_limit_with_http_429_and_a_retry_after_header(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, room: Room
) -> None:
    """PostgREST's RAISE SQLSTATE 'PGRST' through the real shim: status, header, body."""
    secret = "chat-tests-hs256-secret-of-at-least-32-bytes"
    freeze_now(admin_conn, T0)
    settings_ = Settings(
        database_url=eventlive_db.dsn, jwt_secret=secret, pool_min=1, pool_max=2, access_log=False
    )
    now = int(time.time())
    tok = jwt.encode(
        {
            "sub": str(room.viewer),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": now + 600,
        },
        secret,
        algorithm="HS256",
    )

    async def scenario() -> list[httpx.Response]:
        from shim.serve.app import create_app

        app = create_app(settings_, NO_HUB)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
                return [
                    await client.post(
                        "/rpc/chat_send",
                        json={"webinar_id": LIVE, "body": f"m{n}"},
                        headers={"Authorization": f"Bearer {tok}"},
                    )
                    for n in range(6)
                ]

    answers = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[-1].headers["retry-after"] == "30"
    assert answers[-1].json() == {
        "code": "PT429",
        "message": "Too many messages: try again in 30 s.",
        "details": "rate_limited",
        "hint": "Retry after 30 s.",
    }


# --- bans --------------------------------------------------------------------------------


def test_a_ban_holds_for_its_minutes_or_until_the_webinar_ends_and_can_be_lifted(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    freeze_now(admin_conn, T0)
    out = call(
        db, "chat_ban", {"webinar_id": LIVE, "user_id": room.viewer, "minutes": 5}, room.moderator
    )
    assert out[0] == "ok"
    assert out[1]["until"].startswith("2026-11-26T12:05:00")
    assert send(db, room.viewer) == (403, "banned", None)
    freeze_now(admin_conn, T0 + dt.timedelta(minutes=5))
    assert send(db, room.viewer)[0] == "ok"
    assert (
        call(db, "chat_ban", {"webinar_id": LIVE, "user_id": room.viewer}, room.host)[1]["until"]
        is None
    )
    freeze_now(admin_conn, T0 + dt.timedelta(days=30))
    assert send(db, room.viewer) == (403, "banned", None)
    assert (
        call(db, "chat_unban", {"webinar_id": LIVE, "user_id": room.viewer}, room.host)[0] == "ok"
    )
    assert (
        call(db, "chat_unban", {"webinar_id": LIVE, "user_id": room.viewer}, room.host)[0] == "ok"
    )
    assert send(db, room.viewer)[0] == "ok"


@pytest.mark.parametrize(
    ("actor", "args", "want"),
    [
        ("viewer", {"user_id": "peer"}, (403, "not_staff", None)),
        ("other_host", {"user_id": "peer"}, (403, "not_staff", None)),
        ("no_sub", {"user_id": "peer"}, (401, "not_authenticated", None)),
        ("host", {"user_id": "peer", "webinar_id": UNKNOWN}, (404, "webinar_not_found", None)),
        ("host", {"user_id": "peer", "minutes": 0}, (400, "invalid_minutes", None)),
        ("host", {"user_id": "peer", "minutes": 525601}, (400, "invalid_minutes", None)),
        ("host", {"user_id": "nobody"}, (404, "user_not_found", None)),
        ("host", {"user_id": "moderator"}, (400, "cannot_ban_staff", None)),
    ],
)
def test_chat_ban_refuses(
    db: psycopg.Connection[Any], room: Room, actor: str, args: dict[str, Any], want: Outcome
) -> None:
    resolved = {"webinar_id": LIVE} | args
    resolved["user_id"] = (
        uuid.uuid4() if args["user_id"] == "nobody" else getattr(room, args["user_id"])
    )
    assert call(db, "chat_ban", resolved, getattr(room, actor, None)) == want


# --- held messages and moderation -----------------------------------------------------------


def test_held_messages_are_seen_by_staff_only_until_approved(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """hold_for_review: a viewer's message is held (staff hear message_held on admin, not
    chat), viewers do not see it; approval publishes it on chat with a new seq. Staff's
    own messages are never held."""
    assert (
        call(db, "room_settings", {"webinar_id": LIVE, "hold_for_review": True}, room.host)[0]
        == "ok"
    )
    held = send(db, room.viewer, "please approve")
    assert held[0] == "ok"
    assert held[1]["status"] == "held"
    assert send(db, room.host, "from the host")[1]["status"] == "visible"
    assert [m["body"] for m in since(db, room.peer)["messages"]] == ["from the host"]
    assert [m["body"] for m in since(db, room.viewer)["messages"]] == ["from the host"]
    staff_view = since(db, room.moderator)["messages"]
    assert [(m["body"], m["held"]) for m in staff_view] == [
        ("please approve", True),
        ("from the host", False),
    ]
    assert [(c, e) for _, c, e, _ in events(admin_conn)] == [
        ("chat", "settings"),
        ("admin", "message_held"),
        ("chat", "message"),
    ]
    approved = call(
        db, "chat_moderate", {"message_id": held[1]["id"], "action": "approve"}, room.moderator
    )
    assert approved[0] == "ok"
    assert approved[1]["status"] == "visible"
    assert approved[1]["seq"] > held[1]["seq"]
    page = since(db, room.peer)["messages"]
    assert [(m["body"], m["seq"]) for m in page] == [
        ("from the host", page[0]["seq"]),
        ("please approve", approved[1]["seq"]),
    ]
    assert events(admin_conn)[-1][1:3] == ("chat", "message")


def test_moderation_hides_shows_and_deletes_and_viewers_see_tombstones(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    msg = send(db, room.viewer, "rude")[1]
    mod = {"message_id": msg["id"]}
    hidden = call(db, "chat_moderate", mod | {"action": "hide"}, room.moderator)[1]
    assert (
        call(db, "chat_moderate", mod | {"action": "hide"}, room.moderator)[1] == hidden
    )  # idempotent
    assert since(db, room.peer)["messages"] == [
        {"id": msg["id"], "seq": hidden["seq"], "hidden": True}
    ]
    assert since(db, room.host)["messages"][0]["status"] == "hidden"
    assert since(db, room.peer, after=hidden["seq"])["messages"] == []
    shown = call(db, "chat_moderate", mod | {"action": "show"}, room.host)[1]
    assert since(db, room.peer, after=hidden["seq"])["messages"][0]["body"] == "rude"
    deleted = call(db, "chat_moderate", mod | {"action": "delete"}, room.host)[1]
    assert deleted["status"] == "deleted"
    assert call(db, "chat_moderate", mod | {"action": "show"}, room.host) == (
        409,
        "message_deleted",
        None,
    )
    assert since(db, room.peer, after=shown["seq"])["messages"] == [
        {"id": msg["id"], "seq": deleted["seq"], "hidden": True}
    ]
    assert [e for _, _, e, _ in events(admin_conn)] == [
        "message",
        "message_hidden",
        "message",
        "message_hidden",
    ]


@pytest.mark.parametrize(
    ("actor", "args", "want"),
    [
        ("no_sub", {"action": "hide"}, (401, "not_authenticated", None)),
        ("host", {"action": "ban"}, (400, "invalid_action", None)),
        ("host", {"action": None}, (400, "invalid_action", None)),
        ("host", {"action": "hide", "message_id": 10**12}, (404, "message_not_found", None)),
        ("viewer", {"action": "hide"}, (403, "not_staff", None)),
        ("other_host", {"action": "delete"}, (403, "not_staff", None)),
    ],
)
def test_chat_moderate_refuses(
    db: psycopg.Connection[Any], room: Room, actor: str, args: dict[str, Any], want: Outcome
) -> None:
    msg = send(db, room.peer, "a message")[1]
    assert (
        call(db, "chat_moderate", {"message_id": msg["id"]} | args, getattr(room, actor, None))
        == want
    )
    assert since(db, room.viewer)["messages"][0]["body"] == "a message"


# --- room settings -------------------------------------------------------------------------------


def test_room_settings_are_for_hosts_null_keeps_a_value_and_a_change_is_published_once(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    defaults = {
        "chat_enabled": True,
        "qa_enabled": True,
        "slow_mode_seconds": 0,
        "hold_for_review": False,
        "max_message_chars": 500,
    }
    assert call(db, "room_settings", {"webinar_id": LIVE}, room.host) == ("ok", defaults)
    off = call(db, "room_settings", {"webinar_id": LIVE, "chat_enabled": False}, room.host)
    assert off == ("ok", defaults | {"chat_enabled": False})
    assert call(db, "room_settings", {"webinar_id": LIVE, "chat_enabled": False}, room.host) == off
    assert send(db, room.viewer) == (403, "chat_disabled", None)
    assert since(db, room.viewer)["settings"]["chat_enabled"] is False
    assert [(c, e, p) for _, c, e, p in events(admin_conn)] == [
        ("chat", "settings", defaults | {"chat_enabled": False, "seq": 1})
    ]
    refusals = {
        "moderator": call(
            db, "room_settings", {"webinar_id": LIVE, "chat_enabled": True}, room.moderator
        ),
        "viewer": call(db, "room_settings", {"webinar_id": LIVE}, room.viewer),
        "other host": call(db, "room_settings", {"webinar_id": LIVE}, room.other_host),
        "slow": call(
            db, "room_settings", {"webinar_id": LIVE, "slow_mode_seconds": 3601}, room.host
        ),
        "negative slow": call(
            db, "room_settings", {"webinar_id": LIVE, "slow_mode_seconds": -1}, room.host
        ),
        "chars": call(db, "room_settings", {"webinar_id": LIVE, "max_message_chars": 0}, room.host),
        "unknown": call(db, "room_settings", {"webinar_id": UNKNOWN}, room.host),
    }
    assert refusals == {
        "moderator": (403, "not_host", None),
        "viewer": (403, "not_staff", None),
        "other host": (403, "not_staff", None),
        "slow": (400, "invalid_slow_mode_seconds", None),
        "negative slow": (400, "invalid_slow_mode_seconds", None),
        "chars": (400, "invalid_max_message_chars", None),
        "unknown": (404, "webinar_not_found", None),
    }


# --- chat_since ----------------------------------------------------------------------------------


def test_chat_since_pages_by_cursor_and_skips_other_channels_when_caught_up(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    for n in range(4):
        assert send(db, room.host, f"m{n}")[0] == "ok"
    question = call(db, "question_ask", {"webinar_id": LIVE, "body": "a question"}, room.viewer)
    first = since(db, room.viewer, max_rows=3)
    assert [m["body"] for m in first["messages"]] == ["m0", "m1", "m2"]
    assert first["next_seq"] == first["messages"][-1]["seq"]
    rest = since(db, room.viewer, after=first["next_seq"], max_rows=3)
    assert [m["body"] for m in rest["messages"]] == ["m3"]
    assert rest["next_seq"] == question[1]["seq"]  # the Q&A event is behind the cursor too
    empty = since(db, room.viewer, after=rest["next_seq"])
    assert (empty["messages"], empty["next_seq"]) == ([], rest["next_seq"])


@pytest.mark.parametrize(
    ("actor", "args", "want"),
    [
        ("anon", {}, (401, None, None)),
        ("no_sub", {"webinar_id": UNKNOWN}, (401, "not_authenticated", None)),
        ("stranger", {"webinar_id": UNKNOWN}, (404, "webinar_not_found", None)),
        ("stranger", {"max_rows": 0}, (403, "not_registered", None)),
        ("viewer", {"max_rows": 0}, (400, "invalid_max_rows", None)),
        ("viewer", {"max_rows": 1001}, (400, "invalid_max_rows", None)),
        ("viewer", {"after_seq": -1}, (400, "invalid_after_seq", None)),
        ("other_host", {}, (403, "not_registered", None)),
    ],
)
def test_chat_since_refuses(
    db: psycopg.Connection[Any], room: Room, actor: str, args: dict[str, Any], want: Outcome
) -> None:
    role = "anon" if actor == "anon" else "authenticated"
    got = call(db, "chat_since", {"webinar_id": LIVE} | args, getattr(room, actor, None), role=role)
    assert got == want


def test_chat_since_is_stable_and_its_poll_interval_grows_with_the_present_crowd(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """Stable (GET-able, cacheable); poll_after_seconds 2 in a small room, +1 s per 250
    present viewers in the latest minute sample, at most 30."""
    volatility = admin_conn.execute(
        "select provolatile from pg_proc where oid = 'api.chat_since(bigint, bigint, integer)'::regprocedure"
    ).fetchone()
    assert volatility == ("s",)
    got = {}
    for minute, viewers in enumerate((0, 249, 250, 1000, 5000, 100000)):
        admin_conn.execute(
            "insert into eventlive.presence_minutes (webinar_id, minute, viewers) values (%s, %s, %s)",
            (LIVE, T0 + dt.timedelta(minutes=minute), viewers),
        )
        got[viewers] = since(db, room.viewer)["poll_after_seconds"]
    assert got == {0: 2, 249: 2, 250: 3, 1000: 6, 5000: 22, 100000: 30}


# --- concurrency -----------------------------------------------------------------------------------


def test_concurrent_retries_of_one_message_store_it_once_and_all_get_the_same_answer(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, room: Room
) -> None:
    """12 connections send the same client_msg_id at once while 12 others send distinct
    messages from another viewer: no error escapes (no 23505), one stored row and one
    event for the retried message, every answer names it."""
    key = uuid.uuid4()
    results: list[Outcome] = []
    lock = threading.Lock()
    barrier = threading.Barrier(24)
    settings(admin_conn, slow_mode_seconds=0)
    admin_conn.execute("select api.set_staff(%s, %s, 'moderator')", (LIVE, room.peer))  # no limit

    def worker(n: int) -> None:
        with psycopg.connect(eventlive_db.dsn) as conn:
            barrier.wait(30)
            if n < 12:
                out = send(conn, room.viewer, "retried", client_msg_id=key)
            else:
                out = send(conn, room.peer, f"distinct {n}", client_msg_id=uuid.uuid4())
            with lock:
                results.append((n, *out))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r for r in results if r[1] != "ok"] == []
    retried = {r[2]["id"] for r in results if r[0] < 12}
    assert len(retried) == 1
    rows = admin_conn.execute(
        "select count(*) filter (where client_msg_id = %s), count(*) from eventlive.chat_messages",
        (key,),
    ).fetchone()
    assert rows == (1, 13)
    seqs = [s for s, *_ in events(admin_conn)]
    assert seqs == list(range(1, 14))


# --- track_access ----------------------------------------------------------------------------------


def test_a_superseded_session_is_told_on_its_user_topic_at_once(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], room: Room
) -> None:
    """A second entry without session_id publishes session_superseded {session_id,
    superseded_by, seq} on user:<uid>; a re-confirmation publishes nothing."""
    first = call(db, "track_access", {"webinar_id": LIVE}, room.viewer)[1]["session_id"]
    call(db, "track_access", {"webinar_id": LIVE, "session_id": first}, room.viewer)
    assert events(admin_conn) == []
    second = call(db, "track_access", {"webinar_id": LIVE}, room.viewer)[1]["session_id"]
    assert events(admin_conn) == [
        (
            1,
            f"user:{room.viewer}",
            "session_superseded",
            {"session_id": first, "superseded_by": second, "seq": 1},
        )
    ]


# --- readers of the shared polled answers (eventlive.room_readers) ---------------------


def test_room_readers_name_the_callers_class_and_tell_it_only_to_a_member(
    db: psycopg.Connection[Any], room: Room
) -> None:
    """The shim shares chat_since / questions answers per class of readers: staff (and
    service_role) or registered viewers, never mixed (staff also see held messages); a
    stranger gets null; a class's members are told only to one of them."""

    def readers(user: uuid.UUID | None, role: str = "authenticated") -> Any:
        with act_as(db, user, role=role) as c:
            row = c.execute("select eventlive.room_readers(%s)", (LIVE,)).fetchone()
        return row[0] if row else None

    staff = readers(room.moderator)
    assert staff["class"] == "staff"
    assert staff["roles"] == ["service_role"]
    assert set(staff["users"]) == {str(room.host), str(room.moderator)}
    assert readers(None, role="service_role")["class"] == "staff"
    viewers = readers(room.viewer)
    assert (viewers["class"], viewers["roles"]) == ("viewer", [])
    assert set(viewers["users"]) == {str(room.viewer), str(room.peer)}
    assert readers(room.stranger) is None
    assert readers(room.other_host) is None  # staff of another webinar only
