"""RLS attacks through every function of ``api``: a viewer of webinar A acting on another
viewer's session or on webinar B, staff of A reaching for B, and forged
``role: service_role`` claims on an ``authenticated`` request -> the documented refusal,
nothing of another viewer or webinar in the answer, and the superuser's view of every
table unchanged. The same attacks through the HTTP shim answer the same.

The functions are read from the catalog: a new api function without an attack here fails
``test_every_api_function_is_attacked`` (and without a ghost call,
``test_every_api_function_is_called_by_a_deleted_user``: a valid token whose user was
deleted from ``auth.users`` gets 401 ``user_not_found`` or another clean answer, never
PostgreSQL's own 23xxx naming tables and constraints). ``test_every_attack_is_detected_when_the_functions_lose_their_checks``
removes each check the attacks rely on (a throwaway clone) and expects each attack to
report it, so no attack passes for the wrong reason.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from shim_support import NO_HUB, SECRET, bearer, settings_for, token, uvicorn_server
from test_rls_matrix import (
    ACTORS,
    SERVICE_CLAIM,
    TABLES,
    A,
    Actor,
    B,
    World,
    build_world,
    primary_key,
    snapshot,
)

from shim.http.errors import status_for_sqlstate
from shim.serve.app import create_app
from shim.testing import act_as, create_user

ACTOR = {a.name: a for a in ACTORS} | {
    "staff_of_a_forging_service_role": Actor(
        "staff_of_a_forging_service_role",
        "authenticated",
        "staff_a",
        SERVICE_CLAIM,
        staff_of=frozenset({A}),
    )
}
DENIED = "42501"  # no execute privilege: 401 anon / 403 otherwise


@dataclass(frozen=True)
class RpcAttack:
    """``fn(args)`` as ``actor``: ``want`` is the (sqlstate, reason) of the refusal, or
    None for a call that succeeds and must change nothing. Symbolic args: ``@name`` is
    a World user, ``#name`` a session of ``World.sessions``. ``may_show`` names the users
    whose ids may appear in the answer (the actor's own always may)."""

    fn: str
    actor: str
    args: dict[str, Any]
    want: tuple[str, str | None] | None
    may_show: frozenset[str] = frozenset()
    sessions_shown: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return f"{self.fn}({self.args}) as {self.actor}"


def _a(  # noqa: PLR0917 - one table row per attack reads best positionally
    fn: str,
    actor: str,
    args: dict[str, Any],
    want: tuple[str, str | None] | None,
    may_show: tuple[str, ...] = (),
    sessions_shown: tuple[str, ...] = (),
) -> RpcAttack:
    return RpcAttack(fn, actor, args, want, frozenset(may_show), frozenset(sessions_shown))


NOT_STAFF = ("PT403", "not_staff")
NOT_REGISTERED = ("PT403", "not_registered")
NOT_SERVICE = ("PT403", "not_service_role")
INVALID_SESSION = ("22023", "invalid_session_id")
FORGER = "viewer_forging_service_role"
NO_SUB = "no_sub_forging_service_role"
STAFF = "staff_of_a"
STAFF_FORGER = "staff_of_a_forging_service_role"
ALL_PROFILES = ["@viewer", "@peer", "@outsider", "@lurker", "@staff_a", "@staff_b", "@nobody"]

# fmt: off
ATTACKS: list[RpcAttack] = [
    # another viewer's session: never taken over, superseded, revived, pinged or ended
    _a("track_access", "viewer", {"webinar_id": A, "session_id": "#peer"}, INVALID_SESSION),
    _a("track_access", "viewer", {"webinar_id": A, "session_id": "#peer_superseded"}, INVALID_SESSION),
    _a("track_access", "viewer", {"webinar_id": B, "session_id": "#outsider"}, INVALID_SESSION),
    _a("track_access", STAFF, {"webinar_id": A, "session_id": "#peer"}, INVALID_SESSION),
    _a("track_access", FORGER, {"webinar_id": A, "session_id": "#peer"}, INVALID_SESSION),
    _a("presence_ping", "viewer", {"webinar_id": A, "session_id": "#peer"}, ("PT409", "session_ended")),
    _a("presence_ping", "viewer", {"webinar_id": A, "session_id": "#peer_superseded"}, ("PT409", "session_ended")),
    _a("presence_ping", "viewer", {"webinar_id": B, "session_id": "#outsider"}, ("PT403", "not_registered")),
    _a("presence_ping", STAFF, {"webinar_id": B, "session_id": "#outsider"}, ("PT403", "not_registered")),
    _a("presence_ping", FORGER, {"webinar_id": A, "session_id": "#peer"}, ("PT409", "session_ended")),
    _a("presence_leave", "viewer", {"webinar_id": A, "session_id": "#peer"}, None),
    _a("presence_leave", "viewer", {"webinar_id": B, "session_id": "#outsider"}, None),
    _a("presence_leave", STAFF, {"webinar_id": A, "session_id": "#peer"}, None),
    _a("presence_leave", FORGER, {"webinar_id": A, "session_id": "#peer"}, None),
    # staff of A reaching for B; viewers reaching for staff functions
    _a("access_stats", STAFF, {"webinar_id": B}, NOT_STAFF),
    _a("access_stats", "viewer", {"webinar_id": A}, NOT_STAFF),
    _a("access_stats", FORGER, {"webinar_id": B}, NOT_STAFF),
    _a("access_stats", STAFF_FORGER, {"webinar_id": B}, NOT_STAFF),
    _a("access_stats", NO_SUB, {"webinar_id": B}, ("PT401", "not_authenticated")),
    _a("participants", STAFF, {"webinar_id": B}, NOT_STAFF),
    _a("participants", STAFF, {"webinar_id": A}, None, ("viewer", "peer"), ("viewer", "peer")),
    _a("participants", "viewer", {"webinar_id": A}, NOT_STAFF),
    _a("participants", FORGER, {"webinar_id": B}, NOT_STAFF),
    _a("participants", STAFF_FORGER, {"webinar_id": B}, NOT_STAFF),
    _a("participants", NO_SUB, {"webinar_id": B}, ("PT401", "not_authenticated")),
    _a("profiles_batch", "viewer", {"user_ids": ALL_PROFILES}, None),
    _a("profiles_batch", STAFF, {"user_ids": ALL_PROFILES}, None, ("viewer", "peer", "lurker")),
    _a("profiles_batch", FORGER, {"user_ids": ALL_PROFILES}, None),
    _a("profiles_batch", STAFF_FORGER, {"user_ids": ALL_PROFILES}, None, ("viewer", "peer", "lurker")),
    _a("profiles_batch", NO_SUB, {"user_ids": ALL_PROFILES}, ("PT401", "not_authenticated")),
    # only service_role registers someone else (the API contract); whether a user exists is told
    # to service_role alone (@nobody gets the same refusal as a real user)
    _a("register", "viewer", {"webinar_id": B, "user_id": "@peer"}, NOT_SERVICE),
    _a("register", "viewer", {"webinar_id": A, "user_id": "@nobody"}, NOT_SERVICE),
    _a("register", STAFF, {"webinar_id": A, "user_id": "@outsider"}, NOT_SERVICE),
    _a("register", STAFF, {"webinar_id": A, "user_id": "@nobody"}, NOT_SERVICE),
    _a("register", STAFF, {"webinar_id": B, "user_id": "@nobody"}, NOT_SERVICE),
    _a("register", STAFF, {"webinar_id": B, "user_id": "@viewer"}, NOT_SERVICE),
    _a("register", FORGER, {"webinar_id": B, "user_id": "@nobody"}, NOT_SERVICE),
    _a("register", STAFF_FORGER, {"webinar_id": A, "user_id": "@outsider"}, NOT_SERVICE),
    _a("register", STAFF_FORGER, {"webinar_id": B, "user_id": "@nobody"}, NOT_SERVICE),
    _a("register", NO_SUB, {"webinar_id": B, "user_id": "@nobody"}, ("PT401", "not_authenticated")),
    _a("set_staff", STAFF, {"webinar_id": B, "user_id": "@staff_a"}, (DENIED, None)),
    _a("set_staff", "viewer", {"webinar_id": A, "user_id": "@viewer"}, (DENIED, None)),
    _a("set_staff", FORGER, {"webinar_id": A, "user_id": "@viewer"}, (DENIED, None)),
    _a("set_staff", STAFF_FORGER, {"webinar_id": B, "user_id": "@staff_a"}, (DENIED, None)),
    _a("remove_staff", STAFF, {"webinar_id": B, "user_id": "@staff_b"}, (DENIED, None)),
    _a("remove_staff", FORGER, {"webinar_id": A, "user_id": "@staff_a"}, (DENIED, None)),
    _a("remove_staff", STAFF_FORGER, {"webinar_id": B, "user_id": "@staff_b"}, (DENIED, None)),
    _a("upsert_webinar", STAFF, {"webinar_id": B, "title": "pwned"}, (DENIED, None)),
    _a("upsert_webinar", FORGER, {"webinar_id": A, "title": "pwned"}, (DENIED, None)),
    _a("upsert_webinar", STAFF_FORGER, {"webinar_id": B, "title": "pwned", "state": "ended"}, (DENIED, None)),
    # the live room: viewers and staff of A reaching into B, viewers into staff functions
    # (%name: a chat message or question of World.items). No NO_SUB attack on the writes
    # that check for a user before anything else: no sabotage could make those pass.
    _a("chat_send", "viewer", {"webinar_id": B, "body": "pwned"}, NOT_REGISTERED),
    _a("chat_send", STAFF, {"webinar_id": B, "body": "pwned"}, NOT_REGISTERED),
    _a("chat_send", FORGER, {"webinar_id": B, "body": "pwned"}, NOT_REGISTERED),
    _a("chat_since", "viewer", {"webinar_id": B}, NOT_REGISTERED),
    _a("chat_since", STAFF, {"webinar_id": B}, NOT_REGISTERED),
    _a("chat_since", FORGER, {"webinar_id": B}, NOT_REGISTERED),
    _a("chat_since", NO_SUB, {"webinar_id": B}, ("PT401", "not_authenticated")),
    _a("chat_moderate", "viewer", {"message_id": "%msg_a_peer", "action": "hide"}, NOT_STAFF),
    _a("chat_moderate", STAFF, {"message_id": "%msg_b", "action": "delete"}, NOT_STAFF),
    _a("chat_moderate", FORGER, {"message_id": "%msg_b", "action": "hide"}, NOT_STAFF),
    _a("chat_moderate", STAFF_FORGER, {"message_id": "%msg_b", "action": "hide"}, NOT_STAFF),
    _a("chat_moderate", NO_SUB, {"message_id": "%msg_b", "action": "hide"}, ("PT401", "not_authenticated")),
    _a("chat_ban", "viewer", {"webinar_id": A, "user_id": "@peer"}, NOT_STAFF),
    _a("chat_ban", STAFF, {"webinar_id": B, "user_id": "@outsider"}, NOT_STAFF),
    _a("chat_ban", FORGER, {"webinar_id": B, "user_id": "@outsider"}, NOT_STAFF),
    _a("chat_ban", STAFF_FORGER, {"webinar_id": B, "user_id": "@outsider"}, NOT_STAFF),
    _a("chat_unban", "viewer", {"webinar_id": A, "user_id": "@lurker"}, NOT_STAFF),
    _a("chat_unban", STAFF, {"webinar_id": B, "user_id": "@lurker"}, NOT_STAFF),
    _a("chat_unban", FORGER, {"webinar_id": B, "user_id": "@lurker"}, NOT_STAFF),
    _a("room_settings", "viewer", {"webinar_id": A, "chat_enabled": False}, NOT_STAFF),
    _a("room_settings", STAFF, {"webinar_id": B, "chat_enabled": False}, NOT_STAFF),
    _a("room_settings", FORGER, {"webinar_id": B, "chat_enabled": False}, NOT_STAFF),
    _a("room_settings", STAFF_FORGER, {"webinar_id": B, "hold_for_review": True}, NOT_STAFF),
    _a("question_ask", "viewer", {"webinar_id": B, "body": "pwned?"}, NOT_REGISTERED),
    _a("question_ask", STAFF, {"webinar_id": B, "body": "pwned?"}, NOT_REGISTERED),
    _a("question_ask", FORGER, {"webinar_id": B, "body": "pwned?"}, NOT_REGISTERED),
    _a("question_vote", "viewer", {"question_id": "%q_b"}, NOT_REGISTERED),
    _a("question_vote", STAFF, {"question_id": "%q_b"}, NOT_REGISTERED),
    _a("question_vote", FORGER, {"question_id": "%q_b"}, NOT_REGISTERED),
    _a("questions", "viewer", {"webinar_id": B}, NOT_REGISTERED),
    _a("questions", STAFF, {"webinar_id": B}, NOT_REGISTERED),
    _a("questions", FORGER, {"webinar_id": B}, NOT_REGISTERED),
    _a("questions", NO_SUB, {"webinar_id": B}, ("PT401", "not_authenticated")),
    _a("question_answer", "viewer", {"question_id": "%q_a", "status": "dismissed"}, NOT_STAFF),
    _a("question_answer", STAFF, {"question_id": "%q_b", "status": "dismissed"}, NOT_STAFF),
    _a("question_answer", FORGER, {"question_id": "%q_b", "status": "answered", "answer": "pwned"}, NOT_STAFF),
    _a("question_answer", NO_SUB, {"question_id": "%q_b", "status": "dismissed"}, ("PT401", "not_authenticated")),
]
# fmt: on


def resolve(w: World, args: dict[str, Any]) -> dict[str, Any]:
    def one(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("@"):
            return getattr(w, v[1:])
        if isinstance(v, str) and v.startswith("#"):
            return w.sessions[v[1:]]
        if isinstance(v, str) and v.startswith("%"):
            return w.items[v[1:]]
        if isinstance(v, list):
            return [one(x) for x in v]
        return v

    return {k: one(v) for k, v in args.items()}


def foreign_ids(w: World, attack: RpcAttack) -> dict[str, str]:
    """Ids that must not appear in the answer: every user and session but the actor's
    own and those the attack allows."""
    actor = ACTOR[attack.actor]
    users = ("viewer", "peer", "outsider", "lurker", "staff_a", "staff_b", "nobody")
    out = {f"user {u}": getattr(w, u) for u in users if u != actor.who and u not in attack.may_show}
    out |= {
        f"session {s}": sid
        for s, sid in w.sessions.items()
        if s != actor.who and s not in attack.sessions_shown
    }
    return out


@dataclass
class Outcome:
    attack: RpcAttack
    sqlstate: str | None = None
    reason: str | None = None
    answer: str = ""
    leaks: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)


def judge(w: World, out: Outcome, changed: list[str]) -> Outcome:
    """Leaks: a refusal that did not happen, a row that changed, a foreign id answered.
    Broken: another refusal than the documented one (the attack proved nothing)."""
    attack = out.attack
    if attack.want is None and out.sqlstate is not None:
        out.broken.append(f"refused {out.sqlstate} {out.reason}")
    elif attack.want is not None and out.sqlstate is None:
        out.leaks.append(f"not refused: answered {out.answer[:120]}")
    elif attack.want is not None and (out.sqlstate, out.reason) != attack.want:
        out.broken.append(f"want {attack.want}, got {(out.sqlstate, out.reason)}")
    if changed:
        out.leaks.append(f"changed {changed}")
    shown = [name for name, i in foreign_ids(w, attack).items() if i in out.answer]
    if shown:
        out.leaks.append(f"answer shows {shown}")
    return out


def run_sql(
    admin: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    w: World,
    pks: dict[str, list[str]],
    attack: RpcAttack,
) -> Outcome:
    actor = ACTOR[attack.actor]
    args = resolve(w, attack.args)
    named = ", ".join(f"{k} => %({k})s" for k in args)
    before = snapshot(admin, pks)
    out = Outcome(attack)
    try:
        with act_as(db, actor.uid(w), role=actor.role, claims=actor.claims, commit=True) as c:
            row = c.execute(f"select api.{attack.fn}({named})::text", args).fetchone()
        out.answer = (row[0] if row else None) or ""
    except psycopg.Error as exc:
        out.sqlstate, out.reason = exc.sqlstate, exc.diag.message_detail
        out.answer = f"{exc.diag.message_primary} {exc.diag.message_detail} {exc.diag.message_hint}"
    after = snapshot(admin, pks)
    return judge(w, out, [t for t in pks if before[t] != after[t]])


def _restore_point(admin: psycopg.Connection[Any], tables: list[str]) -> Callable[[], None]:
    """Save every table's rows; the returned function puts them back as they were
    (triggers and foreign keys off meanwhile: the saved rows are consistent)."""
    saved = [sql.Identifier(f"saved_{i}") for i in range(len(tables))]
    idents = [sql.Identifier(*t.split(".")) for t in tables]
    for copy, table in zip(saved, idents, strict=True):
        admin.execute(sql.SQL("create temporary table {} as table {}").format(copy, table))

    # Generated columns (Supabase's auth.users has one) are computed again, never written.
    columns = [
        sql.SQL(", ").join(
            sql.Identifier(r[0])
            for r in admin.execute(
                "select attname from pg_catalog.pg_attribute where attrelid = %s::regclass"
                " and attnum > 0 and not attisdropped and attgenerated = '' order by attnum",
                (t,),
            )
        )
        for t in tables
    ]

    def restore() -> None:
        admin.execute("set session_replication_role = replica")
        admin.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(idents)))
        for copy, table, cols in zip(saved, idents, columns, strict=True):
            admin.execute(
                sql.SQL("insert into {} ({}) overriding system value select {} from {}").format(
                    table, cols, cols, copy
                )
            )
        admin.execute("set session_replication_role = default")

    return restore


