"""The batched entry, ``eventlive.track_access_batch`` (functions/32_coalesced.sql): who may
run it; every element answered as ``api.track_access`` answers it alone (each success
and error kind, in one mixed batch); a failing element rolls back its own writes only,
an unforeseen failure asks to go alone; the same viewer twice in a batch ends as two
calls in a row; and concurrent overlapping batches, single calls, heartbeats and
housekeeping never deadlock (also viewers whose viewer locks share a key) and leave
every row and count right."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from test_api_behaviour import (
    AUTO,
    DRAFT,
    ENDED,
    REGISTERED_ONLY,
    SCHEDULED,
    UNKNOWN,
    World,
    build_world,
)
from test_api_hot_path import COUNTED

from shim.testing import act_as, create_user
from shim.testing.plugin import EventliveDatabase

BATCH = "eventlive.track_access_batch(bigint[], uuid[], uuid[], jsonb[])"
Element = tuple[int, Any, Any, Any]  # webinar, user, session, client
Answer = tuple[str, Any]  # ("ok", answer) | ("error", body) | ("alone", True)


def batch(conn: psycopg.Connection[Any], elements: list[Element], *, commit: bool) -> list[Answer]:
    """One batch as the shim sends it (role eventlive_batcher), answers by position."""
    with act_as(conn, None, role="eventlive_batcher", commit=commit) as c:
        row = c.execute(
            "select eventlive.track_access_batch(%s::bigint[], %s::uuid[], %s::uuid[], %s::jsonb[])",
            (
                [e[0] for e in elements],
                [None if e[1] is None else str(e[1]) for e in elements],
                [None if e[2] is None else str(e[2]) for e in elements],
                [None if e[3] is None else Jsonb(e[3]) for e in elements],
            ),
        ).fetchone()
    assert row is not None
    assert set(row[0]) == {str(i) for i in range(1, len(elements) + 1)}
    out = []
    for i in range(1, len(elements) + 1):
        ((kind, value),) = row[0][str(i)].items()
        out.append((kind, value))
    return out


def single(conn: psycopg.Connection[Any], element: Element, *, commit: bool) -> Answer:
    """The same element through api.track_access, its error as PostgREST's body."""
    webinar, user, session, client = element
    try:
        with act_as(conn, user, commit=commit) as c:
            row = c.execute(
                "select api.track_access(%s, %s, %s)",
                (webinar, session, None if client is None else Jsonb(client)),
            ).fetchone()
    except psycopg.Error as exc:
        d = exc.diag
        body = {
            "code": d.sqlstate,
            "message": d.message_primary,
            "details": d.message_detail,
            "hint": d.message_hint,
        }
        return ("error", body)
    assert row is not None
    return ("ok", row[0])


def same_answer(got: Answer, expected: Answer, session: Any) -> bool:
    """Equal, but for what each call draws anew: a new session id, first_ping_in."""
    if got[0] != expected[0] or got[0] != "ok":
        return got == expected
    a, b = dict(got[1]), dict(expected[1])
    assert 1 <= a.pop("first_ping_in") <= a["heartbeat_seconds"]
    b.pop("first_ping_in")
    if session is None:  # a new session: a new id each time
        assert a.pop("session_id") != b.pop("session_id")
    return a == b


