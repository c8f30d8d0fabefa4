"""The live room's event log (sql/0004_live_room.sql, functions/05_room.sql): every
webinar's events get a seq that has no gaps and follows commit order -- a rolled-back
writer gives its number back, a late committer is never overtaken, and a cursor that
polls while many writers commit and roll back never skips a row. The hub's read is one
primary-key range scan, executable only by ``eventlive_hub``; ``publish`` by no API role;
a transaction wakes the hubs with one NOTIFY per webinar."""

from __future__ import annotations

import random
import re
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from shim.testing import act_as, as_anon, create_user

A, B = 201, 202


@pytest.fixture
def webinars(admin_conn: psycopg.Connection[Any]) -> None:
    for wid in (A, B):
        admin_conn.execute("select api.upsert_webinar(%s, %s)", (wid, f"Room {wid}"))


def publish(conn: psycopg.Connection[Any], webinar: int, payload: dict[str, Any]) -> int:
    row = conn.execute(
        "select eventlive.publish(%s, 'chat', 'message', %s)", (webinar, Jsonb(payload))
    ).fetchone()
    assert row is not None
    return int(row[0])


def log(admin: psycopg.Connection[Any], webinar: int) -> list[tuple[int, dict[str, Any]]]:
    rows = admin.execute(
        "select seq, payload from eventlive.room_events where webinar_id = %s order by seq",
        (webinar,),
    ).fetchall()
    return [(int(r[0]), r[1]) for r in rows]


def hub_read(
    db: psycopg.Connection[Any], webinar: int, after: int, max_rows: int = 1000
) -> list[int]:
    with act_as(db, None, role="eventlive_hub") as c:
        rows = c.execute(
            "select seq from eventlive.room_events_since(%s, %s, %s)", (webinar, after, max_rows)
        ).fetchall()
    return [int(r[0]) for r in rows]


def wait_until_waiting_for_a_lock(admin: psycopg.Connection[Any], pid: int) -> None:
    """Poll pg_stat_activity until backend ``pid`` waits on a lock (at most 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute(
            "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.01)
    pytest.fail(f"backend {pid} never waited for a lock")


class Publisher(threading.Thread):
    """Publishes once on its own connection, in a transaction it then leaves open until
    ``finish`` says commit or rollback."""

    def __init__(self, dsn: str, webinar: int) -> None:
        super().__init__()
        self.conn = psycopg.connect(dsn)
        self.pid = self.conn.info.backend_pid
        self.webinar = webinar
        self.seq: int | None = None
        self.published = threading.Event()
        self.decision: str | None = None
        self.decided = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.seq = publish(self.conn, self.webinar, {"by": self.pid})
            self.published.set()
            self.decided.wait(30)
            if self.decision == "commit":
                self.conn.commit()
            else:
                self.conn.rollback()
        except BaseException as exc:  # noqa: BLE001 - asserted by the test
            self.error = exc
            self.published.set()
        finally:
            self.conn.close()

    def finish(self, decision: str) -> None:
        self.decision = decision
        self.decided.set()
        self.join(30)
        assert self.error is None


def test_seq_counts_from_one_per_webinar_and_the_payload_carries_it(
    admin_conn: psycopg.Connection[Any], webinars: None
) -> None:
    """Each webinar has its own sequence from 1; the payload keeps its keys and gains seq."""
    assert [publish(admin_conn, A, {"n": n}) for n in range(3)] == [1, 2, 3]
    assert publish(admin_conn, B, {"n": 0}) == 1
    assert log(admin_conn, A) == [(s, {"n": s - 1, "seq": s}) for s in (1, 2, 3)]
    assert log(admin_conn, B) == [(1, {"n": 0, "seq": 1})]


def test_a_rolled_back_writer_gives_its_seq_to_the_writer_waiting_behind_it(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, webinars: None
) -> None:
    """A publisher that rolls back leaves no gap: the next one, which waited on the
    counter row's lock, gets the same number."""
    first = Publisher(eventlive_db.admin_dsn, A)
    first.start()
    assert first.published.wait(10)
    assert first.seq == 1
    second = Publisher(eventlive_db.admin_dsn, A)
    second.start()
    wait_until_waiting_for_a_lock(admin_conn, second.pid)
    first.finish("rollback")
    assert second.published.wait(10)
    second.finish("commit")
    assert second.seq == 1
    assert [s for s, _ in log(admin_conn, A)] == [1]