def run_all(
    admin: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    w: World,
    *,
    isolated: bool = False,
) -> list[Outcome]:
    """Every attack, one after the other; ``isolated``: each against the world as built
    (when the checks are gone, one attack's damage must not hide the next one's)."""
    pks = {t: primary_key(admin, t) for t in sorted(TABLES)}
    restore = _restore_point(admin, list(pks)) if isolated else None
    outcomes = []
    for attack in ATTACKS:
        outcomes.append(run_sql(admin, db, w, pks, attack))
        if restore is not None:
            restore()
    return outcomes


def summary(outcomes: list[Outcome], how: str) -> str:
    fns = {o.attack.fn for o in outcomes}
    actors = {o.attack.actor for o in outcomes}
    leaks = sum(1 for o in outcomes if o.leaks)
    return (
        f"RLS attacks ({how}): {len(outcomes)} calls of {len(fns)} api functions"
        f" by {len(actors)} actors, {leaks} leaks"
    )


@pytest.fixture
def world(admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> World:
    return build_world(admin_conn, db)


def test_every_api_function_is_attacked(admin_conn: psycopg.Connection[Any]) -> None:
    rows = admin_conn.execute(
        "select proname from pg_catalog.pg_proc where pronamespace = 'api'::regnamespace"
    ).fetchall()
    assert {r[0] for r in rows} == {a.fn for a in ATTACKS}


def test_every_function_the_api_runs_resolves_names_through_a_pinned_search_path(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """Supabase's lint 0011 as part of the attack surface: every function of ``api`` and
    ``eventlive`` -- the api functions and the helpers they and the policies call
    (eventlive.now(), entry_open, is_service_role, presence_window, ping_throttle) --
    pins search_path, so no caller's search_path decides what their names mean."""
    rows = admin_conn.execute(
        "select p.oid::regprocedure::text from pg_catalog.pg_proc as p"
        " where p.pronamespace in ('api'::regnamespace, 'eventlive'::regnamespace)"
        " and not exists (select from unnest(p.proconfig) as s where s like 'search\\_path=%%')"
    ).fetchall()
    assert [r[0] for r in rows] == []
    helpers = admin_conn.execute(
        "select count(*) from pg_catalog.pg_proc where pronamespace = 'eventlive'::regnamespace"
        " and proname in ('now', 'entry_open', 'is_service_role', 'presence_window',"
        " 'ping_throttle')"
    ).fetchone()
    assert helpers == (5,)


def test_no_api_function_lets_a_viewer_or_foreign_staff_touch_other_rows(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], world: World
) -> None:
    outcomes = run_all(admin_conn, db, world)
    print(summary(outcomes, "SQL"))
    assert [f"{o.attack}: {o.leaks} {o.broken}" for o in outcomes if o.leaks or o.broken] == []


def test_the_other_viewers_sessions_are_still_theirs_after_the_attacks(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], world: World
) -> None:
    """The outcome in the victims' own terms: their sessions go on (ping 204, track
    re-confirms the same session, nothing superseded)."""
    run_all(admin_conn, db, world)
    for user, session, webinar in (("peer", "peer", A), ("outsider", "outsider", B)):
        uid, sid = getattr(world, user), world.sessions[session]
        with act_as(db, uid, commit=True) as c:
            c.execute("select api.presence_ping(%s, %s)", (webinar, sid))
            row = c.execute("select api.track_access(%s, %s)", (webinar, sid)).fetchone()
        assert row is not None
        assert (row[0]["session_id"], row[0]["superseded_session_id"]) == (sid, None)


