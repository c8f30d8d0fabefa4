"""Every statement the hot path runs inside the api functions is served by the intended
index at scale: 100,000 viewers present in one webinar among 1,000 webinars.

The statements are the functions' own: auto_explain (log_nested_statements, JSON,
log_level = notice) sends the plan of every statement executed inside a call to the
client as a NOTICE, and the tests parse those plans. Nothing is copied from the SQL, so
the assertion cannot drift from what the functions really run.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

PASSWORD_ENV = "EVENTLIVE_TEST_AUTHENTICATOR_PASSWORD"  # as the plugin's db fixtures

BIG = 1  # the webinar with 100,000 viewers present
SMALL = 2  # one of the 999 others (20 viewers each)
VIEWERS = 100_000
STAFF = uuid.UUID(int=999_999)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def session(n: int) -> uuid.UUID:
    return uuid.UUID(int=(1 << 100) + n)


# Constants of this module only, formatted in.
LOAD = f"""
set session_replication_role = replica;  -- bulk load: no triggers, no FK checks
insert into eventlive.webinars (id, title) select g, 'Webinar ' || g from generate_series(1, 1000) as g;
insert into auth.users (id) select lpad(to_hex(g), 32, '0')::uuid from generate_series(1, 120000) as g;
insert into auth.users (id) values ('{STAFF}');
insert into eventlive.webinar_staff (webinar_id, user_id) values ({BIG}, '{STAFF}'), ({SMALL}, '{STAFF}');
-- two staff per webinar and two hours of minute samples per webinar: realistic sizes,
-- so that the planner's choices are the ones production will see
insert into eventlive.webinar_staff (webinar_id, user_id)
select w, lpad(to_hex(100000 + (w * 2 + k) % 20000 + 1), 32, '0')::uuid
from generate_series(1, 1000) as w cross join generate_series(0, 1) as k;
create temporary table viewers as
select g, lpad(to_hex(g), 32, '0')::uuid as user_id,
       ('00000010' || lpad(to_hex(g), 24, '0'))::uuid as session_id,
       case when g <= {VIEWERS} then {BIG} else 2 + (g - {VIEWERS} - 1) % 999 end as webinar_id
