"""RLS attack matrix through direct SQL (supabase-js ``.from(...)``): every table of
``eventlive`` plus ``realtime.messages`` and ``auth.users``, every actor that is not the
rows' owner (a viewer of webinar A, the same viewer forging ``role: service_role`` in its
claims, a signed-in request without ``sub``, anon, staff of webinar A), every operation
(read, probe, lock, insert, upsert, update, reassign, delete, truncate) against the rows of
another viewer and of another webinar: zero leaks, and the superuser's view of every
table is unchanged afterwards.

The tables are read from the catalog, so a new table without an entry in ``TABLES``
fails ``test_the_matrix_covers_every_table_of_eventlive_plus_realtime_and_auth``. The
expected visibility of each row (``TableSpec.visible``) is written from the API contract (README, "The SQL API") and the
policies' comments, independently of the policies' SQL; a row seen that the oracle does
not allow is a leak. ``test_the_matrix_reports_a_leak_in_every_cell_when_the_tables_are_wide_open``
proves every cell can fail: the same matrix against a clone whose tables are granted and
policied wide open must report a leak in each one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from shim.testing import act_as, create_user

A, B, B_DRAFT = 101, 102, 103  # A and B live (auto entry), B_DRAFT a draft run by B's staff
EXTRA_TABLES = {"realtime.messages", "auth.users"}


@dataclass
class World:
    """Two webinars and their people. Ids are strings, as ``to_jsonb`` shows them."""

    viewer: str  # registered to A (entered): the attacker of most cells
    peer: str  # another viewer of A (entered twice: one superseded, one active session)
    outsider: str  # viewer of B (entered)
    lurker: str  # registered to A and B, never entered (no presence, no session)
    staff_a: str  # host of A
    staff_b: str  # host of B and B_DRAFT
    nobody: str  # a user with no rows anywhere (and no profile)
    sessions: dict[str, str] = field(default_factory=dict)  # name -> session id
    items: dict[str, int] = field(default_factory=dict)  # name -> chat message / question id


def _track(db: psycopg.Connection[Any], user: str, webinar: int) -> str:
    with act_as(db, user, commit=True) as c:
        row = c.execute("select api.track_access(webinar_id => %s)", (webinar,)).fetchone()
    assert row is not None
    return str(row[0]["session_id"])


def _api(db: psycopg.Connection[Any], user: str, call: str, args: tuple[Any, ...]) -> Any:
    with act_as(db, user, commit=True) as c:
        row = c.execute(f"select api.{call}", args).fetchone()
    assert row is not None
    return row[0]


def build_world(admin: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> World:
    """Rows of every table for two webinars, written through the api as their users."""
    for wid, state in ((A, "live"), (B, "live"), (B_DRAFT, "draft")):
        admin.execute(
            "select api.upsert_webinar(%s, %s, %s, 'auto')", (wid, f"Webinar {wid}", state)
        )
    names = ("viewer", "peer", "outsider", "lurker", "staff_a", "staff_b", "nobody")
    ids = {name: str(create_user(admin, email=f"{name}@example.com")) for name in names}
    w = World(**ids)
    for wid, user in ((A, w.staff_a), (B, w.staff_b), (B_DRAFT, w.staff_b)):
        admin.execute("select api.set_staff(%s, %s)", (wid, user))
    w.sessions["viewer"] = _track(db, w.viewer, A)
    w.sessions["peer_superseded"] = _track(db, w.peer, A)
    w.sessions["peer"] = _track(db, w.peer, A)
    w.sessions["outsider"] = _track(db, w.outsider, B)
    # The entries' counts folded into webinar_counters, the lurker's still deltas: rows
    # of A and B in both tables.
    admin.execute("select eventlive.fold_counter_deltas(1000)")
    admin.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source)"
        " values (%s, %s, 'service'), (%s, %s, 'service')",
        (A, w.lurker, B, w.lurker),
    )
    for name in ("viewer", "peer", "outsider", "lurker", "staff_a", "staff_b"):
        admin.execute(
            "insert into eventlive.profiles (user_id, display_name, company) values (%s, %s, 'Acme')",
            (getattr(w, name), name.title()),
        )
    # Seen a minute ago: past the ping throttle (a ping would write), within the window
    # (participants lists them), so a heartbeat that reached another viewer's row shows.
    admin.execute("update eventlive.presence set last_seen_at = now() - interval '60 seconds'")
    admin.execute(
        "insert into realtime.messages (topic, extension, event, payload, private)"
        " values ('webinar:101:chat', 'broadcast', 'message', '{}', true),"
        " ('webinar:102:chat', 'broadcast', 'message', '{}', true)"
    )
    # The live room: messages, questions, votes and bans in A and B, through the api
    # (which also fills the room log and counters); B_DRAFT has none, and no settings row,
    # so that an insert of one is valid.
    for name, who, wid in (
        ("msg_a", w.viewer, A),
        ("msg_a_peer", w.peer, A),
        ("msg_b", w.outsider, B),
    ):
        w.items[name] = _api(db, who, "chat_send(%s, %s)", (wid, f"hello from {name}"))["id"]
    for name, who, wid in (("q_a", w.viewer, A), ("q_b", w.outsider, B)):
        w.items[name] = _api(db, who, "question_ask(%s, %s)", (wid, f"why, {name}?"))["id"]
    _api(db, w.peer, "question_vote(%s)", (w.items["q_a"],))
    _api(db, w.outsider, "question_vote(%s)", (w.items["q_b"],))
    _api(db, w.staff_a, "chat_ban(%s, %s)", (A, w.lurker))
    _api(db, w.staff_b, "chat_ban(%s, %s)", (B, w.lurker))
    admin.execute("delete from eventlive.room_settings where webinar_id = %s", (B_DRAFT,))
    # The live room's short-lived state (sql/0009), as the hub writes it: a used SSE
    # ticket, and a broadcast too large for its NOTIFY (so it is stored).
    admin.execute(
        "select eventlive.use_sse_ticket(%s, now() + interval '1 minute')", (uuid.uuid4().hex,)
    )
    big = [
        {"topic": f"webinar:{A}:chat", "event": "big", "key": "k1", "payload": {"x": "y" * 9000}}
    ]
    admin.execute("select eventlive.broadcast(%s::json)", (json.dumps(big),))
    return w


# --- Actors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    name: str
    role: str  # the database role the request switches to
    who: str | None  # World attribute of the signed-in user (None: no sub claim)
    claims: dict[str, Any] = field(default_factory=dict)
    staff_of: frozenset[int] = frozenset()

    def uid(self, w: World) -> str | None:
        return getattr(w, self.who) if self.who else None


SERVICE_CLAIM = {"role": "service_role"}  # a forged claim: the request's role stays authenticated
ACTORS = [
    Actor("viewer", "authenticated", "viewer"),
    Actor("viewer_forging_service_role", "authenticated", "viewer", SERVICE_CLAIM),
    Actor("no_sub_forging_service_role", "authenticated", None, SERVICE_CLAIM),
    Actor("anon", "anon", None),
    Actor("staff_of_a", "authenticated", "staff_a", staff_of=frozenset({A})),
]


# --- What each actor may see: the oracle, from the API contract and the policies' comments ----

Row = dict[str, Any]
Snapshot = dict[str, dict[str, Row]]  # table -> primary key (json) -> row


def _own_or_staffed(actor: Actor, w: World, row: Row, snap: Snapshot) -> bool:
    return row["user_id"] == actor.uid(w) or row["webinar_id"] in actor.staff_of


def _staffed(actor: Actor, w: World, row: Row, snap: Snapshot) -> bool:
    return row["webinar_id"] in actor.staff_of


def _published_or_staffed(actor: Actor, w: World, row: Row, snap: Snapshot) -> bool:
    return row["state"] != "draft" or row["id"] in actor.staff_of


def _no_one(actor: Actor, w: World, row: Row, snap: Snapshot) -> bool:
    return False


def _own_or_staffed_registrant(actor: Actor, w: World, row: Row, snap: Snapshot) -> bool:
    return row["user_id"] == actor.uid(w) or any(
        r["user_id"] == row["user_id"] and r["webinar_id"] in actor.staff_of
        for r in snap["eventlive.registrations"].values()
    )


def _own_row(actor: Actor, w: World, row: Row, snap: Snapshot) -> bool:
    return row["user_id"] == actor.uid(w)


@dataclass
class TableSpec:
    # May the (signed-in) actor see this row? Anon never sees anything.
    visible: Callable[[Actor, World, Row, Snapshot], bool]
    # Rows the actor must not be able to create: attributed to another user, or in
    # another webinar. Valid in every other respect, so that a wide-open table takes them.
    inserts: Callable[[Actor, World, list[Row]], list[Row]]
    update_set: str  # a change to other people's rows
    # The rows the actor may write (its own profile); every other row is a target, and
    # a writable row must not be handed to another user (``reassign``).
    writable: Callable[[Actor, World, Row, Snapshot], bool] = _no_one


def _me(actor: Actor, w: World) -> str:
    return actor.uid(w) or w.nobody


def _free_shard(rows: list[Row], webinar: int) -> int:
    used = {r["shard"] for r in rows if r["webinar_id"] == webinar}
    return min(set(range(8)) - used)


TABLES: dict[str, TableSpec] = {
    "eventlive.webinars": TableSpec(
        visible=_published_or_staffed,
        inserts=lambda a, w, rows: [{"id": 900, "title": "Forged"}],
        update_set="title = 'pwned'",
    ),
    "eventlive.webinar_staff": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": B, "user_id": _me(a, w)},
            {"webinar_id": A, "user_id": w.nobody},
        ],
        update_set="role = 'moderator'",
    ),
    "eventlive.registrations": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": B, "user_id": _me(a, w), "source": "self"},
            {"webinar_id": A, "user_id": w.nobody, "source": "self"},
        ],
        update_set="source = 'staff'",
    ),
    "eventlive.profiles": TableSpec(
        visible=_own_or_staffed_registrant,
        inserts=lambda a, w, rows: [{"user_id": w.nobody, "display_name": "Forged"}],
        update_set="display_name = 'pwned'",
        writable=_own_row,
    ),
    "eventlive.viewer_sessions": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"session_id": str(uuid.uuid4()), "webinar_id": A, "user_id": w.peer},
            {"session_id": str(uuid.uuid4()), "webinar_id": B, "user_id": _me(a, w)},
        ],
        update_set="ended_at = now(), end_reason = 'left'",
    ),
    "eventlive.presence": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": A, "user_id": w.lurker, "session_id": str(uuid.uuid4())},
            {"webinar_id": B, "user_id": w.lurker, "session_id": str(uuid.uuid4())},
        ],
        update_set="session_id = gen_random_uuid()",
    ),
    "eventlive.access_log": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": A, "user_id": w.peer, "session_id": str(uuid.uuid4()), "kind": "enter"},
            {
                "webinar_id": B,
                "user_id": _me(a, w),
                "session_id": str(uuid.uuid4()),
                "kind": "enter",
            },
        ],
        update_set="kind = 'leave'",
    ),
    "eventlive.presence_minutes": TableSpec(
        visible=_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": wid, "minute": "2020-01-01T00:00:00Z", "viewers": 999} for wid in (A, B)
        ],
        update_set="viewers = t.viewers + 1000",
    ),
    "eventlive.webinar_counters": TableSpec(
        visible=_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": wid, "shard": _free_shard(rows, wid), "registrations": 999}
            for wid in (A, B)
        ],
        update_set="registrations = t.registrations + 1000",
    ),
    "eventlive.webinar_counter_deltas": TableSpec(
        visible=_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": wid, "registrations": 999, "unique_viewers": 0} for wid in (A, B)
        ],
        update_set="registrations = t.registrations + 1000",
    ),
    "eventlive.room_sequences": TableSpec(
        visible=_no_one,  # the realtime hub's role alone reads it
        inserts=lambda a, w, rows: [{"webinar_id": B_DRAFT, "last_seq": 999}],
        update_set="last_seq = t.last_seq + 1000",
    ),
    "eventlive.room_events": TableSpec(
        visible=_no_one,  # the realtime hub's role alone reads it; viewers poll via api
        inserts=lambda a, w, rows: [
            {"webinar_id": wid, "seq": 999, "channel": "chat", "event": "message", "payload": {}}
            for wid in (A, B)
        ],
        update_set='payload = \'{"body": "pwned"}\'',
    ),
    "eventlive.room_broadcasts": TableSpec(
        visible=_no_one,  # the realtime hub's role alone reads it
        inserts=lambda a, w, rows: [
            {"topic": f"webinar:{A}:chat", "event": "forged", "key": "k2", "payload": {}}
        ],
        update_set='payload = \'{"body": "pwned"}\'',
    ),
    "eventlive.sse_tickets_used": TableSpec(
        visible=_no_one,  # the realtime hub's role alone reads it
        inserts=lambda a, w, rows: [
            {"nonce": uuid.uuid4().hex, "expires_at": "2999-01-01T00:00:00Z"}
        ],
        update_set="expires_at = t.expires_at - interval '1 day'",
    ),
    "eventlive.room_settings": TableSpec(
        visible=_staffed,
        inserts=lambda a, w, rows: [{"webinar_id": B_DRAFT, "chat_enabled": False}],
        update_set="chat_enabled = not t.chat_enabled",
    ),
    "eventlive.chat_messages": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {
                "webinar_id": B,
                "user_id": _me(a, w),
                "body": "forged",
                "status": "visible",
                "seq": 999,
            },
            {"webinar_id": A, "user_id": w.peer, "body": "forged", "status": "visible", "seq": 998},
        ],
        update_set="body = 'pwned'",
    ),
    "eventlive.questions": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": B, "user_id": _me(a, w), "body": "forged?", "seq": 997},
            {"webinar_id": A, "user_id": w.peer, "body": "forged?", "seq": 996},
        ],
        update_set="votes = t.votes + 1000",
    ),
    "eventlive.question_votes": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"question_id": w.items["q_b"], "user_id": _me(a, w), "webinar_id": B},
            {"question_id": w.items["q_a"], "user_id": w.nobody, "webinar_id": A},
        ],
        update_set="created_at = t.created_at - interval '1 day'",
    ),
    "eventlive.chat_bans": TableSpec(
        visible=_own_or_staffed,
        inserts=lambda a, w, rows: [
            {"webinar_id": B, "user_id": _me(a, w)},
            {"webinar_id": A, "user_id": w.peer},
        ],
        update_set="until = now() - interval '1 second'",
    ),
    "realtime.messages": TableSpec(
        # Receiving is decided per topic with realtime.topic set (tests/sql/test_realtime_policies.py);
        # here it is unset, as on a plain read: no one sees a stored message.
        visible=_no_one,
        inserts=lambda a, w, rows: [
            {
                "topic": "webinar:102:chat",
                "extension": "broadcast",
                "event": "forged",
                "payload": {},
                "private": True,
            }
        ],
        update_set="event = 'pwned'",
    ),
    "auth.users": TableSpec(
        visible=_no_one,
        inserts=lambda a, w, rows: [{"id": str(uuid.uuid4()), "email": "forged@example.com"}],
        update_set="email = 'pwned@example.com'",
    ),
}


# --- Catalog and snapshots --------------------------------------------------------------


def catalog_tables(admin: psycopg.Connection[Any]) -> set[str]:
    rows = admin.execute(
        "select schemaname || '.' || tablename from pg_catalog.pg_tables where schemaname = 'eventlive'"
    ).fetchall()
    return {r[0] for r in rows} | EXTRA_TABLES


def primary_key(admin: psycopg.Connection[Any], table: str) -> list[str]:
    rows = admin.execute(
        """
        select a.attname
        from pg_catalog.pg_index as i
        cross join lateral unnest(i.indkey::int2[]) with ordinality as k (attnum, n)
        inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = %s::regclass and i.indisprimary
        order by k.n
        """,
        (table,),
    ).fetchall()
    assert rows, f"{table} has no primary key"
    return [r[0] for r in rows]


def _ident(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def pk_of(row: Row, pk: list[str]) -> str:
    return json.dumps([row[c] for c in pk])


def snapshot(admin: psycopg.Connection[Any], pks: dict[str, list[str]]) -> Snapshot:
    """Every row of every matrix table as the superuser sees it, without generated
    columns (Supabase's auth.users has one), which no insert may name."""
    out: Snapshot = {}
    for table, pk in pks.items():
        generated = [
            r[0]
            for r in admin.execute(
                "select attname from pg_catalog.pg_attribute"
                " where attrelid = %s::regclass and attgenerated <> ''",
                (table,),
            )
        ]
        rows = admin.execute(
            sql.SQL("select to_jsonb(t) - %s::text[] from {} as t").format(_ident(table)),
            (generated,),
        ).fetchall()
        out[table] = {pk_of(r[0], pk): r[0] for r in rows}
    return out


def expected_visible(actor: Actor, w: World, table: str, snap: Snapshot) -> set[str]:
    if actor.role == "anon":
        return set()
    spec = TABLES[table]
    return {key for key, row in snap[table].items() if spec.visible(actor, w, row, snap)}


# --- The matrix ---------------------------------------------------------------------------

OPERATIONS = (
    "read",
    "probe",
    "lock",
    "insert",
    "upsert",
    "update",
    "reassign",
    "delete",
    "truncate",
)


@dataclass
class Cell:
    table: str
    actor: str
    operation: str
    statements: int = 0
    leaks: list[str] = field(default_factory=list)  # something got through
    broken: list[str] = field(default_factory=list)  # a case that could prove nothing


def _attempt(
    db: psycopg.Connection[Any],
    actor: Actor,
    w: World,
    query: sql.Composable,
    params: Any,
    *,
    commit: bool,
    fetch: bool = False,
) -> tuple[str, Any]:
    """('denied', None) | ('ok', rows or rowcount) | ('error', sqlstate: message)."""
    try:
        with act_as(db, actor.uid(w), role=actor.role, claims=actor.claims, commit=commit) as c:
            cur = c.execute(query, params)
            result = cur.fetchall() if fetch else cur.rowcount
    except psycopg.errors.InsufficientPrivilege:
        return "denied", None
    except psycopg.Error as exc:
        return "error", f"{exc.sqlstate}: {exc}"
    return "ok", result


def _pk_filter(pk: list[str], keys: list[str]) -> tuple[sql.Composable, Any]:
    """A where clause for the given primary keys (as ``pk_of`` spells them), and its
    parameter: jsonb's text of the key array is the same spelling."""
    cols = sql.SQL("jsonb_build_array({})").format(sql.SQL(", ").join(map(sql.Identifier, pk)))
    return sql.SQL("{}::text = any(%s::text[])").format(cols), list(keys)


def _keys(rows: list[tuple[Any, ...]]) -> set[str]:
    return {json.dumps(json.loads(r[0])) for r in rows}


def _insert(table: str, row: Row, conflict: sql.Composable | None = None) -> tuple[Any, Any]:
    """Insert ``row`` (all its columns, identity ones too), optionally upserting."""
    ident = _ident(table)
    cols = sql.SQL(", ").join(map(sql.Identifier, row))
    query = sql.SQL(
        "insert into {t} as t ({cols}) overriding system value"
        " select {cols} from jsonb_populate_record(null::{t}, %s){conflict}"
    ).format(t=ident, cols=cols, conflict=conflict or sql.SQL(""))
    return query, [Jsonb(row)]


@dataclass
class Attack:
    """One actor against one table: its cells, filled by ``read`` and ``write``."""

    db: psycopg.Connection[Any]
    actor: Actor
    w: World
    table: str
    commit: bool
    cells: list[Cell] = field(default_factory=list)

    def cell(self, op: str) -> Cell:
        c = Cell(self.table, self.actor.name, op)
        self.cells.append(c)
        return c

    def read(self, op: str, query: sql.Composable, allowed: set[str], must_see: set[str]) -> None:
        c = self.cell(op)
        c.statements += 1
        status, got = _attempt(
            self.db, self.actor, self.w, query, None, commit=self.commit, fetch=True
        )
        if status == "ok":
            seen = _keys(got)
            if seen - allowed:
                c.leaks.append(f"{op}: {len(seen - allowed)} rows it must not")
            if must_see - seen:
                c.broken.append(f"misses {len(must_see - seen)} rows it should see")
        elif status == "error":
            c.broken.append(got)
        elif must_see:
            c.broken.append("denied rows it should see")

    def probe(self, query: sql.Composable, params: Any) -> None:
        c = self.cell("probe")
        c.statements += 1
        status, got = _attempt(self.db, self.actor, self.w, query, params, commit=self.commit)
        if status == "error" and got.startswith("22012"):
            c.leaks.append("a division by zero on hidden rows answered")
        elif status == "error":
            c.broken.append(got)

    def write(self, op: str, statements: list[tuple[sql.Composable, Any]]) -> None:
        c = self.cell(op)
        for query, params in statements:
            c.statements += 1
            status, got = _attempt(self.db, self.actor, self.w, query, params, commit=self.commit)
            if status == "ok" and got:
                c.leaks.append(f"{query.as_string(self.db)[:60]}... affected {got} rows")
            elif status == "error":
                c.broken.append(got)


def attack_table(
    db: psycopg.Connection[Any],
    w: World,
    snap: Snapshot,
    *,
    table: str,
    pk: list[str],
    actor: Actor,
    commit: bool,
) -> list[Cell]:
    """Every operation of ``actor`` against the rows of ``table`` it does not own."""
    spec = TABLES[table]
    ident = _ident(table)
    rows = list(snap[table].values())
    signed_in = actor.role != "anon"
    writable = {pk_of(r, pk) for r in rows if signed_in and spec.writable(actor, w, r, snap)}
    targets = [pk_of(r, pk) for r in rows if pk_of(r, pk) not in writable]
    assert targets, f"{table}: no rows to attack"
    where, keys = _pk_filter(pk, targets)
    key_json = sql.SQL("jsonb_build_array({})::text").format(
        sql.SQL(", ").join(map(sql.Identifier, pk))
    )
    expected = expected_visible(actor, w, table, snap)
    a = Attack(db, actor, w, table, commit)
    # read: all the actor can select, against the oracle (and it must see its own)
    a.read(
        "read",
        sql.SQL("select {} from {}").format(key_json, ident),
        expected,
        expected if signed_in else set(),
    )
    # probe: a filter that fails on a hidden row would betray it (RLS must filter first)
    hidden = sorted(set(snap[table]) - expected)
    a.probe(
        sql.SQL("select count(*) from {} where 1 / (case when {} then 0 else 1 end) = 1").format(
            ident, _pk_filter(pk, hidden)[0]
        ),
        [hidden],
    )
    # lock: select ... for update takes only rows the actor could write
    a.read("lock", sql.SQL("select {} from {} for update").format(key_json, ident), writable, set())
    a.write("insert", [_insert(table, row) for row in spec.inserts(actor, w, rows)])
    # upsert: another's row inserted again, the conflict turned into an update
    conflict = sql.SQL(" on conflict ({}) do update set {}").format(
        sql.SQL(", ").join(map(sql.Identifier, pk)), sql.SQL(spec.update_set)
    )
    a.write("upsert", [_insert(table, snap[table][targets[0]], conflict)])
    update = sql.SQL("update {} as t set {} where {}").format(
        ident, sql.SQL(spec.update_set), where
    )
    a.write("update", [(update, [keys])])
    if spec.writable is not _no_one:
        # reassign: hand one's own row (or, without one, another's) to someone else
        mine, one_key = _pk_filter(pk, sorted(writable) or targets[:1])
        reassign = sql.SQL("update {} set user_id = %s where {}").format(ident, mine)
        a.write("reassign", [(reassign, [w.nobody, one_key])])
    a.write("delete", [(sql.SQL("delete from {} where {}").format(ident, where), [keys])])
    # truncate is not subject to RLS at all: only the privilege stands in the way
    a.write("truncate", [(sql.SQL("truncate {} cascade").format(ident), None)])
    return a.cells


def run_matrix(
    db: psycopg.Connection[Any],
    w: World,
    snap: Snapshot,
    pks: dict[str, list[str]],
    *,
    commit: bool,
) -> list[Cell]:
    """Every (table, actor, operation); a cell's leaks say what got through."""
    return [
        cell
        for table, pk in pks.items()
        for actor in ACTORS
        for cell in attack_table(db, w, snap, table=table, pk=pk, actor=actor, commit=commit)
    ]


def summary(cells: list[Cell]) -> str:
    tables = {c.table for c in cells}
    actors = {c.actor for c in cells}
    ops = {c.operation for c in cells}
    statements = sum(c.statements for c in cells)
    leaks = sum(1 for c in cells if c.leaks)
    return (
        f"RLS matrix (SQL): {len(tables)} tables x {len(ops)} operations x {len(actors)} actors"
        f" = {len(cells)} cells, {statements} statements, {leaks} leaks"
    )


# --- Tests ----------------------------------------------------------------------------------


@pytest.fixture
def world(admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> World:
    return build_world(admin_conn, db)


@pytest.fixture
def pks(admin_conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    return {t: primary_key(admin_conn, t) for t in sorted(TABLES)}


def test_the_matrix_covers_every_table_of_eventlive_plus_realtime_and_auth(
    admin_conn: psycopg.Connection[Any],
) -> None:
    assert catalog_tables(admin_conn) == set(TABLES)


def test_the_world_has_rows_to_hide_in_every_table_from_every_actor(
    admin_conn: psycopg.Connection[Any], world: World, pks: dict[str, list[str]]
) -> None:
    """Each actor must miss some rows of each table and (signed in) see its own where the
    oracle grants any: otherwise a cell could pass for want of data."""
    snap = snapshot(admin_conn, pks)
    for table in TABLES:
        for actor in ACTORS:
            hidden = set(snap[table]) - expected_visible(actor, world, table, snap)
            assert hidden, f"{actor.name} is allowed every row of {table}: nothing to leak"
    viewer, staff = ACTORS[0], ACTORS[-1]
    for table in ("eventlive.registrations", "eventlive.presence", "eventlive.profiles"):
        assert expected_visible(viewer, world, table, snap), table
        assert len(expected_visible(staff, world, table, snap)) >= 2, table


def test_no_actor_reads_or_writes_rows_of_another_viewer_or_another_webinar(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    world: World,
    pks: dict[str, list[str]],
) -> None:
    before = snapshot(admin_conn, pks)
    cells = run_matrix(db, world, before, pks, commit=True)
    after = snapshot(admin_conn, pks)
    print(summary(cells))
    leaks = [f"{c.table} / {c.actor} / {c.operation}: {c.leaks}" for c in cells if c.leaks]
    broken = [f"{c.table} / {c.actor} / {c.operation}: {c.broken}" for c in cells if c.broken]
    changed = [t for t in pks if before[t] != after[t]]
    assert (leaks, broken, changed) == ([], [], [])
    reassignable = sum(1 for s in TABLES.values() if s.writable is not _no_one)
    assert len(cells) == len(ACTORS) * (len(TABLES) * (len(OPERATIONS) - 1) + reassignable)


def test_the_matrix_reports_a_leak_in_every_cell_when_the_tables_are_wide_open(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    world: World,
    pks: dict[str, list[str]],
) -> None:
    """The matrix can fail: every table granted to anon and authenticated with a policy
    that allows everything (a throwaway clone) -> a leak in every cell, and a committed
    run changes the superuser's view."""
    admin_conn.execute("grant usage on schema eventlive to anon")
    for table in pks:
        ident = _ident(table)
        # A restrictive policy would still hold a wide-open table shut: drop those too.
        for (name,) in admin_conn.execute(
            "select policyname from pg_policies where schemaname || '.' || tablename = %s"
            " and permissive = 'RESTRICTIVE'",
            (table,),
        ).fetchall():
            admin_conn.execute(sql.SQL("drop policy {} on {}").format(sql.Identifier(name), ident))
        admin_conn.execute(sql.SQL("grant all on {} to anon, authenticated").format(ident))
        admin_conn.execute(
            sql.SQL(
                "create policy wide_open on {} for all to anon, authenticated"
                " using (true) with check (true)"
            ).format(ident)
        )
    admin_conn.execute(
        "grant usage on all sequences in schema eventlive, realtime to anon, authenticated"
    )
    before = snapshot(admin_conn, pks)
    cells = run_matrix(db, world, before, pks, commit=False)
    silent = [f"{c.table} / {c.actor} / {c.operation} {c.broken}" for c in cells if not c.leaks]
    assert silent == []
    assert snapshot(admin_conn, pks) == before  # nothing committed
    run_matrix(db, world, before, pks, commit=True)
    assert snapshot(admin_conn, pks) != before


def test_the_policies_alone_stop_every_write_when_a_table_privilege_slips(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    world: World,
    pks: dict[str, list[str]],
) -> None:
    """Defence in depth: select, insert, update and delete granted to anon and
    authenticated on every table under RLS (a throwaway clone), the real policies still
    let nothing through. Truncate stays ungranted (RLS does not apply to it: only the
    privilege guards it), and auth.users is left out (no RLS: Supabase's and ours rest on
    privileges alone)."""
    admin_conn.execute("grant usage on schema eventlive to anon")
    guarded = {t: pk for t, pk in pks.items() if t != "auth.users"}
    for table in guarded:
        admin_conn.execute(
            sql.SQL("grant select, insert, update, delete on {} to anon, authenticated").format(
                _ident(table)
            )
        )
    before = snapshot(admin_conn, pks)
    cells = run_matrix(db, world, before, guarded, commit=True)
    leaks = [f"{c.table} / {c.actor} / {c.operation}: {c.leaks}" for c in cells if c.leaks]
    broken = [f"{c.table} / {c.actor} / {c.operation}: {c.broken}" for c in cells if c.broken]
    assert (leaks, broken) == ([], [])
    assert snapshot(admin_conn, pks) == before


def test_staff_cannot_widen_the_profiles_they_read_by_registering_a_stranger(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    world: World,
    pks: dict[str, list[str]],
) -> None:
    """The API contract: only service_role registers someone else. Staff of A registering a
    viewer of B (and a user with no rows at all) into A is refused alike, so it neither
    learns whether the user exists nor widens the profiles it reads afterwards: the
    profiles staff of A select are still exactly the oracle's, and no table changed."""
    before = snapshot(admin_conn, pks)
    staff = next(a for a in ACTORS if a.name == "staff_of_a")
    refusals = []
    for target in (world.outsider, world.nobody):
        with pytest.raises(psycopg.Error) as caught, act_as(db, world.staff_a, commit=True) as c:
            c.execute("select api.register(%s, %s)", (A, target))
        diag = caught.value.diag
        refusals.append((diag.sqlstate, diag.message_detail))
    assert refusals == [("PT403", "not_service_role")] * 2
    with act_as(db, world.staff_a) as c:
        seen = {str(r[0]) for r in c.execute("select user_id from eventlive.profiles")}
    allowed = {
        json.loads(k)[0] for k in expected_visible(staff, world, "eventlive.profiles", before)
    }
    assert world.outsider not in seen
    assert seen == allowed
    assert snapshot(admin_conn, pks) == before