# The checks the attacks rely on, each removed in a throwaway clone: (function, pattern,
# replacement). A pattern that no longer matches fails the test (update it with the code).
SABOTAGE = [
    # the entry's logic lives in eventlive.track_core (both entries, single and batched)
    (
        "eventlive.track_core(bigint,uuid,uuid,jsonb,timestamptz)",
        r"v_known\.user_id <> p_user_id or v_known\.webinar_id <> v_webinar\.id",
        "false",
    ),
    # the ping's logic lives in eventlive.ping_core (both entries, single and batched)
    (
        "eventlive.ping_core(bigint,uuid,uuid,timestamptz)",
        r"and p\.user_id = p_user_id(\s+and p\.session_id)",
        r"\1",
    ),
    ("eventlive.ping_core(bigint,uuid,uuid,timestamptz)", r"and vs\.user_id = p_user_id", ""),
    ("api.presence_leave(bigint,uuid)", r"and p\.user_id = v_uid", ""),
    ("api.presence_leave(bigint,uuid)", r"and vs\.user_id = v_uid", ""),
    (
        "eventlive.require_staff_of(bigint)",  # require_staff: the lookup, then this check
        r"if not exists \(\s+select from eventlive\.webinar_staff as s\s+where s\.webinar_id = p_webinar_id and s\.user_id = v_uid\s+\) then",
        "if false then",
    ),
    ("api.participants(bigint,uuid,integer)", r"where p\.webinar_id = v_webinar\.id", "where true"),
    ("api.profiles_batch(uuid[])", r"or pr\.user_id = v_uid", "or true"),
    ("api.register(bigint,uuid)", r"elsif v_target <> v_uid then", "elsif false then"),
    ("eventlive.is_service_role()", r"pg_catalog\.current_setting\('role', true\)", "auth.role()"),
    (
        "eventlive.room_role_is_staff(bigint,uuid)",
        r"raise exception using errcode = 'PT403'[^;]+detail = 'not_registered';",
        "return false;",
    ),
    (
        "api.room_settings(bigint,boolean,boolean,integer,boolean,integer)",
        r"and s\.user_id = auth\.uid\(\) and s\.role = 'host'",
        "",
    ),
]


