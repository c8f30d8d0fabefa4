"""Supabase's database linter (splinter) as ``eventlive doctor`` checks
(``shim.doctor_splinter``): our migrated schema has no finding under any of them; each
lint, broken on purpose in a throwaway clone, is reported with its id and object, and
the fix SQL it prints clears it where the fix is a statement (not a choice to make).

The five helpers splinter flagged (``function_search_path_mutable``) now pin
``search_path``; that costs their inlining, so
``test_no_statement_of_the_api_filters_rows_through_a_helper`` proves no statement calls
one per row (and tests/sql/test_plans.py that every hot-path statement keeps its index).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shim.doctor import diagnose
from shim.doctor.checks import Scope, run_checks
from shim.doctor.splinter import SPLINTER_CHECKS
from shim.testing import create_user
from shim.testing.plugin import EventliveDatabase

HELPERS = (
    "eventlive.now()",
    "eventlive.entry_open(text,timestamp with time zone,timestamp with time zone)",
    "eventlive.is_service_role()",
    "eventlive.presence_window(integer)",
    "eventlive.ping_throttle(integer)",
)


def _pairs(dsn: str) -> set[tuple[str, str]]:
    return {(f.check, f.object) for f in diagnose(dsn).findings}


def test_our_migrated_schema_is_clean_under_every_splinter_equivalent_check(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """0 findings from the splinter checks on the migrated schema (and doctor as a whole
    is clean: tests/doctor/test_doctor.py)."""
    admin_conn.execute("set search_path = ''")
    findings = run_checks(admin_conn, Scope(("eventlive",), ("api",)), SPLINTER_CHECKS)
    assert [(f.check, f.object) for f in findings] == []


def test_the_helpers_splinter_flagged_pin_search_path(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """function_search_path_mutable: the five helpers now run with ``search_path = ''``."""
    rows = admin_conn.execute(
        "select p.oid::regprocedure::text, p.proconfig from pg_proc as p"
        " where p.oid = any(%s::regprocedure[])",
        (list(HELPERS),),
    ).fetchall()
    assert len(rows) == len(HELPERS)
    assert {sig: config for sig, config in rows if config != ['search_path=""']} == {}


HELPER_CALL = re.compile(
    r"eventlive\.(?:now|entry_open|is_service_role|presence_window|ping_throttle)\("
)
CONDITIONS = ("Filter", "Index Cond", "Recheck Cond", "Join Filter", "Hash Cond", "One-Time Filter")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _helper_conditions(notices: list[str]) -> list[str]:
    """Conditions of auto_explain'd plans that call a helper (evaluated per row)."""
    found = []
    for text in notices:
        if "plan:" not in text:
            continue
        doc = json.loads(text.split("plan:", 1)[1])
        doc = doc[0] if isinstance(doc, list) else doc
        for node in _nodes(doc["Plan"]):
            found += [node[k] for k in CONDITIONS if k in node and HELPER_CALL.search(node[k])]
    return found


def test_no_statement_of_the_api_filters_rows_through_a_helper(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """The plan test for pinning the helpers' search_path: a helper with settings is not
    inlined, and in a generic plan (what plpgsql settles on) a call in a condition runs
    once per row -- the control below shows it. So the functions compute each helper
    once into a variable: no plan of any statement they run (auto_explain, nested
    statements, generic plans) calls a helper in a condition, on the heartbeat, the
    minute sample, entry, access_stats and participants."""
    notices: list[str] = []
    admin_conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    for setting in (
        "load 'auto_explain'",
        "set auto_explain.log_min_duration = 0",
        "set auto_explain.log_nested_statements = on",
        "set auto_explain.log_format = json",
        "set auto_explain.log_level = notice",
        "set plan_cache_mode = force_generic_plan",
    ):
        admin_conn.execute(setting)
    # the control: a helper in a condition stays a per-row call in a generic plan
    admin_conn.execute(
        "prepare per_row(integer) as select count(*) from eventlive.presence as p"
        " where p.last_seen_at > pg_catalog.now() - eventlive.presence_window($1)"
    )
    notices.clear()
    admin_conn.execute("execute per_row(120)")
    assert _helper_conditions(notices), notices

    user = str(create_user(admin_conn))
    admin_conn.execute("select api.upsert_webinar(7001, 'Plans', 'live', 'auto')")

    def as_role(role: str, statement: str, params: tuple[Any, ...]) -> Any:
        with admin_conn.transaction():
            admin_conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps({"role": role, "sub": user})),
            )
            row = admin_conn.execute(statement, params).fetchone()
            admin_conn.execute("reset role")
        return row[0] if row else None

    notices.clear()
    entered = as_role("authenticated", "select api.track_access(7001)", ())
    admin_conn.execute(
        "update eventlive.presence set last_seen_at = last_seen_at - interval '10 minutes'"
    )
    admin_conn.execute("update eventlive.webinars set sampled_minute = null")
    as_role("authenticated", "select api.presence_ping(7001, %s)", (entered["session_id"],))
    as_role("service_role", "select api.access_stats(7001)", ())
    as_role("service_role", "select api.participants(7001)", ())
    queries = [n for n in notices if "plan:" in n]
    assert any("insert into eventlive.presence_minutes" in q for q in queries)  # sampled
    assert any("update eventlive.presence" in q for q in queries)  # the heartbeat wrote
    assert _helper_conditions(notices) == []


