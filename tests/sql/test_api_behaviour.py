"""The behaviour table of the SQL API (the README's table): every api function in every situation answers with
the documented SQLSTATE, HTTP status (PostgREST's mapping) and reason (``details``).

Runs as ``authenticator`` switching roles like the shim, so grants and RLS are real.
The helpers here (``call``, ``build_world``, ``postgrest_status``) are shared by the
other ``test_api_*`` modules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from shim.testing import act_as, create_user

AUTO, REGISTERED_ONLY, ENDED, DRAFT, PAST_CLOSE, SCHEDULED, UNKNOWN = 1, 2, 3, 4, 5, 6, 999


def postgrest_status(sqlstate: str, anonymous: bool) -> int:
    """PostgREST's SQLSTATE -> HTTP status table (the part our functions can produce)."""
    if sqlstate == "42501":
        return 401 if anonymous else 403
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    fixed = {"P0001": 400, "23505": 409, "23503": 409, "42883": 404, "42P01": 404}
    if sqlstate in fixed:
        return fixed[sqlstate]
    if sqlstate[:2] in ("08", "53"):
        return 503
    return 400  # PostgREST's default, e.g. class 22 (22023 invalid_parameter_value)


def call(
    conn: psycopg.Connection[Any],
    fn: str,
    args: dict[str, Any],
    user: uuid.UUID | None,
    *,
    role: str = "authenticated",
    commit: bool = False,
) -> Any:
    """Call ``api.fn`` with named arguments as ``role``/``user``, the way the shim does."""
    params = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in args.items()}
    named = ", ".join(f"{k} => %({k})s" for k in args)
    with act_as(conn, user, role=role, commit=commit) as c:
        row = c.execute(f"select api.{fn}({named})", params).fetchone()
    assert row is not None
    return row[0]


@dataclass
class World:
    viewer: uuid.UUID  # registered for AUTO and REGISTERED_ONLY
    stranger: uuid.UUID  # registered nowhere
    staff: uuid.UUID  # host of AUTO and REGISTERED_ONLY, registered nowhere
    other_staff: uuid.UUID  # host of ENDED only
    active: uuid.UUID  # viewer's active session in AUTO
    superseded: uuid.UUID  # viewer's earlier session in AUTO, superseded by active
    left: uuid.UUID  # viewer's session in REGISTERED_ONLY, ended by presence_leave


def build_world(admin: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> World:
    """Webinars in every state, four users, and sessions in every state."""
    for wid, state, entry, closes in [
        (AUTO, "live", "auto", None),
        (REGISTERED_ONLY, "live", "registered", None),
        (ENDED, "ended", "auto", None),
        (DRAFT, "draft", "auto", None),
        (PAST_CLOSE, "live", "auto", "2020-01-01T00:00:00Z"),
        (SCHEDULED, "scheduled", "auto", None),
    ]:
        admin.execute(
            "select api.upsert_webinar(%s, %s, %s, %s, closes_at => %s)",
            (wid, f"Webinar {wid}", state, entry, closes),
        )
    viewer, stranger, staff, other_staff = (create_user(admin) for _ in range(4))
    for wid, user in [(AUTO, staff), (REGISTERED_ONLY, staff), (ENDED, other_staff)]:
        admin.execute("select api.set_staff(%s, %s)", (wid, user))
    admin.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source)"
        " values (%s, %s, 'service'), (%s, %s, 'service')",
        (AUTO, viewer, REGISTERED_ONLY, viewer),
    )
    superseded = uuid.UUID(
        call(db, "track_access", {"webinar_id": AUTO}, viewer, commit=True)["session_id"]
    )
    active = uuid.UUID(
        call(db, "track_access", {"webinar_id": AUTO}, viewer, commit=True)["session_id"]
    )
    left = uuid.UUID(
        call(db, "track_access", {"webinar_id": REGISTERED_ONLY}, viewer, commit=True)["session_id"]
    )
    call(
        db,
        "presence_leave",
        {"webinar_id": REGISTERED_ONLY, "session_id": left},
        viewer,
        commit=True,
    )
    return World(viewer, stranger, staff, other_staff, active, superseded, left)