from generate_series(1, 120000) as g;
insert into eventlive.registrations (webinar_id, user_id, source, first_entered_at)
select webinar_id, user_id, 'auto', now() from viewers;
insert into eventlive.viewer_sessions (session_id, webinar_id, user_id)
select session_id, webinar_id, user_id from viewers;
insert into eventlive.presence (webinar_id, user_id, session_id, last_seen_at)
select webinar_id, user_id, session_id, now() - interval '1 minute' - (g % 60) * interval '1 second' from viewers;
insert into eventlive.profiles (user_id, display_name) select user_id, 'Viewer ' || g from viewers;
-- counted: folded into the counters, except the latest entries, still deltas (the big
-- webinar's last 200, a quarter of each small webinar's 20): 5,200 deltas
create temporary table unfolded as
select g from viewers where g > {VIEWERS} - 200 and (g <= {VIEWERS} or g % 4 = 0);
insert into eventlive.webinar_counters (webinar_id, shard, registrations, unique_viewers)
select webinar_id, (hashtext(user_id::text) & 7), count(*), count(*) from viewers
where g not in (select g from unfolded) group by 1, 2;
insert into eventlive.webinar_counter_deltas (webinar_id, registrations, unique_viewers)
select webinar_id, 1, 1 from viewers where g in (select g from unfolded);
insert into eventlive.presence_minutes (webinar_id, minute, viewers)
select {BIG}, date_trunc('minute', now()) - m * interval '1 minute', {VIEWERS} - m
from generate_series(1, 180) as m;
insert into eventlive.presence_minutes (webinar_id, minute, viewers)
select w, date_trunc('minute', now()) - m * interval '1 minute', 20
from generate_series(2, 1000) as w cross join generate_series(1, 120) as m;
-- sampled "forever": the per-call tests see no minute sample (tested on its own)
update eventlive.webinars set sampled_minute = 'infinity';
reset session_replication_role;
analyze;
"""  # noqa: S608

HOT_TABLES = {
    "webinars",
    "registrations",
    "viewer_sessions",
    "presence",
    "access_log",
    "profiles",
    "webinar_staff",
    "presence_minutes",
    "webinar_counters",
    "webinar_counter_deltas",
}


@dataclass(frozen=True)
class PlansDb:
    admin_dsn: str  # superuser
    dsn: str  # authenticator


@pytest.fixture(scope="module")
def plans_db(eventlive_server: Any, eventlive_template: str) -> Iterator[PlansDb]:
    """One clone of the template for the whole module, loaded once (~4 s): every test
    here only reads it or rolls back, except for a few rows of its own."""
    name = f"eventlive_plans_{eventlive_server.run_id}"
    with psycopg.connect(eventlive_server.admin_dsn(), autocommit=True) as server:
        server.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(eventlive_template)
            )
        )
        try:
            admin_dsn = eventlive_server.admin_dsn(name)
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(LOAD)
            yield PlansDb(
                admin_dsn, eventlive_server.dsn(name, "authenticator", os.environ.get(PASSWORD_ENV))
            )
        finally:
            server.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def loaded(plans_db: PlansDb) -> Iterator[psycopg.Connection[Any]]:
    """Superuser connection to the loaded database (autocommit)."""
    with psycopg.connect(plans_db.admin_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def explain(plans_db: PlansDb) -> Iterator[Any]:
    """``explain(fn_sql, params, user, role)`` -> list of (query text, plan) it ran."""
    conn = psycopg.connect(plans_db.admin_dsn)  # LOAD needs a superuser; the call switches role
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
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
        statement: str,
        params: tuple[Any, ...],
        user: uuid.UUID | None,
        role: str = "authenticated",
        sink: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Run ``statement`` as ``role``/``user`` (rolled back) and return its plans; the
        plans are also appended to ``sink``, which keeps them when the call raises."""
        plans = sink if sink is not None else []
        notices.clear()
        claims = {"role": role} | ({"sub": str(user)} if user else {})
        with conn.transaction(force_rollback=True):
            conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps(claims)),
            )
            notices.clear()
            try:
                conn.execute(statement, params)
            finally:
                for text in notices:
                    if "plan:" in text:
                        doc = json.loads(text.split("plan:", 1)[1])
                        doc = doc[0] if isinstance(doc, list) else doc
                        plans.append((doc["Query Text"], doc["Plan"]))
        assert plans, "auto_explain reported nothing"
        return plans

    yield run
    conn.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans(plans: list[tuple[str, dict[str, Any]]]) -> dict[str, set[str]]:
    """For each statement (first line of its text): the scans of eventlive tables, as
    'Seq Scan on presence' or 'presence_pkey' (the index used)."""
    out: dict[str, set[str]] = {}
    for text, plan in plans:
        found = set()
        for node in nodes(plan):
            rel = node.get("Relation Name")
            if node.get("Index Name"):
                found.add(node["Index Name"])
            elif (
                rel in HOT_TABLES
                and "Scan" in node["Node Type"]
                and node["Node Type"] != "Bitmap Heap Scan"
            ):
                found.add(f"{node['Node Type']} on {rel}")
        key = " ".join(text.split())[:90]
        out[key] = out.get(key, set()) | found
    return out


def assert_no_seq_scans(found: dict[str, set[str]]) -> None:
    seq = {k: v for k, v in found.items() if any(s.startswith("Seq Scan") for s in v)}
    assert seq == {}, seq


def used(found: dict[str, set[str]]) -> set[str]:
    return set().union(*found.values())


# The indexes the hot path is meant to use. For a viewer's registration and sessions the
# planner may pick the secondary (user_id ...) index over the primary key: both pin the
# one viewer's row(s), at the same cost.
INTENDED = {
    "webinars_pkey",
    "presence_pkey",
    "registrations_pkey",
    "registrations_user_id_idx",
    "viewer_sessions_pkey",
    "viewer_sessions_user_id_webinar_id_idx",
    "users_pkey",
    "webinar_staff_pkey",
    "webinar_staff_user_id_idx",
    "profiles_pkey",
    "presence_minutes_pkey",
    "webinar_counters_pkey",
    "webinar_counter_deltas_pkey",
}
REGISTRATION = {"registrations_pkey", "registrations_user_id_idx"}
SESSION = {"viewer_sessions_pkey", "viewer_sessions_user_id_webinar_id_idx"}


def assert_intended(found: dict[str, set[str]], *required: str | set[str]) -> None:
    """No sequential scan, only intended indexes, and each required one (or one of a set)."""
    assert_no_seq_scans(found)
    assert used(found) <= INTENDED, used(found) - INTENDED
    for need in required:
        options = {need} if isinstance(need, str) else need
        assert used(found) & options, (need, found)


