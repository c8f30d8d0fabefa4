"""Catalog-wide guards: they read pg_catalog, so a table, policy or function added later
is checked without anyone remembering to write a test for it."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from shim.testing import assert_rls_enabled

GUARDED_CALL = re.compile(r"auth\.uid\(\)|auth\.jwt\(\)|current_setting\(", re.IGNORECASE)


def unwrapped_calls(expression: str) -> list[str]:
    """Calls of auth.uid()/auth.jwt()/current_setting() not inside a ``(SELECT ...)``.

    Postgres deparses ``(select auth.uid())`` as ``( SELECT auth.uid() AS uid)``: walk the
    parentheses and accept a call only when an enclosing group starts with SELECT (an
    initplan, evaluated once per statement instead of once per row).
    """
    found = []
    stack: list[bool] = []  # for each open parenthesis: does its group start with SELECT?
    i = 0
    while i < len(expression):
        ch = expression[i]
        if ch == "(":
            stack.append(bool(re.match(r"\(\s*select\b", expression[i:], re.IGNORECASE)))
        elif ch == ")":
            if stack:
                stack.pop()
        else:
            match = GUARDED_CALL.match(expression, i)
            if match:
                if not any(stack):
                    found.append(match.group(0))
                i = match.end() - 1  # continue at the call's own "(" so nesting stays right
        i += 1
    return found


def test_the_policy_checker_flags_bare_calls_and_accepts_select_wrapped_ones() -> None:
    assert unwrapped_calls("(user_id = auth.uid())") == ["auth.uid()"]
    assert unwrapped_calls("((auth.jwt() ->> 'role') = 'x')") == ["auth.jwt()"]
    assert unwrapped_calls("(x = current_setting('a'))") == ["current_setting("]
    assert unwrapped_calls("(user_id = ( SELECT auth.uid() AS uid))") == []
    assert unwrapped_calls("(a IN ( SELECT f(b, auth.uid()) ))") == []


def test_every_eventlive_table_has_row_level_security(admin_conn: psycopg.Connection[Any]) -> None:
    assert_rls_enabled(admin_conn, "eventlive")


def test_every_eventlive_table_has_at_least_one_policy(admin_conn: psycopg.Connection[Any]) -> None:
    rows = admin_conn.execute(
        """
        select c.relname from pg_class as c
        where c.relnamespace = 'eventlive'::regnamespace and c.relkind in ('r', 'p')
            and not exists (select from pg_policy as p where p.polrelid = c.oid)
        """
    ).fetchall()
    assert rows == []


def test_no_policy_calls_auth_or_settings_outside_a_select(
    admin_conn: psycopg.Connection[Any],
) -> None:
    rows = admin_conn.execute(
        "select schemaname, tablename, policyname, coalesce(qual, ''), coalesce(with_check, '')"
        " from pg_policies where schemaname in ('eventlive', 'realtime')"
    ).fetchall()
    assert rows, "no policies found"
    bad = [
        (schema, table, name, calls)
        for schema, table, name, qual, check in rows
        if (calls := unwrapped_calls(qual) + unwrapped_calls(check))
    ]
    assert bad == []


def test_the_policy_guard_catches_a_bare_auth_uid_in_a_real_policy(
    admin_conn: psycopg.Connection[Any],
) -> None:
    admin_conn.execute(
        "create policy bare on eventlive.presence for select to authenticated using (user_id = auth.uid())"
    )
    qual = admin_conn.execute("select qual from pg_policies where policyname = 'bare'").fetchone()
    assert qual is not None
    assert unwrapped_calls(qual[0]) == ["auth.uid()"]


def test_every_policy_names_its_roles(admin_conn: psycopg.Connection[Any]) -> None:
    rows = admin_conn.execute(
        "select tablename, policyname from pg_policies"
        " where schemaname = 'eventlive' and roles = '{public}'"
    ).fetchall()
    assert rows == []


def test_every_security_definer_function_pins_an_empty_search_path(
    admin_conn: psycopg.Connection[Any],
) -> None:
    rows = admin_conn.execute(
        """
        select p.oid::regprocedure::text, p.proconfig
        from pg_proc as p
        where p.prosecdef
            and p.pronamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
            and not coalesce(p.proconfig @> array['search_path=""'], false)
        """
    ).fetchall()
    assert rows == []
    definers = admin_conn.execute(
        "select count(*) from pg_proc where prosecdef and pronamespace = 'api'::regnamespace"
    ).fetchone()
    assert definers is not None
    assert definers[0] >= 10


def test_anon_holds_no_privilege_on_any_eventlive_table_or_column(
    admin_conn: psycopg.Connection[Any],
) -> None:
    tables = admin_conn.execute(
        """
        select c.oid::regclass::text, priv
        from pg_class as c
        cross join unnest(array['select', 'insert', 'update', 'delete', 'truncate', 'references', 'trigger']) as priv
        where c.relnamespace = 'eventlive'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
            and has_table_privilege('anon', c.oid, priv)
        """
    ).fetchall()
    columns = admin_conn.execute(
        "select table_name, column_name, privilege_type from information_schema.column_privileges"
        " where table_schema = 'eventlive' and grantee = 'anon'"
    ).fetchall()
    usage = admin_conn.execute(
        "select has_schema_privilege('anon', 'eventlive', 'usage')"
    ).fetchone()
    assert (tables, columns, usage) == ([], [], (False,))


def test_no_api_function_is_executable_by_public(admin_conn: psycopg.Connection[Any]) -> None:
    rows = admin_conn.execute(
        """
        select p.oid::regprocedure::text
        from pg_proc as p
        where p.pronamespace = 'api'::regnamespace
            and (p.proacl is null  -- null = default privileges = PUBLIC may execute
                 or exists (select from aclexplode(p.proacl) as a where a.grantee = 0))
        """
    ).fetchall()
    count = admin_conn.execute(
        "select count(*) from pg_proc where pronamespace = 'api'::regnamespace"
    ).fetchone()
    assert rows == []
    assert count is not None
    assert count[0] >= 10


@pytest.mark.parametrize(
    ("function", "roles"),
    [
        ("api.track_access(bigint, uuid, jsonb)", {"authenticated"}),
        ("api.presence_ping(bigint, uuid)", {"authenticated"}),
        ("api.presence_leave(bigint, uuid)", {"authenticated"}),
        ("api.access_stats(bigint)", {"authenticated", "service_role"}),
        ("api.participants(bigint, uuid, integer)", {"authenticated", "service_role"}),
        ("api.profiles_batch(uuid[])", {"authenticated", "service_role"}),
        ("api.register(bigint, uuid)", {"authenticated", "service_role"}),
        (
            "api.upsert_webinar(bigint, text, text, text, timestamptz, timestamptz, integer, integer)",
            {"service_role"},
        ),
        ("api.set_staff(bigint, uuid, text)", {"service_role"}),
        ("api.remove_staff(bigint, uuid)", {"service_role"}),
        ("api.chat_send(bigint, text, uuid)", {"authenticated"}),
        ("api.chat_since(bigint, bigint, integer)", {"authenticated", "service_role"}),
        ("api.chat_moderate(bigint, text)", {"authenticated", "service_role"}),
        ("api.chat_ban(bigint, uuid, integer)", {"authenticated", "service_role"}),
        ("api.chat_unban(bigint, uuid)", {"authenticated", "service_role"}),
        (
            "api.room_settings(bigint, boolean, boolean, integer, boolean, integer)",
            {"authenticated", "service_role"},
        ),
        ("api.question_ask(bigint, text, uuid, boolean)", {"authenticated"}),
        ("api.question_vote(bigint, boolean)", {"authenticated"}),
        ("api.questions(bigint, bigint, integer)", {"authenticated", "service_role"}),
        ("api.question_answer(bigint, text, text)", {"authenticated", "service_role"}),
    ],
)
def test_each_api_function_is_executable_by_exactly_the_roles_that_need_it(
    admin_conn: psycopg.Connection[Any], function: str, roles: set[str]
) -> None:
    granted = {
        role
        for role in ("anon", "authenticated", "service_role", "authenticator")
        if admin_conn.execute(
            "select has_function_privilege(%s, %s::regprocedure, 'execute')", (role, function)
        ).fetchone()
        == (True,)
    }
    # authenticator is noinherit: it can only execute after switching role
    assert granted == roles


def test_every_api_function_has_a_comment_for_the_openapi_document(
    admin_conn: psycopg.Connection[Any],
) -> None:
    rows = admin_conn.execute(
        "select p.oid::regprocedure::text from pg_proc as p where p.pronamespace = 'api'::regnamespace"
        " and coalesce(obj_description(p.oid, 'pg_proc'), '') = ''"
    ).fetchall()
    assert rows == []
