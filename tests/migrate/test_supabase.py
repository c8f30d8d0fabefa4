"""Migrations on a Supabase-shaped database (``shim.supabase``), as its non-superuser
``postgres``: Supabase's ``auth`` and ``realtime`` objects stay exactly as Supabase made
them, on a project created today and on an older one; the earlier texts of 0001/0004
damaged an older project, doctor finds that, and a database that applied them upgrades."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from shim import migrate as mig
from shim.doctor import diagnose
from shim.migrate.paths import SQL_FOLDERS, sql_root
from shim.migrate.split import split_statements
from shim.supabase.shape import snapshot
from shim.testing.plugin import SupabaseProject

EARLIER = Path(__file__).parent / "earlier"
REPO = Path(__file__).resolve().parents[2]


def _snapshot(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return snapshot(conn)


def _copy_source(root: Path) -> Path:
    for folder in SQL_FOLDERS:
        shutil.copytree(sql_root() / folder, root / folder)
    return root


def _earlier_source(tmp_path: Path) -> Path:
    """The versioned files from before the one that records the stand-ins (0010), with
    0001 and 0004 as they shipped before. Without the repeatable files: this build's may
    need what a later versioned file creates (0011's counter deltas), and the upgrade
    re-applies every repeatable file anyway."""
    root = tmp_path / "earlier"
    shutil.copytree(sql_root() / "sql", root / "sql")
    for folder in SQL_FOLDERS:
        (root / folder).mkdir(exist_ok=True)
    for name in ("0001_supabase_compat.sql", "0004_live_room.sql"):
        shutil.copy(EARLIER / name, root / "sql" / name)
    for later in (root / "sql").glob("*.sql"):
        if later.name >= "0010":
            later.unlink()
    return root


def _eventlive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shim.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
    )


def test_migrate_on_a_supabase_project_created_today_exits_0_and_changes_nothing_of_supabase(
    supabase_project: SupabaseProject,
) -> None:
    before = _snapshot(supabase_project.admin_dsn)
    first = _eventlive("db", "migrate", "--dsn", supabase_project.migrator_dsn)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _snapshot(supabase_project.admin_dsn) == before
    again = mig.migrate(supabase_project.migrator_dsn)
    assert again.applied == ()
    assert _snapshot(supabase_project.admin_dsn) == before
    with psycopg.connect(supabase_project.admin_dsn) as conn:
        recorded = conn.execute("select count(*) from eventlive_migrations.objects").fetchone()
        owner = conn.execute(
            "select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'eventlive'"
        ).fetchone()
    assert recorded == (0,), "nothing of auth or realtime was created, so none is recorded"
    assert owner == ("postgres",)
    report = diagnose(supabase_project.migrator_dsn)
    assert report.findings == (), report.text()


def test_an_older_project_whose_postgres_still_holds_the_old_grants_keeps_supabase_objects(
    supabase_project: SupabaseProject,
) -> None:
    supabase_project.older()
    before = _snapshot(supabase_project.admin_dsn)
    mig.migrate(supabase_project.migrator_dsn)
    assert _snapshot(supabase_project.admin_dsn) == before


def test_plan_status_repair_and_baseline_work_as_the_non_superuser_postgres(
    supabase_project: SupabaseProject, tmp_path: Path
) -> None:
    dsn = supabase_project.migrator_dsn
    planned = mig.plan(dsn)
    assert planned.steps
    assert "sql/0001_supabase_compat.sql" in planned.sql()
    assert mig.status(dsn).exit_code == 1
    mig.migrate(dsn)
    assert mig.status(dsn).exit_code == 0
    assert mig.repair(dsn) == []
    with pytest.raises(mig.DriftError, match="baseline refused"):
        mig.baseline(dsn)


def test_baseline_then_migrate_on_a_fresh_supabase_project_as_postgres(
    supabase_project: SupabaseProject,
) -> None:
    before = _snapshot(supabase_project.admin_dsn)
    assert mig.baseline(supabase_project.migrator_dsn, up_to=1) == ["sql/0001_supabase_compat.sql"]
    result = mig.migrate(supabase_project.migrator_dsn)
    assert "sql/0002_core_tables.sql" in result.labels
    assert _snapshot(supabase_project.admin_dsn) == before


def test_the_earlier_texts_damaged_an_older_project_and_doctor_names_each_object(
    supabase_project: SupabaseProject, tmp_path: Path
) -> None:
    """What 0001/0004 did before they were revised (the issue's second row), found."""
    supabase_project.older()
    before = _snapshot(supabase_project.admin_dsn)
    mig.migrate(supabase_project.migrator_dsn, source=_earlier_source(tmp_path))
    after = _snapshot(supabase_project.admin_dsn)
    assert after != before, "the earlier texts changed Supabase's objects"
    assert "Stand-in for Supabase" in after["relation auth.users"]
    report = diagnose(supabase_project.migrator_dsn)
    found = {(f.check, f.object) for f in report.findings}
    assert ("supabase-stand-in", "realtime.messages") in found
    assert ("supabase-comment", "auth.users") in found
    assert report.exit_code == 1
    cli = _eventlive("doctor", "--dsn", supabase_project.migrator_dsn)
    assert cli.returncode == 1
    assert "realtime.messages" in cli.stdout
    assert "supabase-stand-in" in cli.stdout

    # Upgrading such a database: the revisions are recorded, 0010 adopts nothing there.
    upgraded = mig.migrate(supabase_project.migrator_dsn)
    assert "sql/0010_record_stand_ins.sql" in upgraded.labels
    assert "sql/0001_supabase_compat.sql" not in upgraded.labels
    assert mig.status(supabase_project.migrator_dsn).exit_code == 0

    # The fix SQL doctor prints restores Supabase's state (run by the objects' owner).
    fixes = {f.object: f.fix for f in report.findings if f.check.startswith("supabase-")}
    with psycopg.connect(supabase_project.admin_dsn, autocommit=True) as conn:
        for statement in split_statements(fixes["realtime.messages"]):
            conn.execute(statement.text)
        conn.execute(fixes["auth.users"].split("  --")[0])
        conn.execute("drop table realtime.messages_eventlive_copy")
        conn.execute(
            "create table realtime.messages_2026_01_01 partition of realtime.messages"
            " for values from ('2026-01-01') to ('2026-01-02')"
        )
        conn.execute("alter table realtime.messages_2026_01_01 owner to supabase_realtime_admin")
    mig.migrate(supabase_project.migrator_dsn)  # nothing due; policies stay
    remaining = list(diagnose(supabase_project.migrator_dsn).findings)
    assert not [f for f in remaining if f.check.startswith("supabase-")], remaining


def test_a_plain_database_migrated_with_the_earlier_texts_upgrades_to_the_recorded_shape(
    empty_database: str, tmp_path: Path
) -> None:
    mig.migrate(empty_database, source=_earlier_source(tmp_path))
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "insert into realtime.messages (topic, extension, payload) values ('kept', 'broadcast', '{}')"
        )
    assert mig.status(empty_database).exit_code == 1  # revisions to record, 0009 and 0010 due
    result = mig.migrate(empty_database)
    assert "sql/0010_record_stand_ins.sql" in result.labels
    assert "sql/0001_supabase_compat.sql" not in result.labels  # recorded as revised, not run
    with psycopg.connect(empty_database) as conn:
        kind = conn.execute(
            "select relkind from pg_class where oid = 'realtime.messages'::regclass"
        ).fetchone()
        kept = conn.execute("select topic from realtime.messages").fetchall()
        recorded = {r[0] for r in conn.execute("select identity from eventlive_migrations.objects")}
        actions = conn.execute(
            "select name from eventlive_migrations.history where action = 'revise' order by name"
        ).fetchall()
    assert kind == ("p",)
    assert kept == [("kept",)]
    assert {
        "auth",
        "auth.users",
        "realtime.messages",
        "realtime.send(jsonb,text,text,boolean)",
    } <= recorded
    assert actions == [("0001_supabase_compat.sql",), ("0004_live_room.sql",)]
    assert mig.migrate(empty_database).applied == ()
    assert mig.status(empty_database).exit_code == 0


def test_a_file_that_touches_a_supabase_object_fails_whole_naming_object_and_privilege(
    supabase_project: SupabaseProject, tmp_path: Path
) -> None:
    root = _copy_source(tmp_path / "src")
    (root / "sql" / "0099_touch_auth.sql").write_text(
        "create table eventlive.half_applied (id int);\n"
        "comment on table auth.users is 'mine now';\n"
    )
    with pytest.raises(mig.ApplyError) as caught:
        mig.migrate(supabase_project.migrator_dsn, source=root)
    message = str(caught.value)
    assert caught.value.label == "sql/0099_touch_auth.sql"
    assert "comment on table auth.users" in message  # the failing line names the object
    assert "lacks ownership of table users" in message  # the missing privilege
    assert "what to do:" in message
    with psycopg.connect(supabase_project.admin_dsn) as conn:
        half = conn.execute("select to_regclass('eventlive.half_applied')").fetchone()
        recorded = conn.execute(
            "select count(*) from eventlive_migrations.history where name = '0099_touch_auth.sql'"
        ).fetchone()
    assert half == (None,)
    assert recorded == (0,)


# -- the rule, read from the files --------------------------------------------------------

_FOREIGN = ("auth.", "realtime.")
_CHANGES = ("create ", "alter ", "comment ", "drop ", "truncate ", "grant ", "revoke ")


def test_every_versioned_statement_that_touches_auth_or_realtime_is_guarded_by_the_record() -> None:
    """A statement that creates, alters, comments, grants on or drops something in auth or
    realtime runs only inside a block that consults eventlive_migrations.objects (the
    record of what the project created). The earlier 0004 (a drop decided by a comment)
    and 0001 (bare ``create table if not exists`` and ``comment on``) both fail this."""
    offenders = []
    for path in sorted((sql_root() / "sql").glob("*.sql")) + sorted(EARLIER.glob("*.sql")):
        for statement in split_statements(path.read_text()):
            text = statement.text.lower()
            touches = any(
                f"{verb}" in line and any(name in line for name in _FOREIGN)
                for line in text.splitlines()
                for verb in _CHANGES
                if not line.lstrip().startswith("--")
            )
            if touches and "eventlive_migrations.objects" not in text:
                offenders.append(f"{path.parent.name}/{path.name}: {text.splitlines()[0][:70]}")
    earlier = [o for o in offenders if o.startswith("earlier/")]
    assert earlier, "the check must catch the earlier texts"
    assert [o for o in offenders if not o.startswith("earlier/")] == []