def test_presence_ping_finds_its_rows_by_key_and_reads_no_registration_on_success(
    explain: Any,
) -> None:
    """A written heartbeat reads the webinar and its presence row by key and nothing else:
    the registration check inside the update is gone (presence references registrations,
    so the row itself proves the registration)."""
    found = scans(explain("select api.presence_ping(%s, %s)", (BIG, session(42)), uid(42)))
    assert_intended(found, "webinars_pkey", "presence_pkey")
    assert not used(found) & REGISTRATION, found
    update = [v for k, v in found.items() if k.startswith("update eventlive.presence")]
    assert update
    assert update[0] == {"presence_pkey"}


def test_a_throttled_or_refused_ping_also_uses_key_lookups(
    explain: Any, loaded: psycopg.Connection[Any]
) -> None:
    loaded.execute(
        "update eventlive.presence set last_seen_at = now() where user_id = %s", (uid(43),)
    )
    found = scans(explain("select api.presence_ping(%s, %s)", (BIG, session(43)), uid(43)))
    assert_intended(found, "webinars_pkey", "presence_pkey")
    # a throttled ping reads neither sessions nor registrations (its presence row says all)
    assert not used(found) & (SESSION | REGISTRATION)
    plans: list[Any] = []
    with pytest.raises(psycopg.Error) as refused:
        explain("select api.presence_ping(%s, %s)", (BIG, session(44)), uid(43), sink=plans)
    assert refused.value.diag.message_detail == "session_ended"
    assert_intended(scans(plans), "presence_pkey", REGISTRATION, SESSION)


def test_track_access_reentry_and_supersession_use_key_lookups(explain: Any) -> None:
    reconfirm = scans(explain("select api.track_access(%s, %s)", (BIG, session(7)), uid(7)))
    supersede = scans(explain("select api.track_access(%s)", (BIG,), uid(8)))
    assert_intended(
        reconfirm, "webinars_pkey", REGISTRATION, "viewer_sessions_pkey", "presence_pkey"
    )
    assert_intended(
        supersede, "webinars_pkey", REGISTRATION, "viewer_sessions_pkey", "presence_pkey"
    )


def test_a_new_viewer_auto_registers_through_key_lookups(
    explain: Any, loaded: psycopg.Connection[Any]
) -> None:
    newcomer = uuid.uuid4()
    loaded.execute("insert into auth.users (id) values (%s)", (newcomer,))
    found = scans(explain("select api.track_access(%s)", (BIG,), newcomer))
    assert_intended(found, "webinars_pkey", REGISTRATION, "presence_pkey", "users_pkey")


def test_presence_leave_uses_key_lookups(explain: Any) -> None:
    found = scans(explain("select api.presence_leave(%s, %s)", (BIG, session(9)), uid(9)))
    assert_intended(found, "webinars_pkey", "presence_pkey", SESSION)


def test_access_stats_counts_presence_along_its_key_then_reads_minutes_and_counters(
    explain: Any,
) -> None:
    """The count now reads the webinar's range of the presence primary key (there is no
    index on last_seen_at); the rest reads the minute samples and the counters. A webinar
    that is most of the table (BIG: 100,000 of 120,000 rows) is counted by a sequential
    scan of presence instead, which the planner rightly finds cheaper (measured 15-22 ms
    against 42-54 ms along the key); nothing else changes there."""
    small = scans(explain("select api.access_stats(%s)", (SMALL,), STAFF))
    assert_intended(
        small,
        "webinars_pkey",
        "webinar_staff_pkey",
        "presence_pkey",
        "presence_minutes_pkey",
        "webinar_counters_pkey",
    )
    big = used(scans(explain("select api.access_stats(%s)", (BIG,), STAFF)))
    assert big - INTENDED <= {"Seq Scan on presence"}, big
    assert {"presence_minutes_pkey", "webinar_counters_pkey"} <= big, big