def test_a_late_committer_is_never_overtaken_by_a_later_writer(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    eventlive_db: Any,
    webinars: None,
) -> None:
    """While seq 1 is uncommitted, a later writer waits and a reader sees nothing; once 1
    commits the reader sees 1, then 2: seq order is commit order, so a cursor never
    passes a row that commits late."""
    late = Publisher(eventlive_db.admin_dsn, A)
    late.start()
    assert late.published.wait(10)
    later = Publisher(eventlive_db.admin_dsn, A)
    later.start()
    wait_until_waiting_for_a_lock(admin_conn, later.pid)
    assert hub_read(db, A, 0) == []
    other = publish(admin_conn, B, {})  # another webinar does not wait
    assert other == 1
    late.finish("commit")
    assert later.published.wait(10)
    assert hub_read(db, A, 0) == [1]
    later.finish("commit")
    assert (late.seq, later.seq) == (1, 2)
    assert hub_read(db, A, 0) == [1, 2]


def test_a_polling_cursor_never_skips_an_event_while_writers_commit_and_roll_back(
    admin_conn: psycopg.Connection[Any],
    db: psycopg.Connection[Any],
    eventlive_db: Any,
    webinars: None,
) -> None:
    """8 concurrent writers, 30 transactions each, a fifth rolled back at random, some
    publishing two events: the log is 1..n without a gap, and a hub polling
    room_events_since(cursor) all along reads every committed event exactly once, each
    batch continuing at cursor + 1."""
    writers, rounds = 8, 30
    committed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def write(index: int) -> None:
        rnd = random.Random(index)  # noqa: S311 - a reproducible schedule, not a secret
        try:
            with psycopg.connect(eventlive_db.admin_dsn) as conn:
                for _ in range(rounds):
                    seqs = [publish(conn, A, {"w": index}) for _ in range(rnd.choice((1, 1, 2)))]
                    time.sleep(rnd.random() / 500)  # a late committer now and then
                    if rnd.random() < 0.2:
                        conn.rollback()
                    else:
                        conn.commit()
                        with lock:
                            committed.extend(seqs)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    seen: list[int] = []
    gaps: list[tuple[int, list[int]]] = []

    def poll() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            batch = hub_read(db, A, cursor, 7)
            if batch and batch != list(range(cursor + 1, cursor + 1 + len(batch))):
                gaps.append((cursor, batch))
            seen.extend(batch)
            cursor = batch[-1] if batch else cursor
            if finished and not batch:
                return

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    poller = threading.Thread(target=poll)
    poller.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    poller.join(60)
    assert errors == []
    assert gaps == []
    assert sorted(committed) == list(range(1, len(committed) + 1))
    assert seen == sorted(committed)
    assert [(s, p["seq"]) for s, p in log(admin_conn, A)] == [(s, s) for s in seen]
    print(
        f"{len(committed)} events committed by {writers} writers, read by one cursor without a gap"
    )


def test_publish_wakes_the_hubs_once_per_webinar_per_transaction_and_not_on_rollback(
    admin_conn: psycopg.Connection[Any], eventlive_db: Any, webinars: None
) -> None:
    """NOTIFY eventlive_room with the webinar id: one per committed transaction and
    webinar however many events it published, none for a rolled-back one."""
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as listener:
        listener.execute("listen eventlive_room")
        with psycopg.connect(eventlive_db.admin_dsn) as writer:
            for _ in range(3):
                publish(writer, A, {})
            publish(writer, B, {})
            writer.commit()
            publish(writer, A, {})
            writer.rollback()
            publish(writer, B, {})
            writer.commit()
        got = [n.payload for n in listener.notifies(timeout=1.0)]
    assert got == [str(A), str(B), str(B)]


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role", "eventlive_hub"])
def test_no_api_role_nor_the_hub_may_publish(
    db: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], webinars: None, role: str
) -> None:
    """publish has no grant: only security definer api functions (as owner) call it."""
    user = create_user(admin_conn)
    who = user if role == "authenticated" else None
    with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, who, role=role) as c:
        publish(c, A, {})


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_only_the_hub_role_reads_the_log(
    db: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], webinars: None, role: str
) -> None:
    """room_events_since and room_last_seqs are executable by eventlive_hub alone."""
    publish(admin_conn, A, {})
    user = create_user(admin_conn)
    for query in (
        "select * from eventlive.room_events_since(%s, 0, 10)",
        "select * from eventlive.room_last_seqs(array[%s]::bigint[])",
    ):
        who = user if role == "authenticated" else None
        with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, who, role=role) as c:
            c.execute(query, (A,))
    assert hub_read(db, A, 0) == [1]