def test_only_the_batch_role_may_execute_the_entry_batch(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Not PUBLIC, anon, authenticated or service_role: eventlive_batcher alone (and the
    function's owner); a viewer or anon calling it is refused."""
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
    user = create_user(admin_conn)
    admin_conn.execute("select api.upsert_webinar(%s, 'Batch')", (AUTO,))
    for who, role in ((user, "authenticated"), (None, "anon"), (None, "service_role")):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, who, role=role) as c:
            c.execute(
                "select eventlive.track_access_batch(array[%s]::bigint[], array[%s]::uuid[],"
                " array[null]::uuid[], array[null]::jsonb[])",
                (AUTO, str(user)),
            )


def test_the_batch_is_durable_and_refuses_a_batch_it_cannot_take(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Durable as api.track_access: the default synchronous_commit stays (the heartbeat
    batch turns it off). More than 50 elements, or arrays of different lengths, are
    refused whole (22023), so the shim sends those entries alone."""
    admin_conn.execute("select api.upsert_webinar(%s, 'Batch')", (AUTO,))
    user = create_user(admin_conn)
    with act_as(db, None, role="eventlive_batcher") as c:
        c.execute(
            "select eventlive.track_access_batch(array[%s]::bigint[], array[%s]::uuid[],"
            " array[null]::uuid[], array[null]::jsonb[])",
            (AUTO, str(user)),
        )
        row = c.execute("select current_setting('synchronous_commit')").fetchone()
    assert row == ("on",)
    users = [create_user(admin_conn) for _ in range(51)]
    for elements, reason in (
        ([(AUTO, u, None, None) for u in users], "batch_too_large"),
        ([(AUTO, u, None, None) for u in users[:3]], "invalid_batch"),
    ):
        with (
            pytest.raises(psycopg.errors.InvalidParameterValue) as refused,
            act_as(db, None, role="eventlive_batcher") as c,
        ):
            c.execute(
                "select eventlive.track_access_batch(%s::bigint[], %s::uuid[],"
                " %s::uuid[], %s::jsonb[])",
                (
                    [e[0] for e in elements],
                    [str(e[1]) for e in elements],
                    [None] * len(elements),
                    [None] * (len(elements) if reason == "batch_too_large" else 1),
                ),
            )
        assert refused.value.diag.message_detail == reason


def test_a_mixed_batch_answers_every_element_as_the_single_path_would(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """One statement: a new entry, a re-confirm, a new device superseding the active one,
    a superseded and an ended session, another viewer's session id, closed, draft and
    missing webinars, not registered, staff of a registration-only webinar, a scheduled
    webinar, a client-made session id, a client too large, a deleted user and no user.
    Each answer equals api.track_access's for the same call (computed alone before, each
    rolled back); afterwards the rows are as the single calls leave them and the old
    device was told."""
    w: World = build_world(admin_conn, db)
    ghost = create_user(admin_conn)
    admin_conn.execute("delete from auth.users where id = %s", (ghost,))
    newcomer = create_user(admin_conn)
    elements: list[Element] = [
        (AUTO, w.stranger, None, {"ua": "tab"}),  # new entry, auto-registered
        (AUTO, w.viewer, w.active, None),  # re-confirm
        (AUTO, w.viewer, None, None),  # a new device: supersedes the active session
        (AUTO, w.viewer, w.superseded, None),  # 409 session_superseded
        (REGISTERED_ONLY, w.viewer, w.left, None),  # 409 session_ended
        (AUTO, w.stranger, w.active, None),  # 400 invalid_session_id
        (ENDED, w.viewer, None, None),  # 403 webinar_closed
        (DRAFT, w.viewer, None, None),  # 403 webinar_closed
        (UNKNOWN, w.viewer, None, None),  # 404 webinar_not_found
        (REGISTERED_ONLY, w.stranger, None, None),  # 403 not_registered
        (REGISTERED_ONLY, w.staff, None, None),  # staff enter, registered as staff
        (SCHEDULED, w.stranger, None, None),
        (AUTO, newcomer, uuid.uuid4(), None),  # a session id the client made up
        (AUTO, w.viewer, None, {"ua": "x" * 5000}),  # 400 client_too_large
        (AUTO, ghost, None, None),  # 401 user_not_found
        (AUTO, None, None, None),  # 401 not_authenticated
    ]
    expected = [single(db, e, commit=False) for e in elements]
    assert {a[1]["details"] for a in expected if a[0] == "error"} == {
        "session_superseded",
        "session_ended",
        "invalid_session_id",
        "webinar_closed",
        "webinar_not_found",
        "not_registered",
        "client_too_large",
        "user_not_found",
        "not_authenticated",
    }
    got = batch(db, elements, commit=True)
    differ = [
        (i, g, e)
        for i, (g, e, el) in enumerate(zip(got, expected, elements, strict=True), 1)
        if not same_answer(g, e, el[2])
    ]
    assert differ == []
    assert got[12][1]["session_id"] == str(elements[12][2])
    new_device = got[2][1]["session_id"]
    sessions = dict(
        admin_conn.execute(
            "select session_id::text, coalesce(end_reason, 'active') from eventlive.viewer_sessions"
            " where webinar_id = %s and user_id = %s",
            (AUTO, w.viewer),
        ).fetchall()
    )
    assert sessions == {
        str(w.superseded): "superseded",
        str(w.active): "superseded",
        new_device: "active",
    }
    told = admin_conn.execute(
        "select payload - 'seq' from eventlive.room_events where webinar_id = %s and channel = %s"
        " and event = 'session_superseded' order by seq desc limit 1",
        (AUTO, f"user:{w.viewer}"),
    ).fetchone()
    assert told == ({"session_id": str(w.active), "superseded_by": new_device},)
    registered = admin_conn.execute(
        "select webinar_id, user_id, source from eventlive.registrations"
        " where user_id = any(%s) order by webinar_id, source",
        ([w.stranger, w.staff, newcomer],),
    ).fetchall()
    assert sorted(registered) == sorted(
        [
            (AUTO, w.stranger, "auto"),
            (AUTO, newcomer, "auto"),
            (REGISTERED_ONLY, w.staff, "staff"),
            (SCHEDULED, w.stranger, "auto"),
        ]
    )


def test_a_failing_element_rolls_back_its_own_writes_only(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Two newcomers present the same made-up session id in one batch: the first enters
    with it; the second is auto-registered before its session is checked, then fails
    (400 invalid_session_id, as when it comes alone right after), and its registration,
    counter delta and access records are rolled back while the first's are kept. An
    unforeseen failure (a trigger raising P0001 and 40P01 for two viewers) answers
    {"alone": true} and leaves nothing of that element; the others are answered."""
    admin_conn.execute("select api.upsert_webinar(%s, 'Batch')", (AUTO,))
    first, second = sorted([create_user(admin_conn) for _ in range(2)])
    made_up = uuid.uuid4()
    got = batch(db, [(AUTO, second, made_up, None), (AUTO, first, made_up, None)], commit=True)
    assert got[1][0] == "ok"
    assert got[1][1]["session_id"] == str(made_up)
    assert got[0] == single(db, (AUTO, second, made_up, None), commit=False)
    assert got[0][1]["details"] == "invalid_session_id"
    rows = admin_conn.execute(
        "select (select count(*) from eventlive.registrations where user_id = u),"
        " (select count(*) from eventlive.access_log where user_id = u),"
        " (select count(*) from eventlive.presence where user_id = u)"
        " from unnest(%s::uuid[]) as u",
        ([first, second],),
    ).fetchall()
    assert rows == [(1, 1, 1), (0, 0, 0)]
    assert admin_conn.execute(COUNTED, (AUTO, AUTO)).fetchone() == (1, 1)

    odd, late, fine = (create_user(admin_conn) for _ in range(3))
    admin_conn.execute(
        f"""
        create function public.boom() returns trigger language plpgsql as $$
        begin
            if new.user_id = '{odd}' then raise exception 'unforeseen'; end if;
            if new.user_id = '{late}' then raise exception using errcode = '40P01'; end if;
            return new;
        end $$;
        create trigger boom before insert on eventlive.access_log
        for each row execute function public.boom();
        """
    )
    got = batch(
        db,
        [(AUTO, odd, None, None), (AUTO, fine, None, None), (AUTO, late, None, None)],
        commit=True,
    )
    assert [g[0] for g in got] == ["alone", "ok", "alone"]
    registered = admin_conn.execute(
        "select user_id from eventlive.registrations where user_id = any(%s)",
        ([odd, late, fine],),
    ).fetchall()
    assert registered == [(fine,)]
    assert admin_conn.execute(COUNTED, (AUTO, AUTO)).fetchone() == (2, 2)


def test_the_same_viewer_twice_in_a_batch_ends_as_two_calls_in_a_row(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any]
) -> None:
    """Two tabs enter at once (and a third re-confirms the first tab's session after
    them): one registration, the first tab's session superseded by the second's, one
    active session named by presence, the old tab told; the answers are those of the
    same calls one after the other."""
    admin_conn.execute("select api.upsert_webinar(%s, 'Batch')", (AUTO,))
    viewer = create_user(admin_conn)
    got = batch(db, [(AUTO, viewer, None, None), (AUTO, viewer, None, None)], commit=True)
    (k1, a1), (k2, a2) = got
    assert (k1, k2) == ("ok", "ok")
    assert (a1["auto_registered"], a1["superseded_session_id"]) == (True, None)
    assert (a2["auto_registered"], a2["superseded_session_id"]) == (False, a1["session_id"])
    again = batch(db, [(AUTO, viewer, a1["session_id"], None)], commit=True)
    assert again == [single(db, (AUTO, viewer, a1["session_id"], None), commit=False)]
    assert again[0][1]["details"] == "session_superseded"
    state = admin_conn.execute(
        "select (select count(*) from eventlive.registrations where user_id = %(v)s),"
        " (select array_agg(session_id::text order by started_at, ended_at nulls last)"
        "  from eventlive.viewer_sessions where user_id = %(v)s and ended_at is null),"
        " (select session_id::text from eventlive.presence where user_id = %(v)s),"
        " (select superseded_by::text from eventlive.viewer_sessions where session_id = %(s)s),"
        " (select count(*) from eventlive.room_events where channel = 'user:' || %(v)s)",
        {"v": viewer, "s": a1["session_id"]},
    ).fetchone()
    assert state == (1, [a2["session_id"]], a2["session_id"], a2["session_id"], 1)
    assert admin_conn.execute(COUNTED, (AUTO, AUTO)).fetchone() == (1, 1)