def sabotage(admin: psycopg.Connection[Any]) -> None:
    for fn, pattern, replacement in SABOTAGE:
        row = admin.execute("select pg_get_functiondef(%s::regprocedure)", (fn,)).fetchone()
        assert row is not None
        patched, n = re.subn(pattern, replacement, row[0])
        assert n, f"{fn}: {pattern!r} not found"
        admin.execute(patched)
    admin.execute(
        "grant execute on function api.set_staff(bigint, uuid, text), api.remove_staff(bigint, uuid),"
        " api.upsert_webinar(bigint, text, text, text, timestamptz, timestamptz, integer, integer)"
        " to authenticated"
    )


def test_every_attack_is_detected_when_the_functions_lose_their_checks(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], world: World
) -> None:
    sabotage(admin_conn)
    outcomes = run_all(admin_conn, db, world, isolated=True)
    silent = [str(o.attack) for o in outcomes if not o.leaks and not o.broken]
    assert silent == [], "\n".join(silent)
    # most of them as a leak, not merely as another answer
    assert sum(1 for o in outcomes if o.leaks) >= len(outcomes) * 0.8


def test_the_attacks_through_http_answer_as_through_sql(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    eventlive_db: Any,
    world: World,
) -> None:
    """The shim over the real api with minted tokens: each attack by a signed-in user
    (forged claims are the token tests' business) gets the status PostgREST maps the
    SQL refusal to, the same reason, nothing foreign in the body, no row changed."""
    pks = {t: primary_key(admin_conn, t) for t in sorted(TABLES)}
    attacks = [a for a in ATTACKS if not ACTOR[a.actor].claims]
    settings = settings_for(eventlive_db.dsn, schemas=("api",), jwt_secret=SECRET)
    outcomes = []
    with (
        uvicorn_server(create_app(settings, NO_HUB)) as base,
        httpx.Client(base_url=base) as client,
    ):
        for attack in attacks:
            uid = ACTOR[attack.actor].uid(world)
            before = snapshot(admin_conn, pks)
            r = client.post(
                f"/rpc/{attack.fn}",
                json=resolve(world, attack.args),
                headers=bearer(token({"sub": uid})),
            )
            after = snapshot(admin_conn, pks)
            out = Outcome(attack, answer=r.text)
            if r.status_code >= 400:
                body = r.json()
                out.sqlstate, out.reason = body.get("code"), body.get("details")
            else:
                want_status = 204 if attack.fn in ("presence_ping", "presence_leave") else 200
                if r.status_code != want_status:
                    out.broken.append(f"status {r.status_code}")
            if attack.want is not None and r.status_code != status_for_sqlstate(
                attack.want[0], anonymous=False
            ):
                out.broken.append(f"status {r.status_code}")
            outcomes.append(judge(world, out, [t for t in pks if before[t] != after[t]]))
    print(summary(outcomes, "HTTP"))
    assert len(outcomes) >= 25
    assert [f"{o.attack}: {o.leaks} {o.broken}" for o in outcomes if o.leaks or o.broken] == []