def test_no_index_of_presence_covers_last_seen_at_so_a_heartbeat_is_a_hot_update(
    loaded: psycopg.Connection[Any],
) -> None:
    """A heartbeat changes only last_seen_at; while no index of eventlive.presence names
    it (as a key, an included column, in an expression or a predicate) the update is HOT:
    no index entry written. The count now of access_stats must not be bought with one."""
    covering = loaded.execute(
        "select indexrelid::regclass::text from pg_index"
        " where indrelid = 'eventlive.presence'::regclass and ("
        "  (select attnum from pg_attribute where attrelid = indrelid"
        "   and attname = 'last_seen_at') = any(indkey::int2[])"
        "  or pg_get_expr(indexprs, indrelid) like '%%last_seen_at%%'"
        "  or pg_get_expr(indpred, indrelid) like '%%last_seen_at%%')"
    ).fetchall()
    assert covering == []
    with loaded.transaction(force_rollback=True):
        loaded.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": str(uid(45)), "role": "authenticated"}),),
        )
        loaded.execute("select api.presence_ping(%s, %s)", (BIG, session(45)))
        loaded.execute("reset role")
        counts = loaded.execute(
            "select n_tup_upd, n_tup_hot_upd from pg_stat_xact_user_tables"
            " where relid = 'eventlive.presence'::regclass"
        ).fetchone()
    assert counts == (1, 1)  # the heartbeat wrote (seen a minute ago), and HOT


def test_access_stats_sums_the_counters_and_the_unfolded_deltas_along_their_keys(
    explain: Any,
) -> None:
    """registrations and unique_viewers: the webinar's counter rows and its deltas not yet
    folded (sql/0011), each read along its primary key's webinar range, never a scan of
    another webinar's rows."""
    found = used(scans(explain("select api.access_stats(%s)", (SMALL,), STAFF)))
    assert {"webinar_counters_pkey", "webinar_counter_deltas_pkey"} <= found, found
    assert not {f"Seq Scan on {t}" for t in ("webinar_counters", "webinar_counter_deltas")} & found


def test_the_minute_sample_of_a_small_webinar_reads_its_presence_range_only(
    explain: Any, loaded: psycopg.Connection[Any]
) -> None:
    loaded.execute("update eventlive.webinars set sampled_minute = null where id = %s", (SMALL,))
    found = scans(
        explain("select api.presence_ping(%s, %s)", (SMALL, session(VIEWERS + 1)), uid(VIEWERS + 1))
    )
    sample = {
        k: v for k, v in found.items() if k.startswith("insert into eventlive.presence_minutes")
    }
    assert sample, found  # the first ping of the minute took the sample
    assert_no_seq_scans(sample)
    assert "presence_pkey" in used(sample)


def test_participants_pages_along_the_presence_key(explain: Any) -> None:
    found = scans(explain("select api.participants(%s, %s, 100)", (BIG, uid(50_000)), STAFF))
    assert_intended(found, "webinar_staff_pkey", "presence_pkey", "profiles_pkey")


def test_profiles_batch_uses_key_lookups(explain: Any) -> None:
    found = scans(
        explain("select api.profiles_batch(%s)", ([uid(n) for n in range(1, 301)],), STAFF)
    )
    assert_intended(found, "profiles_pkey")


def test_access_stats_costs_the_count_of_100000_viewers_present_and_little_more(
    plans_db: PlansDb,
) -> None:
    """The count now grows with the viewers: 12-22 ms at 100,000 present (median, here),
    where the minute sample it replaced read in under 5 ms but was up to a minute old.
    Served once per cache interval per webinar however many admins poll. Timed against
    that count on its own, interleaved (the machine's load weighs on both alike): the
    rest of the call (staff check, minute samples, counters) adds about a millisecond; a
    helper called per row, or a plan gone wrong, would add as much again as the count."""
    count = (
        "select count(*) from eventlive.presence where webinar_id = %s"
        " and last_seen_at > now() - interval '180 seconds'"
    )
    with psycopg.connect(plans_db.dsn) as conn, psycopg.connect(plans_db.admin_dsn) as alone:
        durations: list[float] = []
        counts: list[float] = []
        for _ in range(30):
            started = time.perf_counter()
            alone.execute(count, (BIG,)).fetchone()
            counts.append(time.perf_counter() - started)
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"sub": str(STAFF), "role": "authenticated"}),),
                )
                started = time.perf_counter()
                stats = conn.execute("select api.access_stats(%s)", (BIG,)).fetchone()
                durations.append(time.perf_counter() - started)
    assert stats is not None
    assert stats[0]["registrations"] == VIEWERS
    assert stats[0]["current_participants"] == VIEWERS  # all seen within the last 2 minutes
    assert len(stats[0]["timeline"]) == 180
    # medians of 30 calls each, measured from the client (round trip included)
    assert statistics.median(durations) < 1.5 * statistics.median(counts) + 0.005, (
        statistics.median(durations),
        statistics.median(counts),
    )