# --- Concurrency -----------------------------------------------------------------------


def _run(
    dsn: str, tasks: list[Callable[[psycopg.Connection[Any]], None]], seconds: float
) -> list[str]:
    """Each task in its own thread and connection, again and again, for ``seconds``;
    returns the errors (type and message), expected none."""
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def loop(task: Callable[[psycopg.Connection[Any]], None]) -> None:
        with psycopg.connect(dsn) as conn:
            while time.monotonic() < stop:
                try:
                    task(conn)
                except Exception as exc:  # noqa: BLE001 - collected and asserted empty
                    errors.append(f"{type(exc).__name__}: {exc}")
                    conn.rollback()

    threads = [threading.Thread(target=loop, args=(t,)) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def _viewers_agree(admin: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Registered viewers with more than one active session, or whose presence row does
    not name their active one (expected: none)."""
    return admin.execute(
        """
        select r.webinar_id, r.user_id
        from eventlive.registrations as r
        left join eventlive.presence as p on p.webinar_id = r.webinar_id and p.user_id = r.user_id
        left join eventlive.viewer_sessions as vs
            on vs.webinar_id = r.webinar_id and vs.user_id = r.user_id and vs.ended_at is null
        group by r.webinar_id, r.user_id, p.session_id
        having count(vs.session_id) > 1 or p.session_id is distinct from max(vs.session_id::text)::uuid
        """
    ).fetchall()


class Storm:
    """Random entries and re-confirms of 40 viewers in three webinars, from many threads:
    what each task sends, and what came back (the latest session seen per viewer, the
    answers by kind, and any that is not an expected one)."""

    def __init__(self, webinars: list[int], viewers: list[uuid.UUID]) -> None:
        self.webinars, self.viewers = webinars, viewers
        self.known: dict[tuple[int, uuid.UUID], str] = {}
        self.answers: dict[str, int] = {}
        self.odd: list[Answer] = []
        self.lock = threading.Lock()

    def element(self, rng: random.Random) -> Element:
        key = (rng.choice(self.webinars), rng.choice(self.viewers))
        with self.lock:
            session = self.known.get(key) if rng.random() < 0.6 else None
        return (key[0], key[1], session, None)

    def note(self, element: Element, answer: Answer) -> None:
        """Stale sessions answer 409; anything else but "ok" is odd."""
        with self.lock:
            kind = answer[0] if answer[0] != "error" else answer[1]["details"]
            self.answers[kind] = self.answers.get(kind, 0) + 1
            if answer[0] == "ok":
                self.known[(element[0], element[1])] = answer[1]["session_id"]
            elif answer[0] == "alone" or answer[1]["code"] != "PT409":
                self.odd.append(answer)

    def batches(self, seed: int) -> Callable[[psycopg.Connection[Any]], None]:
        rng = random.Random(seed)  # noqa: S311 - a reproducible mix, not a secret

        def task(conn: psycopg.Connection[Any]) -> None:
            elements = [self.element(rng) for _ in range(rng.randint(2, 50))]
            for e, a in zip(elements, batch(conn, elements, commit=True), strict=True):
                self.note(e, a)

        return task

    def singles(self, seed: int) -> Callable[[psycopg.Connection[Any]], None]:
        rng = random.Random(seed)  # noqa: S311 - a reproducible mix, not a secret

        def task(conn: psycopg.Connection[Any]) -> None:
            e = self.element(rng)
            if e[2] is not None and rng.random() < 0.2:
                with act_as(conn, e[1], commit=True) as c:
                    c.execute("select api.presence_leave(%s, %s)", (e[0], e[2]))
            else:
                self.note(e, single(conn, e, commit=True))

        return task

    def heartbeats(self, conn: psycopg.Connection[Any]) -> None:
        with self.lock:
            pings = list(self.known.items())[:50]
        if pings:
            with act_as(conn, None, role="eventlive_batcher", commit=True) as c:
                c.execute(
                    "select eventlive.presence_ping_batch(%s::bigint[], %s::uuid[], %s::uuid[])",
                    (
                        [k[0] for k, _ in pings],
                        [str(k[1]) for k, _ in pings],
                        [s for _, s in pings],
                    ),
                )

    @staticmethod
    def housekeeping(conn: psycopg.Connection[Any]) -> None:
        with act_as(conn, None, role="service_role", commit=True) as c:
            c.execute("select eventlive.housekeeping_step('30 days', 20)")
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_overlapping_batches_single_calls_heartbeats_and_housekeeping_never_deadlock(
    eventlive_db: EventliveDatabase, admin_conn: psycopg.Connection[Any]
) -> None:
    """For three seconds: four threads send batches of up to 50 random entries and
    re-confirms (the same viewers in every order, three webinars, duplicates, stale
    sessions), one sends single track_access and presence_leave calls, one heartbeat
    batches, one housekeeping steps that fold the counters. No error anywhere (no 40P01),
    no element sent alone, only 409 answers for stale sessions; afterwards each viewer
    has at most one active session, the one presence names, and the counts equal the
    registrations, one per viewer that entered."""
    webinars = [AUTO, AUTO + 10, AUTO + 20]
    for wid in webinars:
        admin_conn.execute("select api.upsert_webinar(%s, 'Storm')", (wid,))
    viewers = [
        r[0]
        for r in admin_conn.execute(
            "insert into auth.users (id) select gen_random_uuid() from generate_series(1, 40)"
            " returning id"
        ).fetchall()
    ]
    storm = Storm(webinars, viewers)
    tasks = [storm.batches(s) for s in range(4)]
    tasks += [storm.singles(99), storm.heartbeats, storm.housekeeping]
    assert _run(eventlive_db.dsn, tasks, 3.0) == []
    print(f"storm answers: {storm.answers}")
    assert storm.odd == []
    assert storm.answers.get("ok", 0) > 500, storm.answers
    assert storm.answers.get("session_superseded", 0) > 0, storm.answers
    assert _viewers_agree(admin_conn) == []
    for wid in webinars:
        actual = admin_conn.execute(
            "select count(*), count(first_entered_at) from eventlive.registrations"
            " where webinar_id = %s",
            (wid,),
        ).fetchone()
        assert admin_conn.execute(COUNTED, (wid, wid)).fetchone() == actual
        assert actual == (len({v for (k, v) in storm.known if k == wid}),) * 2


def _viewers_sharing_a_lock_key(admin: psycopg.Connection[Any]) -> tuple[uuid.UUID, ...]:
    """Three users a < b < c of which a and c share a viewer-lock key (hashtext of the id)
    and b has another: a (webinar, user) order locks a, b, c, a key order does not. The
    ids are 1..150,000 as uuids, so the search finds the same three every run (a 32-bit
    hash: some pair of them collides, about three on average)."""
    row = admin.execute(
        """
        with ids as materialized (
            select lpad(to_hex(g), 32, '0')::uuid as id from generate_series(1, 150000) as g
        ), pair as (
            select (array_agg(id order by id))[1] as a, (array_agg(id order by id))[2] as c
            from ids
            group by hashtext(id::text) having count(*) = 2
            limit 1
        )
        select pair.a, (
            select i.id from ids as i
            where i.id > pair.a and i.id < pair.c and hashtext(i.id::text) <> hashtext(pair.a::text)
            limit 1
        ), pair.c
        from pair
        """
    ).fetchone()
    assert row is not None
    assert None not in row
    for user in row:
        create_user(admin, user_id=user)
    return tuple(row)


@pytest.mark.timeout(120)
def test_viewers_whose_locks_share_a_key_do_not_deadlock_two_batches(
    eventlive_db: EventliveDatabase, admin_conn: psycopg.Connection[Any]
) -> None:
    """Batches [a, b] and [b, c] over and over in two threads, a and c sharing a viewer
    lock key: in (webinar, user) order they would lock key(a), key(b) and key(b), key(a)
    -- the opposite orders; with the locks taken in key order first, no deadlock. The
    control: the same run with eventlive.lock_viewers made a no-op (each element then
    takes its lock in turn) deadlocks (the elements hit answer alone), so the test can
    fail."""
    admin_conn.execute(f"alter database {eventlive_db.name} set deadlock_timeout = '20ms'")
    admin_conn.execute("select api.upsert_webinar(%s, 'Keys')", (AUTO,))
    a, b, c = _viewers_sharing_a_lock_key(admin_conn)
    kinds: list[str] = []

    def pair(first: uuid.UUID, second: uuid.UUID) -> Callable[[psycopg.Connection[Any]], None]:
        def task(conn: psycopg.Connection[Any]) -> None:
            answers = batch(
                conn, [(AUTO, first, None, None), (AUTO, second, None, None)], commit=True
            )
            kinds.extend(k for k, _ in answers)

        return task

    errors = _run(eventlive_db.dsn, [pair(a, b), pair(b, c)], 1.0)
    assert errors == []
    assert set(kinds) == {"ok"}
    assert len(kinds) > 50

    admin_conn.execute(
        "create or replace function eventlive.lock_viewers(p_webinar_ids bigint[], p_user_ids uuid[])"
        " returns void language sql as 'select'"
    )
    kinds.clear()
    errors = _run(eventlive_db.dsn, [pair(a, b), pair(b, c)], 1.0)
    assert errors == []
    print(f"without the ordered locks: {kinds.count('alone')} of {len(kinds)} elements deadlocked")
    assert "alone" in kinds