def test_the_hub_reads_a_bounded_page_and_the_last_seqs_of_many_webinars_at_once(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], webinars: None
) -> None:
    """max_rows is clamped to 1..1000; room_last_seqs answers for every webinar with
    events in one call (none for a webinar without any)."""
    for _ in range(5):
        publish(admin_conn, A, {})
    publish(admin_conn, B, {})
    assert hub_read(db, A, 1, 2) == [2, 3]
    assert hub_read(db, A, 0, 0) == [1]
    assert hub_read(db, A, 3, -5) == [4]
    with act_as(db, None, role="eventlive_hub") as c:
        rows = c.execute(
            "select webinar_id, last_seq from eventlive.room_last_seqs(%s) order by 1",
            ([A, B, 999],),
        ).fetchall()
    assert rows == [(A, 5), (B, 1)]


def test_the_hub_read_is_one_primary_key_range_scan(
    admin_conn: psycopg.Connection[Any], webinars: None
) -> None:
    """With 20,000 events over two webinars the read "after seq N" is an index scan of
    room_events_pkey under a limit: it costs the page read, not the log's size."""
    admin_conn.execute(
        "insert into eventlive.room_sequences (webinar_id, last_seq) values (%s, 10000), (%s, 10000)",
        (A, B),
    )
    admin_conn.execute(
        "insert into eventlive.room_events (webinar_id, seq, channel, event, payload)"
        " select w, s, 'chat', 'message', jsonb_build_object('seq', s)"
        " from unnest(array[%s, %s]::bigint[]) as w, generate_series(1, 10000) as s",
        (A, B),
    )
    admin_conn.execute("analyze eventlive.room_events")
    # The function pins search_path, so it is not inlined: its own statement's plan is
    # the one that matters, reported by auto_explain from inside it.
    notices: list[str] = []
    admin_conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    admin_conn.execute("load 'auto_explain'")
    for name, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_analyze", "on"),
        ("auto_explain.log_timing", "off"),
        ("auto_explain.log_level", "notice"),
    ):
        admin_conn.execute("select set_config(%s, %s, false)", (name, value))
    rows = admin_conn.execute(
        "select count(*) from eventlive.room_events_since(%s, 9000, 100)", (A,)
    ).fetchone()
    assert rows is not None
    assert rows[0] == 100
    inner = [n for n in notices if "room_events" in n and "Index Scan" in n]
    assert inner, notices
    plan = inner[0]
    assert "Index Scan using room_events_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan
    # PostgreSQL 18 writes actual rows with two decimals (rows=100.00).
    assert re.search(r"actual rows=100(\.00)? loops=1", plan), plan


def test_anon_cannot_reach_the_log_tables_at_all(
    db: psycopg.Connection[Any], admin_conn: psycopg.Connection[Any], webinars: None
) -> None:
    """Defence in depth beside RLS: no API role holds a privilege to read the tables."""
    publish(admin_conn, A, {})
    for table in ("eventlive.room_events", "eventlive.room_sequences"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), as_anon(db) as c:
            c.execute(f"select * from {table}")  # noqa: S608 - fixed table names
        user = create_user(admin_conn)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), act_as(db, user) as c:
            c.execute(f"select * from {table}")  # noqa: S608 - fixed table names