# --- A valid token whose user no longer exists (issue #21) ------------------------------


@dataclass
class GhostWorld(World):
    """The world plus two users deleted from auth.users after they took part: ``ghost``
    (entered A, chatted, asked, voted) and ``ghost_host`` (host of A). Their tokens are
    still valid (on Supabase for up to an hour)."""

    ghost: str = ""
    ghost_host: str = ""


ACTOR |= {
    "ghost": Actor("ghost", "authenticated", "ghost"),
    "ghost_host": Actor("ghost_host", "authenticated", "ghost_host"),
    "service": Actor("service", "service_role", None),
}
USER_GONE = ("PT401", "user_not_found")
NO_SUCH_USER = ("PT404", "user_not_found")  # another user, named by service_role or staff
# What PostgreSQL's own constraint errors say, and the private names they carry.
RAW = re.compile(
    r"violates|constraint|Key \(|_fkey|_pkey|_key\b|_check|eventlive\.|auth\.users|registrations|presence|sessions",
    re.IGNORECASE,
)

# fmt: off
GHOST_CALLS: list[RpcAttack] = [
    _a("track_access", "ghost", {"webinar_id": A}, USER_GONE),
    _a("track_access", "ghost", {"webinar_id": A, "session_id": "#ghost"}, USER_GONE),
    _a("track_access", "ghost", {"webinar_id": B}, USER_GONE),
    _a("presence_ping", "ghost", {"webinar_id": A, "session_id": "#ghost"}, USER_GONE),
    _a("presence_leave", "ghost", {"webinar_id": A, "session_id": "#ghost"}, None),
    _a("access_stats", "ghost_host", {"webinar_id": A}, USER_GONE),
    _a("participants", "ghost_host", {"webinar_id": A}, USER_GONE),
    _a("profiles_batch", "ghost", {"user_ids": [*ALL_PROFILES, "@ghost"]}, None),
    _a("register", "ghost", {"webinar_id": A}, USER_GONE),
    _a("register", "ghost", {"webinar_id": B}, USER_GONE),
    _a("register", "service", {"webinar_id": A, "user_id": "@ghost"}, NO_SUCH_USER),
    _a("set_staff", "ghost_host", {"webinar_id": A, "user_id": "@ghost_host"}, (DENIED, None)),
    _a("set_staff", "service", {"webinar_id": A, "user_id": "@ghost"}, NO_SUCH_USER),
    _a("remove_staff", "ghost_host", {"webinar_id": A, "user_id": "@ghost_host"}, (DENIED, None)),
    _a("upsert_webinar", "ghost_host", {"webinar_id": A, "title": "ghosted"}, (DENIED, None)),
    _a("chat_send", "ghost", {"webinar_id": A, "body": "boo"}, USER_GONE),
    _a("chat_since", "ghost", {"webinar_id": A}, USER_GONE),
    _a("chat_moderate", "ghost_host", {"message_id": "%msg_a_peer", "action": "hide"}, USER_GONE),
    _a("chat_ban", "ghost_host", {"webinar_id": A, "user_id": "@peer"}, USER_GONE),
    _a("chat_ban", STAFF, {"webinar_id": A, "user_id": "@ghost"}, NO_SUCH_USER),
    _a("chat_unban", "ghost_host", {"webinar_id": A, "user_id": "@lurker"}, USER_GONE),
    _a("room_settings", "ghost_host", {"webinar_id": A, "chat_enabled": False}, USER_GONE),
    _a("question_ask", "ghost", {"webinar_id": A, "body": "boo?"}, USER_GONE),
    _a("question_vote", "ghost", {"question_id": "%q_a"}, USER_GONE),
    _a("question_vote", "ghost", {"question_id": "%q_a", "up": False}, USER_GONE),
    _a("questions", "ghost", {"webinar_id": A}, USER_GONE),
    _a("question_answer", "ghost_host", {"question_id": "%q_a", "status": "answered"}, USER_GONE),
]
# fmt: on


