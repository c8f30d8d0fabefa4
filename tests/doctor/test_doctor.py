"""``eventlive doctor``: our migrated schema is clean; each broken rule is reported with its
id and a fix that works; exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from shim.cli import main
from shim.doctor import Report, check_ids, diagnose
from shim.doctor.plpgsql import PLPGSQL_CHECKS
from shim.doctor.policy_forms import unwrapped_calls, wrap_calls
from shim.doctor.splinter import SPLINTER_CHECKS
from shim.doctor.supabase_checks import SUPABASE_CHECKS
from shim.pg.ports import free_port
from shim.testing.plugin import EventliveDatabase

Pairs = set[tuple[str, str]]


# The splinter-equivalent and plpgsql checks are proved in tests/doctor/test_splinter.py and
# tests/migrate/test_plpgsql_check.py; the schemas built
# here to break our own rules trip some of them too, so these tests look at ours.
# The Supabase checks are proved on a Supabase-shaped database (tests/migrate/test_supabase.py).
OWN_IDS = set(check_ids()) - {
    i for c in SPLINTER_CHECKS + PLPGSQL_CHECKS + SUPABASE_CHECKS for i in c.ids
}


def pairs(report: Report) -> Pairs:
    return {(f.check, f.object) for f in report.findings if f.check in OWN_IDS}


# -- the policy expression parser ---------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "bare"),
    [
        ("(user_id = auth.uid())", ["auth.uid()"]),
        ("((auth.jwt() ->> 'role'::text) = 'x'::text)", ["auth.jwt()"]),
        ("(x = current_setting('a.b'::text, true))", ["current_setting('a.b'::text, true)"]),
        ("(auth.role() = 'authenticated'::text)", ["auth.role()"]),
        ("(user_id = ( SELECT auth.uid() AS uid))", []),
        ("(a IN ( SELECT f(b, auth.uid()) AS f))", []),
        ("(( SELECT (auth.jwt() ->> 'role'::text)) = 'x'::text)", []),
        # inside a subquery that scans a table: once per row of that scan
        ("(EXISTS ( SELECT 1\n   FROM s\n  WHERE (s.u = auth.uid())))", ["auth.uid()"]),
        ("(EXISTS ( SELECT 1\n   FROM s\n  WHERE (s.u = ( SELECT auth.uid() AS uid))))", []),
        # IS DISTINCT FROM and EXTRACT(... FROM ...) are not FROM clauses
        ("(( SELECT auth.uid() AS uid) IS DISTINCT FROM owner)", []),
        ("(( SELECT EXTRACT(epoch FROM now()) + length(current_setting('x'::text))) > 0)", []),
        # literals and quoted identifiers are not code
        ("((note = 'auth.uid() ('::text) AND (\"auth.uid()\" = 'it''s'::text))", []),
        ("(label = (E'\\'' || current_setting('x'::text)))", ["current_setting('x'::text)"]),
        ("(owner = myauth.uid())", []),
    ],
)
def test_the_policy_parser_flags_calls_not_run_once_per_statement(
    expression: str, bare: list[str]
) -> None:
    assert [c.text for c in unwrapped_calls(expression)] == bare


def test_the_fix_wraps_each_bare_call_in_a_select() -> None:
    assert wrap_calls("(user_id = auth.uid())") == "(user_id = (select auth.uid()))"
    assert (
        wrap_calls("(current_setting((auth.jwt() ->> 'k'::text)) = x)")
        == "((select current_setting((auth.jwt() ->> 'k'::text))) = x)"
    )
    assert wrap_calls("(a = ( SELECT auth.uid() AS uid))") == "(a = ( SELECT auth.uid() AS uid))"


# -- against real databases ---------------------------------------------------------------


def test_our_migrated_schema_has_no_findings(
    eventlive_db: EventliveDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    report = diagnose(eventlive_db.admin_dsn)
    # the migration checks ran (a server without plpgsql_check adds a note about that)
    assert [n for n in report.notes if "plpgsql_check" not in n] == []
    assert [(f.check, f.object, f.problem) for f in report.findings] == []
    assert main(["doctor", "--dsn", eventlive_db.admin_dsn]) == 0
    assert capsys.readouterr().out.endswith("-- 0 finding(s): all clear\n")


BREAK_THE_RULES = """
-- rls-disabled, and an invalid index: a unique concurrent build failed on duplicates
create table eventlive.no_rls (id int primary key, code int);
insert into eventlive.no_rls values (1, 7), (2, 7);
-- policy-bare-call, policy-to-public
create policy "Bare uid" on eventlive.presence for select to authenticated
    using (user_id = auth.uid() and current_setting('app.flag', true) is null);