@pytest.fixture
def world(admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> World:
    return build_world(admin_conn, db)


OK = None
VOID_FUNCTIONS = {
    "presence_ping",
    "presence_leave",
    "set_staff",
    "remove_staff",
    "chat_unban",
}  # 204

# (function, arguments, actor, expected SQLSTATE or OK, HTTP status, reason in details)
# Actors: a World attribute, "anon", "no_sub" (authenticated role, no sub claim), "service".
# HTTP status: PostgREST's mapping of the SQLSTATE (postgrest_status); OK is 200, or 204
# for a function returning void.
# fmt: off
CASES: list[tuple[str, dict[str, Any], str, str | None, int, str | None]] = [
    # track_access
    ("track_access", {"webinar_id": AUTO}, "anon", "42501", 401, None),
    ("track_access", {"webinar_id": AUTO}, "no_sub", "PT401", 401, "not_authenticated"),
    ("track_access", {"webinar_id": UNKNOWN}, "viewer", "PT404", 404, "webinar_not_found"),
    ("track_access", {"webinar_id": ENDED}, "viewer", "PT403", 403, "webinar_closed"),
    ("track_access", {"webinar_id": DRAFT}, "viewer", "PT403", 403, "webinar_closed"),
    ("track_access", {"webinar_id": PAST_CLOSE}, "viewer", "PT403", 403, "webinar_closed"),
    ("track_access", {"webinar_id": SCHEDULED}, "stranger", OK, 200, None),
    ("track_access", {"webinar_id": AUTO}, "viewer", OK, 200, None),
    ("track_access", {"webinar_id": AUTO}, "stranger", OK, 200, None),
    ("track_access", {"webinar_id": REGISTERED_ONLY}, "stranger", "PT403", 403, "not_registered"),
    ("track_access", {"webinar_id": REGISTERED_ONLY}, "staff", OK, 200, None),
    ("track_access", {"webinar_id": AUTO, "session_id": "active"}, "viewer", OK, 200, None),
    ("track_access", {"webinar_id": AUTO, "session_id": "superseded"}, "viewer", "PT409", 409, "session_superseded"),
    ("track_access", {"webinar_id": REGISTERED_ONLY, "session_id": "left"}, "viewer", "PT409", 409, "session_ended"),
    ("track_access", {"webinar_id": AUTO, "session_id": "active"}, "stranger", "22023", 400, "invalid_session_id"),
    ("track_access", {"webinar_id": AUTO, "client": {"ua": "x" * 5000}}, "viewer", "22023", 400, "client_too_large"),
    # presence_ping
    ("presence_ping", {"webinar_id": AUTO, "session_id": "active"}, "anon", "42501", 401, None),
    ("presence_ping", {"webinar_id": AUTO, "session_id": "active"}, "no_sub", "PT401", 401, "not_authenticated"),
    ("presence_ping", {"webinar_id": AUTO, "session_id": None}, "viewer", "22023", 400, "invalid_session_id"),
    ("presence_ping", {"webinar_id": UNKNOWN, "session_id": "active"}, "viewer", "PT404", 404, "webinar_not_found"),
    ("presence_ping", {"webinar_id": ENDED, "session_id": "active"}, "viewer", "PT403", 403, "webinar_closed"),
    ("presence_ping", {"webinar_id": AUTO, "session_id": "active"}, "viewer", OK, 204, None),
    ("presence_ping", {"webinar_id": AUTO, "session_id": "active"}, "stranger", "PT403", 403, "not_registered"),
    ("presence_ping", {"webinar_id": REGISTERED_ONLY, "session_id": "active"}, "staff", "PT403", 403, "not_registered"),
    ("presence_ping", {"webinar_id": AUTO, "session_id": "superseded"}, "viewer", "PT409", 409, "session_superseded"),
    ("presence_ping", {"webinar_id": REGISTERED_ONLY, "session_id": "left"}, "viewer", "PT409", 409, "session_ended"),
    ("presence_ping", {"webinar_id": AUTO, "session_id": "fresh"}, "viewer", "PT409", 409, "session_ended"),
    # presence_leave
    ("presence_leave", {"webinar_id": AUTO, "session_id": "active"}, "anon", "42501", 401, None),
    ("presence_leave", {"webinar_id": AUTO, "session_id": "active"}, "no_sub", "PT401", 401, "not_authenticated"),
    ("presence_leave", {"webinar_id": AUTO, "session_id": None}, "viewer", "22023", 400, "invalid_session_id"),
    ("presence_leave", {"webinar_id": UNKNOWN, "session_id": "active"}, "viewer", "PT404", 404, "webinar_not_found"),
    ("presence_leave", {"webinar_id": AUTO, "session_id": "active"}, "viewer", OK, 204, None),
    ("presence_leave", {"webinar_id": AUTO, "session_id": "superseded"}, "viewer", OK, 204, None),
    ("presence_leave", {"webinar_id": AUTO, "session_id": "active"}, "stranger", OK, 204, None),
    ("presence_leave", {"webinar_id": ENDED, "session_id": "fresh"}, "viewer", OK, 204, None),
    # access_stats
    ("access_stats", {"webinar_id": AUTO}, "anon", "42501", 401, None),
    ("access_stats", {"webinar_id": AUTO}, "no_sub", "PT401", 401, "not_authenticated"),
    ("access_stats", {"webinar_id": UNKNOWN}, "staff", "PT404", 404, "webinar_not_found"),
    ("access_stats", {"webinar_id": AUTO}, "viewer", "PT403", 403, "not_staff"),
    ("access_stats", {"webinar_id": AUTO}, "other_staff", "PT403", 403, "not_staff"),
    ("access_stats", {"webinar_id": AUTO}, "staff", OK, 200, None),
    ("access_stats", {"webinar_id": ENDED}, "other_staff", OK, 200, None),
    ("access_stats", {"webinar_id": AUTO}, "service", OK, 200, None),
    # participants
    ("participants", {"webinar_id": AUTO}, "anon", "42501", 401, None),
    ("participants", {"webinar_id": UNKNOWN}, "staff", "PT404", 404, "webinar_not_found"),
    ("participants", {"webinar_id": AUTO}, "viewer", "PT403", 403, "not_staff"),
    ("participants", {"webinar_id": AUTO}, "other_staff", "PT403", 403, "not_staff"),
    ("participants", {"webinar_id": AUTO}, "staff", OK, 200, None),
    ("participants", {"webinar_id": AUTO}, "service", OK, 200, None),
    ("participants", {"webinar_id": AUTO, "max_rows": 0}, "staff", "22023", 400, "invalid_max_rows"),
    ("participants", {"webinar_id": AUTO, "max_rows": 1001}, "staff", "22023", 400, "invalid_max_rows"),
    # profiles_batch
    ("profiles_batch", {"user_ids": "viewer_only"}, "anon", "42501", 401, None),
    ("profiles_batch", {"user_ids": "viewer_only"}, "no_sub", "PT401", 401, "not_authenticated"),
    ("profiles_batch", {"user_ids": "viewer_only"}, "viewer", OK, 200, None),
    ("profiles_batch", {"user_ids": "viewer_only"}, "staff", OK, 200, None),
    ("profiles_batch", {"user_ids": "viewer_only"}, "service", OK, 200, None),
    ("profiles_batch", {"user_ids": "500"}, "staff", OK, 200, None),
    ("profiles_batch", {"user_ids": "501"}, "staff", "22023", 400, "too_many_ids"),
    # upsert_webinar
    ("upsert_webinar", {"webinar_id": 77, "title": "New"}, "anon", "42501", 401, None),
    ("upsert_webinar", {"webinar_id": 77, "title": "New"}, "staff", "42501", 403, None),
    ("upsert_webinar", {"webinar_id": 77, "title": "New"}, "service", OK, 200, None),
    ("upsert_webinar", {"webinar_id": AUTO, "title": "Renamed"}, "service", OK, 200, None),
    ("upsert_webinar", {"webinar_id": 77, "title": "New", "state": "open"}, "service", "22023", 400, "invalid_state"),
    ("upsert_webinar", {"webinar_id": 77, "title": "New", "entry": "any"}, "service", "22023", 400, "invalid_entry"),
    ("upsert_webinar", {"webinar_id": 77, "title": ""}, "service", "22023", 400, "invalid_title"),
    ("upsert_webinar", {"webinar_id": 77, "title": "New", "heartbeat_seconds": 5}, "service", "22023", 400, "invalid_heartbeat_seconds"),
    ("upsert_webinar", {"webinar_id": 77, "title": "New", "track_seconds": 5}, "service", "22023", 400, "invalid_track_seconds"),
    ("upsert_webinar", {"webinar_id": 77, "title": "New", "opens_at": "2030-01-02T00:00:00Z", "closes_at": "2030-01-01T00:00:00Z"}, "service", "22023", 400, "invalid_window"),
    # set_staff
    ("set_staff", {"webinar_id": AUTO, "user_id": "stranger"}, "anon", "42501", 401, None),
    ("set_staff", {"webinar_id": AUTO, "user_id": "stranger"}, "staff", "42501", 403, None),
    ("set_staff", {"webinar_id": AUTO, "user_id": "stranger"}, "service", OK, 204, None),
    ("set_staff", {"webinar_id": AUTO, "user_id": "stranger", "role": "moderator"}, "service", OK, 204, None),
    ("set_staff", {"webinar_id": AUTO, "user_id": "stranger", "role": "owner"}, "service", "22023", 400, "invalid_role"),
    ("set_staff", {"webinar_id": UNKNOWN, "user_id": "stranger"}, "service", "PT404", 404, "webinar_not_found"),
    ("set_staff", {"webinar_id": AUTO, "user_id": "nobody"}, "service", "PT404", 404, "user_not_found"),
    # remove_staff
    ("remove_staff", {"webinar_id": AUTO, "user_id": "staff"}, "anon", "42501", 401, None),
    ("remove_staff", {"webinar_id": AUTO, "user_id": "staff"}, "staff", "42501", 403, None),
    ("remove_staff", {"webinar_id": AUTO, "user_id": "staff"}, "service", OK, 204, None),
    ("remove_staff", {"webinar_id": AUTO, "user_id": "stranger"}, "service", OK, 204, None),
    ("remove_staff", {"webinar_id": UNKNOWN, "user_id": "staff"}, "service", "PT404", 404, "webinar_not_found"),
    # register
    ("register", {"webinar_id": AUTO}, "anon", "42501", 401, None),
    ("register", {"webinar_id": AUTO}, "no_sub", "PT401", 401, "not_authenticated"),
    ("register", {"webinar_id": AUTO}, "viewer", OK, 200, None),
    ("register", {"webinar_id": REGISTERED_ONLY}, "stranger", OK, 200, None),
    ("register", {"webinar_id": SCHEDULED}, "stranger", OK, 200, None),
    ("register", {"webinar_id": ENDED}, "stranger", "PT403", 403, "webinar_closed"),
    ("register", {"webinar_id": DRAFT}, "stranger", "PT403", 403, "webinar_closed"),
    ("register", {"webinar_id": UNKNOWN}, "stranger", "PT404", 404, "webinar_not_found"),
    ("register", {"webinar_id": AUTO, "user_id": "viewer"}, "stranger", "PT403", 403, "not_service_role"),
    ("register", {"webinar_id": AUTO, "user_id": "stranger"}, "other_staff", "PT403", 403, "not_service_role"),
    # only service_role registers someone else (the API contract): staff may not, and are not told
    # whether the user exists
    ("register", {"webinar_id": AUTO, "user_id": "stranger"}, "staff", "PT403", 403, "not_service_role"),
    ("register", {"webinar_id": AUTO, "user_id": "nobody"}, "staff", "PT403", 403, "not_service_role"),
    ("register", {"webinar_id": ENDED, "user_id": "stranger"}, "other_staff", "PT403", 403, "not_service_role"),
    ("register", {"webinar_id": ENDED, "user_id": "stranger"}, "service", OK, 200, None),
    ("register", {"webinar_id": AUTO, "user_id": "stranger"}, "service", OK, 200, None),
    ("register", {"webinar_id": AUTO}, "service", "22023", 400, "user_id_required"),
    ("register", {"webinar_id": AUTO, "user_id": "nobody"}, "service", "PT404", 404, "user_not_found"),
    # chat and Q&A (the order of checks, 429 and the rest: tests/sql/test_chat.py, test_questions.py)
    ("chat_send", {"webinar_id": AUTO, "body": "hi"}, "anon", "42501", 401, None),
    ("chat_send", {"webinar_id": UNKNOWN, "body": "hi"}, "no_sub", "PT401", 401, "not_authenticated"),
    ("chat_send", {"webinar_id": UNKNOWN, "body": "hi"}, "viewer", "PT404", 404, "webinar_not_found"),
    ("chat_send", {"webinar_id": ENDED, "body": "hi"}, "stranger", "PT403", 403, "webinar_closed"),
    ("chat_send", {"webinar_id": AUTO, "body": "hi"}, "stranger", "PT403", 403, "not_registered"),
    ("chat_send", {"webinar_id": AUTO, "body": "hi"}, "viewer", OK, 200, None),
    ("chat_send", {"webinar_id": AUTO, "body": "hi"}, "staff", OK, 200, None),
    ("chat_send", {"webinar_id": AUTO, "body": " \n"}, "viewer", "22023", 400, "empty_message"),
    ("chat_send", {"webinar_id": AUTO, "body": "x" * 501}, "viewer", "22023", 400, "message_too_long"),
    ("chat_since", {"webinar_id": AUTO}, "anon", "42501", 401, None),
    ("chat_since", {"webinar_id": AUTO}, "no_sub", "PT401", 401, "not_authenticated"),
    ("chat_since", {"webinar_id": AUTO}, "viewer", OK, 200, None),
    ("chat_since", {"webinar_id": AUTO}, "service", OK, 200, None),
    ("chat_since", {"webinar_id": AUTO}, "stranger", "PT403", 403, "not_registered"),
    ("chat_since", {"webinar_id": AUTO, "max_rows": 0}, "viewer", "22023", 400, "invalid_max_rows"),
    ("chat_since", {"webinar_id": AUTO, "after_seq": -1}, "viewer", "22023", 400, "invalid_after_seq"),
    ("chat_moderate", {"message_id": 1, "action": "hide"}, "no_sub", "PT401", 401, "not_authenticated"),
    ("chat_moderate", {"message_id": 1, "action": "mute"}, "staff", "22023", 400, "invalid_action"),
    ("chat_moderate", {"message_id": 999999, "action": "hide"}, "staff", "PT404", 404, "message_not_found"),
    ("chat_ban", {"webinar_id": AUTO, "user_id": "viewer"}, "staff", OK, 200, None),
    ("chat_ban", {"webinar_id": AUTO, "user_id": "viewer"}, "service", OK, 200, None),
    ("chat_ban", {"webinar_id": AUTO, "user_id": "stranger"}, "viewer", "PT403", 403, "not_staff"),
    ("chat_ban", {"webinar_id": AUTO, "user_id": "viewer", "minutes": 0}, "staff", "22023", 400, "invalid_minutes"),
    ("chat_ban", {"webinar_id": AUTO, "user_id": "nobody"}, "staff", "PT404", 404, "user_not_found"),
    ("chat_ban", {"webinar_id": AUTO, "user_id": "staff"}, "staff", "22023", 400, "cannot_ban_staff"),
    ("chat_unban", {"webinar_id": AUTO, "user_id": "viewer"}, "staff", OK, 204, None),
    ("chat_unban", {"webinar_id": AUTO, "user_id": "viewer"}, "viewer", "PT403", 403, "not_staff"),
    ("room_settings", {"webinar_id": AUTO}, "staff", OK, 200, None),
    ("room_settings", {"webinar_id": AUTO}, "viewer", "PT403", 403, "not_staff"),
    ("room_settings", {"webinar_id": UNKNOWN}, "staff", "PT404", 404, "webinar_not_found"),
    ("room_settings", {"webinar_id": AUTO, "slow_mode_seconds": 5000}, "staff", "22023", 400, "invalid_slow_mode_seconds"),
    ("room_settings", {"webinar_id": AUTO, "max_message_chars": 5000}, "staff", "22023", 400, "invalid_max_message_chars"),
    ("question_ask", {"webinar_id": AUTO, "body": "why?"}, "anon", "42501", 401, None),
    ("question_ask", {"webinar_id": AUTO, "body": "why?"}, "viewer", OK, 200, None),
    ("question_ask", {"webinar_id": AUTO, "body": "why?"}, "stranger", "PT403", 403, "not_registered"),
    ("question_ask", {"webinar_id": ENDED, "body": "why?"}, "viewer", "PT403", 403, "webinar_closed"),
    ("question_ask", {"webinar_id": AUTO, "body": ""}, "viewer", "22023", 400, "empty_message"),
    ("question_vote", {"question_id": 999999}, "no_sub", "PT401", 401, "not_authenticated"),
    ("question_vote", {"question_id": 999999}, "viewer", "PT404", 404, "question_not_found"),
    ("questions", {"webinar_id": AUTO}, "viewer", OK, 200, None),
    ("questions", {"webinar_id": AUTO}, "stranger", "PT403", 403, "not_registered"),
    ("questions", {"webinar_id": UNKNOWN}, "viewer", "PT404", 404, "webinar_not_found"),
    ("question_answer", {"question_id": 999999, "status": "open"}, "staff", "PT404", 404, "question_not_found"),
    ("question_answer", {"question_id": 999999, "status": "closed"}, "staff", "22023", 400, "invalid_status"),
    ("question_answer", {"question_id": 999999, "status": "open"}, "no_sub", "PT401", 401, "not_authenticated"),
]
# fmt: on


def _resolve(world: World, args: dict[str, Any]) -> dict[str, Any]:
    """Replace symbolic argument values by the world's ids."""
    out: dict[str, Any] = {}
    for key, symbol in args.items():
        value = symbol
        if symbol in ("active", "superseded", "left", "viewer", "stranger", "staff"):
            value = getattr(world, symbol)
        elif symbol in ("fresh", "nobody"):
            value = uuid.uuid4()
        elif symbol == "viewer_only":
            value = [world.viewer]
        elif key == "user_ids":
            value = [uuid.uuid4() for _ in range(int(symbol))]
        out[key] = value
    return out


def _run(
    db: psycopg.Connection[Any], world: World, case: tuple[Any, ...]
) -> tuple[str | None, str | None]:
    fn, args, actor, *_ = case
    role, user = {
        "anon": ("anon", None),
        "no_sub": ("authenticated", None),
        "service": ("service_role", None),
    }.get(actor, ("authenticated", getattr(world, actor, None)))
    try:
        call(db, fn, _resolve(world, args), user, role=role)
    except psycopg.Error as exc:
        return exc.sqlstate, exc.diag.message_detail
    return None, None


def test_every_function_answers_every_situation_with_its_documented_status_and_reason(
    db: psycopg.Connection[Any], world: World
) -> None:
    mismatches = []
    for case in CASES:
        fn, args, actor, want_state, want_status, want_reason = case
        got_state, got_reason = _run(db, world, case)
        if got_state is None:
            got_status = 204 if fn in VOID_FUNCTIONS else 200
        else:
            got_status = postgrest_status(got_state, anonymous=actor == "anon")
        want = (want_state, want_status, want_reason)
        got = (got_state, got_status, got_reason)
        if got != want:
            mismatches.append(f"{fn}({args}) as {actor}: want {want}, got {got}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize(
    ("sqlstate", "anonymous", "status"),
    [
        ("42501", True, 401),
        ("42501", False, 403),
        ("PT401", False, 401),
        ("PT403", False, 403),
        ("PT404", False, 404),
        ("PT409", False, 409),
        ("22023", False, 400),
        ("P0001", False, 400),
    ],
)
def test_each_sqlstate_we_raise_maps_to_the_documented_http_status(
    sqlstate: str, anonymous: bool, status: int
) -> None:
    assert postgrest_status(sqlstate, anonymous) == status


def test_the_behaviour_table_only_uses_sqlstates_with_a_documented_status() -> None:
    """Every error in the table maps to 4xx: nothing we raise can look like a 5xx."""
    for fn, _, _, sqlstate, status, _ in CASES:
        if sqlstate is not None:
            assert 400 <= status < 500, (fn, sqlstate)


def test_the_behaviour_table_covers_every_function_of_the_api() -> None:
    assert {case[0] for case in CASES} == {
        "track_access",
        "presence_ping",
        "presence_leave",
        "access_stats",
        "participants",
        "profiles_batch",
        "upsert_webinar",
        "set_staff",
        "remove_staff",
        "register",
        "chat_send",
        "chat_since",
        "chat_moderate",
        "chat_ban",
        "chat_unban",
        "room_settings",
        "question_ask",
        "question_vote",
        "questions",
        "question_answer",
    }


def test_the_shim_maps_every_error_of_the_table_to_the_same_status() -> None:
    """The shim (shim.http.errors) and this table agree on each SQLSTATE's HTTP status."""
    from shim.http.errors import status_for_sqlstate

    pairs = {(state, actor == "anon", status) for _, _, actor, state, status, _ in CASES if state}
    assert {(s, a, status_for_sqlstate(s, a)) for s, a, _ in pairs} == pairs