@pytest.fixture
def ghost_world(admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> GhostWorld:
    w = GhostWorld(**dataclasses.asdict(build_world(admin_conn, db)))
    w.ghost = str(create_user(admin_conn, email="ghost@example.com"))
    w.ghost_host = str(create_user(admin_conn, email="ghost_host@example.com"))
    admin_conn.execute("select api.set_staff(%s, %s)", (A, w.ghost_host))
    with act_as(db, w.ghost, commit=True) as c:
        row = c.execute("select api.track_access(%s)", (A,)).fetchone()
        assert row is not None
        w.sessions["ghost"] = str(row[0]["session_id"])
        c.execute("select api.chat_send(%s, 'soon gone')", (A,))
        c.execute("select api.question_ask(%s, 'soon gone?')", (A,))
        c.execute("select api.question_vote(%s)", (w.items["q_a"],))
    admin_conn.execute("delete from auth.users where id in (%s, %s)", (w.ghost, w.ghost_host))
    return w


def no_raw_words(out: Outcome) -> Outcome:
    """Nothing of PostgreSQL's own words in a refusal: no 23xxx, no table, column or
    constraint name."""
    if out.sqlstate and out.sqlstate.startswith("23"):
        out.leaks.append(f"raw {out.sqlstate}")
    if out.sqlstate and RAW.search(out.answer):
        out.leaks.append(f"names: {out.answer[:160]}")
    return out


def test_every_api_function_is_called_by_a_deleted_user(
    admin_conn: psycopg.Connection[Any],
) -> None:
    rows = admin_conn.execute(
        "select proname from pg_catalog.pg_proc where pronamespace = 'api'::regnamespace"
    ).fetchall()
    assert {r[0] for r in rows} == {a.fn for a in GHOST_CALLS}


def test_a_deleted_users_valid_token_gets_401_user_not_found_never_a_raw_constraint_error(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], ghost_world: GhostWorld
) -> None:
    """Every api function, called with the token of a user deleted meanwhile: the
    documented answer (401 user_not_found for the user's own calls, 404 for a deleted
    user named by someone else, 42501 where the role has no grant, presence_leave's
    idempotent 204, profiles_batch's empty list), nothing written, no private name."""
    w = ghost_world
    pks = {t: primary_key(admin_conn, t) for t in sorted(TABLES)}
    outcomes = []
    for attack in GHOST_CALLS:
        outcomes.append(no_raw_words(run_sql(admin_conn, db, w, pks, attack)))
    assert [f"{o.attack}: {o.leaks} {o.broken}" for o in outcomes if o.leaks or o.broken] == []
    by_fn = {(o.attack.fn, o.attack.actor): o for o in outcomes}
    assert by_fn["profiles_batch", "ghost"].answer == "[]"