create policy "Open to all" on eventlive.webinars for select using (true);
-- definer-search-path (not executable by PUBLIC), public-execute (not a definer)
create function api.definer_without_path() returns int language sql security definer
    as 'select 1';
revoke execute on function api.definer_without_path() from public;
create function api.open_to_everyone() returns int language sql stable as 'select 1';
grant execute on function api.open_to_everyone() to public;  -- api's default privileges do not
-- public-grant, anon-grant (table and column)
grant select on eventlive.profiles to public;
grant select on eventlive.webinars to anon;
grant update (title) on eventlive.webinars to anon;
-- fk-without-index; rls-owner-bypass (owned by a role requests run as)
create table eventlive.child (id int primary key, webinar_id bigint references eventlive.webinars);
alter table eventlive.child enable row level security;
alter table eventlive.child owner to authenticated;
-- migrations: drift, changed, pending, removed -- through the history table
insert into eventlive_migrations.history (kind, name, checksum, action)
    values ('sql', '0003_access_rollups.sql', repeat('0', 64), 'repair'),
           ('policies', 'webinars.sql', repeat('1', 64), 'apply'),
           ('functions', 'zz_gone.sql', repeat('2', 64), 'apply');
delete from eventlive_migrations.history where kind = 'functions' and name = '40_admin.sql';
"""

EXPECTED: Pairs = {
    ("rls-disabled", "eventlive.no_rls"),
    ("invalid-index", "index eventlive.no_rls_code_key"),
    ("policy-bare-call", 'policy "Bare uid" on eventlive.presence'),
    ("policy-to-public", 'policy "Open to all" on eventlive.webinars'),
    ("definer-search-path", "function api.definer_without_path()"),
    ("public-execute", "function api.open_to_everyone()"),
    ("public-grant", "table eventlive.profiles"),
    ("anon-grant", "table eventlive.webinars"),
    ("anon-grant", "column eventlive.webinars.title"),
    ("fk-without-index", "constraint child_webinar_id_fkey on eventlive.child"),
    ("rls-owner-bypass", "eventlive.child"),
    ("migration-drift", "sql/0003_access_rollups.sql"),
    ("migration-changed", "policies/webinars.sql"),
    ("migration-pending", "functions/40_admin.sql"),
    ("migration-removed", "functions/zz_gone.sql"),
}


def break_the_rules(admin_conn: psycopg.Connection[Any]) -> None:
    admin_conn.execute(BREAK_THE_RULES)
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin_conn.execute(
            "create unique index concurrently no_rls_code_key on eventlive.no_rls (code)"
        )


def test_a_broken_schema_reports_each_rule_broken_with_its_id_and_exits_1(
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = pairs(diagnose(eventlive_db.admin_dsn))
    break_the_rules(admin_conn)
    report = diagnose(eventlive_db.admin_dsn)
    assert pairs(report) - before == EXPECTED
    assert {check for check, _ in EXPECTED} == OWN_IDS  # every check proved
    assert all(f.problem and f.fix for f in report.findings)

    assert main(["doctor", "--dsn", eventlive_db.admin_dsn]) == 1
    out = capsys.readouterr().out
    for check, obj in EXPECTED:
        assert f"{check}  {obj}\n" in out
    assert 'fix:     alter table "eventlive"."no_rls" enable row level security;' in out

    assert main(["doctor", "--dsn", eventlive_db.admin_dsn, "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["exit_code"] == 1
    assert {
        (f["check"], f["object"]) for f in document["findings"] if f["check"] in OWN_IDS
    } - before == EXPECTED


def test_the_fix_sql_of_each_schema_finding_clears_it(
    eventlive_db: EventliveDatabase, admin_conn: psycopg.Connection[Any]
) -> None:
    before = pairs(diagnose(eventlive_db.admin_dsn))
    break_the_rules(admin_conn)
    admin_conn.execute("delete from eventlive.no_rls where id = 2")  # so the rebuild succeeds
    fixes = [
        f
        for f in diagnose(eventlive_db.admin_dsn).findings
        if (f.check, f.object) not in before
        and not f.check.startswith("migration-")
        and f.check in OWN_IDS
    ]
    for finding in fixes:
        sql, _, _comment = finding.fix.partition(";  --")
        for statement in sql.split("; "):  # invalid-index: drop, then create, concurrently
            admin_conn.execute(statement.rstrip(";"))
    remaining = pairs(diagnose(eventlive_db.admin_dsn)) - before
    assert {check for check, _ in remaining} == {
        "migration-drift",
        "migration-changed",
        "migration-pending",
        "migration-removed",
    }
    policy = admin_conn.execute(
        "select pg_get_expr(polqual, polrelid) from pg_policy where polname = 'Bare uid'"
    ).fetchone()
    assert policy is not None
    assert "( SELECT auth.uid() AS uid)" in policy[0]


def test_a_foreign_key_is_indexed_only_by_an_index_led_by_all_its_key_columns(
    eventlive_db: EventliveDatabase, admin_conn: psycopg.Connection[Any]
) -> None:
    before = pairs(diagnose(eventlive_db.admin_dsn))
    admin_conn.execute("""
        create table eventlive.led_any_order (webinar_id bigint, user_id uuid, at int,
            foreign key (webinar_id, user_id) references eventlive.registrations);
        create index on eventlive.led_any_order (user_id, webinar_id, at);
        create table eventlive.second_column (webinar_id bigint, user_id uuid,
            foreign key (webinar_id, user_id) references eventlive.registrations);
        create index on eventlive.second_column (user_id);
        create table eventlive.included_only (webinar_id bigint, user_id uuid,
            foreign key (webinar_id, user_id) references eventlive.registrations);
        create index on eventlive.included_only (webinar_id) include (user_id);
        create table eventlive.partial_only (webinar_id bigint references eventlive.webinars);
        create index on eventlive.partial_only (webinar_id) where webinar_id > 0;
        alter table eventlive.led_any_order enable row level security;
        alter table eventlive.second_column enable row level security;
        alter table eventlive.included_only enable row level security;
        alter table eventlive.partial_only enable row level security;
    """)
    found = pairs(diagnose(eventlive_db.admin_dsn)) - before
    assert found == {
        ("fk-without-index", f"constraint {name} on eventlive.{table}")
        for table, name in (
            ("second_column", "second_column_webinar_id_user_id_fkey"),
            ("included_only", "included_only_webinar_id_user_id_fkey"),
            ("partial_only", "partial_only_webinar_id_fkey"),
        )
    }


def test_a_database_without_our_history_is_checked_and_the_migration_checks_skipped(
    empty_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("create schema app")
        conn.execute("create table app.notes (id int primary key)")
        conn.execute("alter table app.notes enable row level security")
        conn.execute(
            "create policy owner_reads on app.notes for select to current_user using (true)"
        )
        # An extension's functions (executable by PUBLIC) are its maintainers' business.
        if conn.execute("select from pg_available_extensions where name = 'pgcrypto'").fetchone():
            conn.execute("create extension pgcrypto schema app")
    args = ["doctor", "--dsn", empty_database, "--schema", "app", "--api-schema", "app"]
    assert main([*args, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["findings"] == []
    assert [n for n in document["notes"] if "plpgsql_check" not in n] == [
        "no migration history (eventlive_migrations.history): migration checks skipped "
        "(a database not managed by `eventlive db migrate`)"
    ]


def test_a_schema_that_does_not_exist_is_an_error_not_a_clean_bill_exit_2(
    empty_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--dsn", empty_database]) == 2
    captured = capsys.readouterr()
    assert "schema(s) not found" in captured.err
    assert "eventlive, api" in captured.err
    assert captured.out == ""


def test_a_database_that_cannot_be_reached_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    assert main(["doctor", "--dsn", dsn]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: database:")
    assert captured.out == ""


def test_help_lists_doctor_with_its_options_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as top:
        main(["--help"])
    assert top.value.code == 0
    assert "    doctor " in capsys.readouterr().out
    with pytest.raises(SystemExit) as sub:
        main(["doctor", "--help"])
    assert sub.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dsn", "--schema", "--api-schema", "--format"):
        assert option in text
    assert "doctor: 0 no finding / 1 findings / 2 cannot check" in text