# (finding id, SQL that breaks the lint, the finding's object, whether the fix clears it)
BROKEN = [
    (
        "function-search-path",
        "create function api.mutable_path() returns int language sql stable as 'select 1';"
        " revoke execute on function api.mutable_path() from public",
        "function api.mutable_path()",
        True,
    ),
    (
        "no-primary-key",
        "create table eventlive.keyless (a int); alter table eventlive.keyless enable row"
        " level security; create policy p on eventlive.keyless for select to authenticated"
        " using (false)",
        "eventlive.keyless",
        False,
    ),
    (
        "multiple-permissive-policies",
        'create policy "Second read" on eventlive.webinars for select to authenticated'
        " using (false)",
        "eventlive.webinars for authenticated select",
        False,
    ),
    (
        "rls-no-policy",
        "create table eventlive.policyless (id int primary key);"
        " alter table eventlive.policyless enable row level security",
        "eventlive.policyless",
        False,
    ),
    (
        "duplicate-index",
        "create index presence_copy_a on eventlive.presence (last_seen_at);"
        " create index presence_copy_b on eventlive.presence (last_seen_at)",
        "index eventlive.presence_copy_a on eventlive.presence",
        True,
    ),
    (
        "security-definer-view",
        "create view api.titles as select id, title from eventlive.webinars",
        "view api.titles",
        True,
    ),
    (
        "materialized-view-in-api",
        "create materialized view api.stats as select count(*) as n from eventlive.webinars",
        "materialized view api.stats",
        True,
    ),
    (
        "foreign-table-in-api",
        "create foreign data wrapper holes_fdw; create server holes_srv foreign data wrapper"
        " holes_fdw; create foreign table api.remote (id int) server holes_srv",
        "foreign table api.remote",
        True,
    ),
    (
        "auth-users-exposed",
        "create view api.emails with (security_invoker = on) as select id, email from auth.users",
        "view api.emails",
        True,
    ),
    (
        "extension-in-public",
        "create extension pg_trgm schema public",
        "extension pg_trgm",
        True,
    ),
    (
        "policy-user-metadata",
        'create policy "By metadata" on eventlive.webinars as restrictive for select'
        " to authenticated using ((select auth.jwt() -> 'user_metadata' ->> 'vip') = 'yes')",
        'policy "By metadata" on eventlive.webinars',
        True,
    ),
    (
        "policy-always-true",
        'create policy "Anyone deletes" on eventlive.webinars for delete to authenticated'
        " using (true)",
        'policy "Anyone deletes" on eventlive.webinars',
        True,
    ),
    (
        "reg-type-column",
        "alter table eventlive.webinars add column handler regprocedure",
        "column eventlive.webinars.handler",
        True,
    ),
    (
        "fk-to-auth-unique",
        "create unique index users_email_key on auth.users (email);"
        " alter table auth.users add constraint users_email_unique unique using index"
        " users_email_key;"
        " alter table eventlive.profiles add column email text"
        " constraint profiles_email_fkey references auth.users (email);"
        " create index on eventlive.profiles (email)",
        "constraint profiles_email_fkey on eventlive.profiles",
        True,
    ),
    (
        "definer-anon-execute",
        "create function api.open_definer() returns int language sql stable security definer"
        " set search_path = '' as 'select 1'; grant execute on function api.open_definer()"
        " to anon",
        "function api.open_definer()",
        True,
    ),
]


def test_every_splinter_check_is_proved_by_a_broken_schema() -> None:
    """No check id without a case below."""
    assert {case[0] for case in BROKEN} == {i for c in SPLINTER_CHECKS for i in c.ids}


@pytest.mark.parametrize(
    ("check", "breaking", "obj", "fixable"), BROKEN, ids=[case[0] for case in BROKEN]
)
def test_a_schema_that_breaks_the_lint_is_reported_and_the_fix_clears_it(  # noqa: PLR0917 - parametrized
    eventlive_db: EventliveDatabase,
    admin_conn: psycopg.Connection[Any],
    check: str,
    breaking: str,
    obj: str,
    fixable: bool,
) -> None:
    """Broken on purpose in a throwaway clone: exactly this finding appears (nothing else
    of the splinter checks), with a problem and a fix; applying the fix clears it."""
    before = _pairs(eventlive_db.admin_dsn)
    admin_conn.execute(breaking)
    report = diagnose(eventlive_db.admin_dsn)
    new = [f for f in report.findings if (f.check, f.object) not in before]
    splinter_ids = {i for c in SPLINTER_CHECKS for i in c.ids}
    assert [(f.check, f.object) for f in new if f.check in splinter_ids] == [(check, obj)]
    finding = next(f for f in new if f.check == check)
    assert finding.problem
    assert finding.fix
    if fixable:
        statements, _, _comment = finding.fix.partition(";  --")
        for statement in statements.split("; "):
            admin_conn.execute(statement.rstrip(";"))
        assert (check, obj) not in _pairs(eventlive_db.admin_dsn)