def test_a_deleted_users_batched_heartbeat_is_user_not_found(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], ghost_world: GhostWorld
) -> None:
    """The coalesced entry answers the ghost's heartbeat as api.presence_ping does, next to
    a live viewer's heartbeat that is accepted."""
    w = ghost_world
    with db.transaction(force_rollback=True):
        db.execute("set local role eventlive_batcher")
        row = db.execute(
            "select eventlive.presence_ping_batch(%s::bigint[], %s::uuid[], %s::uuid[])",
            ([A, A], [w.ghost, w.peer], [w.sessions["ghost"], w.sessions["peer"]]),
        ).fetchone()
    assert row is not None
    assert row[0] == {
        "1": {
            "code": "PT401",
            "message": "The user of this token no longer exists.",
            "details": "user_not_found",
            "hint": "Sign in again.",
        }
    }


def test_a_deleted_users_calls_through_http_are_postgrest_401s(
    admin_conn: psycopg.Connection[Any],
    eventlive_db: Any,
    ghost_world: GhostWorld,
) -> None:
    """The same calls through the shim with freshly minted (valid) tokens: the status
    PostgREST maps the SQL answer to, a PostgREST body with the same code and reason,
    ``WWW-Authenticate: Bearer`` on each 401, and no private name in any body."""
    w = ghost_world
    pks = {t: primary_key(admin_conn, t) for t in sorted(TABLES)}
    settings = settings_for(eventlive_db.dsn, schemas=("api",), jwt_secret=SECRET)
    outcomes = []
    with (
        uvicorn_server(create_app(settings, NO_HUB)) as base,
        httpx.Client(base_url=base) as client,
    ):
        for attack in GHOST_CALLS:
            actor = ACTOR[attack.actor]
            claims = {"sub": actor.uid(w)} if actor.who else {"role": "service_role", "sub": None}
            before = snapshot(admin_conn, pks)
            r = client.post(
                f"/rpc/{attack.fn}",
                json=resolve(w, attack.args),
                headers=bearer(token(claims)),
            )
            after = snapshot(admin_conn, pks)
            out = Outcome(attack, answer=r.text)
            if r.status_code >= 400:
                body = r.json()
                assert set(body) == {"code", "message", "details", "hint"}, r.text
                out.sqlstate, out.reason = body.get("code"), body.get("details")
                if r.status_code == 401:
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
            if attack.want is not None and r.status_code != status_for_sqlstate(
                attack.want[0], anonymous=False
            ):
                out.broken.append(f"status {r.status_code}")
            outcomes.append(no_raw_words(judge(w, out, [t for t in pks if before[t] != after[t]])))
    assert [f"{o.attack}: {o.leaks} {o.broken}" for o in outcomes if o.leaks or o.broken] == []
