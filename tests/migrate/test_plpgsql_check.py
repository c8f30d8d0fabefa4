"""plpgsql bodies checked at deploy time (``shim.migrate.plpgsql_bodies``): with ``plpgsql_check``
on the server, a plpgsql function naming a missing column -- the incident's
``select id from registrations`` -- fails ``eventlive db migrate`` with the function, the
line and the message, and leaves the database as it was; ``eventlive doctor`` reports
the same as a finding. Without the extension (the PostgreSQL 18 wheel) migrate says once
that the bodies were not checked, and the tests that need it skip, saying why.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shim.doctor import diagnose
from shim.migrate import ApplyError, migrate, plan, plpgsql_bodies
from shim.migrate.paths import SQL_FOLDERS, sql_root
from shim.testing.plugin import EventliveDatabase

# The incident's bug, in the language the hot path is written in: registrations is keyed
# (webinar_id, user_id), it has no id. Line 8 of the file is the select.
INCIDENT = """\
create or replace function api.registration_id(p_webinar_id bigint)
returns bigint
language plpgsql stable
as $$
declare
    v_id bigint;
begin
    select id into v_id from eventlive.registrations where webinar_id = p_webinar_id;
    return v_id;
end
$$;
"""


def _available(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select from pg_available_extensions where name = 'plpgsql_check'"
        ).fetchone()
    return row is not None


def _needs_plpgsql_check(dsn: str) -> None:
    if not _available(dsn):
        pytest.skip(
            "plpgsql_check is not installed on this PostgreSQL server (the PostgreSQL 18 "
            "wheel has none; Debian: postgresql-15-plpgsql-check, installed by .ci/run as root)"
        )


def _project_sql(target: Path) -> Path:
    for folder in SQL_FOLDERS:
        shutil.copytree(sql_root() / folder, target / folder)
    return target


def _query(dsn: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(text.encode()).fetchall()


SNAPSHOT = """
select (select count(*) from eventlive_migrations.history),
       (select array_agg(p.oid::regprocedure::text || md5(p.prosrc)
                         order by p.oid::regprocedure::text)
        from pg_proc p where p.pronamespace in ('api'::regnamespace, 'eventlive'::regnamespace))
"""


def test_a_plpgsql_function_naming_a_missing_column_fails_the_migration_and_changes_nothing(
    empty_database: str, tmp_path: Path
) -> None:
    """The planted ``select id from eventlive.registrations`` in a plpgsql function
    (which check_function_bodies lets through): migrate refuses the file naming the
    function, the line in the file and plpgsql_check's message; the functions and the
    history are exactly as before, and the function does not exist."""
    _needs_plpgsql_check(empty_database)
    source = _project_sql(tmp_path / "src")
    migrate(empty_database, source=source)
    before = _query(empty_database, SNAPSHOT)
    (source / "functions/99_incident.sql").write_text(INCIDENT)
    lines: list[str] = []
    with pytest.raises(ApplyError) as caught:
        migrate(empty_database, source=source, progress=lines.append)
    error = caught.value
    assert error.label == "functions/99_incident.sql"
    assert error.line == 8
    assert "api.registration_id(bigint)" in error.pg_message
    assert 'column "id" does not exist' in error.pg_message
    assert "select id into v_id" in str(error)
    assert error.exit_code == 1
    assert _query(empty_database, SNAPSHOT) == before
    assert _query(empty_database, "select to_regprocedure('api.registration_id(bigint)')") == [
        (None,)
    ]
    assert not any("not checked" in line for line in lines)


def test_replacing_a_good_function_with_a_broken_body_keeps_the_good_one(
    empty_database: str, tmp_path: Path
) -> None:
    """``create or replace`` of an existing hot-path function with a body naming a
    missing table is refused too, and the deployed body stays the working one."""
    _needs_plpgsql_check(empty_database)
    source = _project_sql(tmp_path / "src")
    migrate(empty_database, source=source)
    before = _query(empty_database, SNAPSHOT)
    path = source / "functions/31_presence.sql"
    path.write_text(
        path.read_text().replace(
            "from eventlive.registrations as r", "from eventlive.registration as r", 1
        )
    )
    with pytest.raises(ApplyError) as caught:
        migrate(empty_database, source=source)
    assert caught.value.label == "functions/31_presence.sql"
    # The heartbeat's logic (shared by the single and the batched ping) names it.
    assert "eventlive.ping_core(" in caught.value.pg_message
    assert 'relation "eventlive.registration" does not exist' in caught.value.pg_message
    assert caught.value.line is not None
    # the line of the statement whose subquery names the missing table
    statement = "\n".join(path.read_text().splitlines()[caught.value.line - 1 :]).split(";")[0]
    assert "eventlive.registration as r" in statement
    assert _query(empty_database, SNAPSHOT) == before


def test_our_own_plpgsql_functions_pass_the_check(empty_database: str, tmp_path: Path) -> None:
    """The project's SQL migrates with the check on (it ran for every file), and the
    extension sits in schema extensions, not public."""
    _needs_plpgsql_check(empty_database)
    lines: list[str] = []
    migrate(empty_database, source=_project_sql(tmp_path / "src"), progress=lines.append)
    assert not any("not checked" in line for line in lines)
    assert _query(
        empty_database,
        "select n.nspname from pg_extension x join pg_namespace n on n.oid = x.extnamespace"
        " where x.extname = 'plpgsql_check'",
    ) == [("extensions",)]


def test_doctor_reports_a_broken_plpgsql_body_as_a_finding(
    eventlive_db: EventliveDatabase, admin_conn: psycopg.Connection[Any]
) -> None:
    """A broken body that got in by other means (no migrate) -> ``plpgsql-check`` with the
    function and the message; the migrated schema itself has none."""
    _needs_plpgsql_check(eventlive_db.admin_dsn)
    assert [
        f for f in diagnose(eventlive_db.admin_dsn).findings if f.check == "plpgsql-check"
    ] == []
    admin_conn.execute(INCIDENT)
    found = [
        (f.object, f.problem)
        for f in diagnose(eventlive_db.admin_dsn).findings
        if f.check == "plpgsql-check"
    ]
    assert len(found) == 1
    assert found[0][0] == "function api.registration_id(bigint)"
    assert 'column "id" does not exist' in found[0][1]


def test_without_the_extension_migrate_says_once_that_bodies_were_not_checked(
    empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without plpgsql_check (simulated here by the name migrate looks for;
    real on the PostgreSQL 18 wheel): the migration runs, and says so exactly once."""
    monkeypatch.setattr(plpgsql_bodies, "EXTENSION", "plpgsql_check_not_on_this_server")
    lines: list[str] = []
    migrate(empty_database, source=_project_sql(tmp_path / "src"), progress=lines.append)
    assert [line for line in lines if "not checked" in line] == [plpgsql_bodies.NOT_CHECKED]


def test_plan_shows_the_create_extension_that_migrate_would_run(empty_database: str) -> None:
    """``db plan`` prints everything migrate would run, plpgsql_check's extension first."""
    _needs_plpgsql_check(empty_database)
    printed = plan(empty_database).sql()
    assert 'create extension if not exists "plpgsql_check" with schema "extensions";' in printed
    assert printed.index("create extension") < printed.index("sql/0001_supabase_compat.sql (new)")
    migrate(empty_database)
    assert "create extension" not in plan(empty_database).sql()  # installed: nothing to say
