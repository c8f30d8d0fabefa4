"""``shim.migrate``: what is applied when, drift, repair/baseline, failures, plan, status.

Every test gets a fresh empty database (``empty_database``) and, unless it proves
something about the project's real SQL, a small synthetic source tree.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shim.migrate import (
    ApplyError,
    DriftError,
    MigrationError,
    baseline,
    migrate,
    plan,
    repair,
    status,
)
from shim.migrate.paths import SQL_FOLDERS, sql_root
from shim.migrate.split import split_statements

BASE = {
    "sql/0001_items.sql": (
        "create schema app;\ncreate table app.items (id int primary key, name text not null);\n"
    ),
    "functions/item_count.sql": (
        "create or replace function app.item_count() returns bigint\n"
        "language sql stable\n"
        "as $$ select count(*) from app.items $$;\n"
    ),
    "policies/items.sql": (
        "alter table app.items enable row level security;\n"
        "drop policy if exists items_read on app.items;\n"
        "create policy items_read on app.items for select using (true);\n"
    ),
    "indexes/items.sql": (
        "create index concurrently if not exists items_name on app.items (name);\n"
    ),
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for folder in SQL_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", BASE)


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params or None)
        return cur.fetchall() if cur.description else []


def history(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "select kind, name, action from eventlive_migrations.history order by id")


def snapshot_of_project_sql(target: Path) -> Path:
    """A copy of the project's SQL: colleagues may edit the checkout while tests run."""
    for folder in SQL_FOLDERS:
        shutil.copytree(sql_root() / folder, target / folder)
    return target


def test_real_tree_migrates_an_empty_database_and_a_second_run_applies_nothing(
    empty_database: str, tmp_path: Path
) -> None:
    source = snapshot_of_project_sql(tmp_path / "src")
    first = migrate(empty_database, source=source)
    expected = [
        f"{folder}/{p.name}"
        for folder in SQL_FOLDERS
        for p in sorted((source / folder).glob("*.sql"))
    ]
    assert first.labels == expected  # versioned, functions, policies, indexes; by name
    assert migrate(empty_database, source=source).applied == ()
    assert status(empty_database, source=source).exit_code == 0


def test_files_apply_in_documented_order_and_history_records_each(
    empty_database: str, tree: Path
) -> None:
    write_tree(tree, {"sql/0002_more.sql": "alter table app.items add column note text;\n"})
    lines: list[str] = []
    result = migrate(empty_database, source=tree, progress=lines.append)
    assert result.labels == [
        "sql/0001_items.sql",
        "sql/0002_more.sql",
        "functions/item_count.sql",
        "policies/items.sql",
        "indexes/items.sql",
    ]
    rows = query(
        empty_database,
        """select kind, name, checksum, action, applied_at is not null, duration is not null,
                  applied_by = session_user
           from eventlive_migrations.history order by id""",
    )
    by_label = {f"{r[0]}/{r[1]}": r for r in rows}
    for applied in result.applied:
        _kind, _name, checksum, action, *flags = by_label[applied.label]
        assert (checksum, action, flags) == (applied.checksum, "apply", [True, True, True])
    # Progress names every file with its time.
    assert any("sql/0002_more.sql applied in" in line and " ms" in line for line in lines)


def test_editing_one_function_file_reapplies_only_that_file(
    empty_database: str, tree: Path
) -> None:
    migrate(empty_database, source=tree)
    (tree / "functions/item_count.sql").write_text(
        BASE["functions/item_count.sql"].replace("count(*)", "count(*) + 0")
    )
    assert status(empty_database, source=tree).exit_code == 1
    assert migrate(empty_database, source=tree).labels == ["functions/item_count.sql"]
    body = query(empty_database, "select prosrc from pg_proc where proname = 'item_count'")
    assert "count(*) + 0" in body[0][0]


def test_applying_a_versioned_file_reapplies_every_repeatable_file(
    empty_database: str, tree: Path
) -> None:
    migrate(empty_database, source=tree)
    # The new migration recreates the table: its policy and index are gone with it.
    write_tree(
        tree,
        {
            "sql/0002_recreate.sql": (
                "drop table app.items cascade;\n"
                "create table app.items (id int primary key, name text not null);\n"
            )
        },
    )
    result = migrate(empty_database, source=tree)
    assert result.labels == [
        "sql/0002_recreate.sql",
        "functions/item_count.sql",
        "policies/items.sql",
        "indexes/items.sql",
    ]
    assert query(empty_database, "select count(*) from pg_policies where tablename = 'items'")
    assert query(empty_database, "select to_regclass('app.items_name') is not null") == [(True,)]


def test_edited_versioned_file_is_drift_and_nothing_is_applied(
    empty_database: str, tree: Path
) -> None:
    migrate(empty_database, source=tree)
    before = history(empty_database)
    (tree / "sql/0001_items.sql").write_text(BASE["sql/0001_items.sql"] + "-- edited\n")
    (tree / "functions/item_count.sql").write_text(BASE["functions/item_count.sql"] + "\n")
    with pytest.raises(DriftError, match=r"sql/0001_items\.sql changed after it was applied"):
        migrate(empty_database, source=tree)
    assert history(empty_database) == before
    result = status(empty_database, source=tree)
    assert result.exit_code == 2
    assert {e.label: e.state for e in result.entries}["sql/0001_items.sql"] == "drift"
    with pytest.raises(DriftError):
        plan(empty_database, source=tree)


def test_repair_accepts_the_changed_file_and_migrate_proceeds(
    empty_database: str, tree: Path
) -> None:
    migrate(empty_database, source=tree)
    (tree / "sql/0001_items.sql").write_text(BASE["sql/0001_items.sql"] + "-- comment fixed\n")
    assert repair(empty_database, source=tree, file="0001_items.sql") == ["sql/0001_items.sql"]
    assert history(empty_database)[-1] == ("sql", "0001_items.sql", "repair")
    assert status(empty_database, source=tree).exit_code == 0
    assert migrate(empty_database, source=tree).applied == ()
    assert repair(empty_database, source=tree) == []  # nothing drifted any more


def test_baseline_records_an_existing_schema_without_running_it(
    empty_database: str, tree: Path
) -> None:
    # A database whose schema was made by hand: running 0001 again would fail.
    query(empty_database, BASE["sql/0001_items.sql"])
    assert baseline(empty_database, source=tree) == ["sql/0001_items.sql"]
    result = migrate(empty_database, source=tree)
    assert result.labels == ["functions/item_count.sql", "policies/items.sql", "indexes/items.sql"]
    with pytest.raises(DriftError, match="baseline refused"):
        baseline(empty_database, source=tree)


def test_versioned_file_missing_from_source_or_out_of_order_is_refused(
    empty_database: str, tree: Path
) -> None:
    write_tree(tree, {"sql/0005_later.sql": "select 1;\n"})
    migrate(empty_database, source=tree)
    write_tree(tree, {"sql/0003_forgotten.sql": "create table app.late (id int);\n"})
    with pytest.raises(DriftError, match=r"0003_forgotten\.sql is new but sorts before"):
        migrate(empty_database, source=tree)
    (tree / "sql/0003_forgotten.sql").unlink()
    (tree / "sql/0005_later.sql").unlink()
    with pytest.raises(DriftError, match=r"sql/0005_later\.sql was applied .* not in the source"):
        migrate(empty_database, source=tree)
    assert query(empty_database, "select to_regclass('app.late')") == [(None,)]


def test_failing_versioned_file_rolls_back_and_names_file_line_and_message(
    empty_database: str, tree: Path
) -> None:
    migrate(empty_database, source=tree)
    write_tree(
        tree,
        {
            "sql/0002_broken.sql": (
                "create table app.half (id int);\n"
                "-- the next statement fails\n"
                "alter table app.items add column price numeric not nul;\n"
            ),
            "sql/0003_after.sql": "create table app.after (id int);\n",
        },
    )
    with pytest.raises(ApplyError) as caught:
        migrate(empty_database, source=tree)
    err = caught.value
    assert (err.label, err.line, err.sqlstate) == ("sql/0002_broken.sql", 3, "42601")
    assert "syntax error" in err.pg_message
    assert "sql/0002_broken.sql, line 3, column" in str(err)
    assert query(empty_database, "select to_regclass('app.half'), to_regclass('app.after')") == [
        (None, None)
    ]
    assert ("sql", "0002_broken.sql", "apply") not in history(empty_database)


def test_function_naming_a_missing_column_fails_and_leaves_the_database_as_it_was(
    empty_database: str, tmp_path: Path
) -> None:
    source = snapshot_of_project_sql(tmp_path / "src")
    migrate(empty_database, source=source)
    snapshot = """
        select (select count(*) from eventlive_migrations.history),
               (select array_agg(p.oid::regprocedure::text order by p.oid::regprocedure::text)
                from pg_proc p where p.pronamespace in ('api'::regnamespace,
                                                        'eventlive'::regnamespace))"""
    before = query(empty_database, snapshot)
    # The incident's bug: registrations is keyed (webinar_id, user_id), it has no id.
    (source / "functions/99_incident.sql").write_text(
        "create or replace function api.registration_id(p_webinar_id bigint)\n"
        "returns bigint\n"
        "language sql stable\n"
        "as $$\n"
        "    select id from eventlive.registrations where webinar_id = p_webinar_id\n"
        "$$;\n"
    )
    with pytest.raises(ApplyError) as caught:
        migrate(empty_database, source=source)
    assert caught.value.label == "functions/99_incident.sql"
    assert caught.value.line == 5
    assert caught.value.pg_message == 'column "id" does not exist'
    assert query(empty_database, snapshot) == before
    assert query(empty_database, "select to_regprocedure('api.registration_id(bigint)')") == [
        (None,)
    ]


def test_a_file_does_not_leak_session_settings_into_the_next(
    empty_database: str, tree: Path
) -> None:
    write_tree(
        tree,
        {
            "functions/a_sloppy.sql": (
                "set check_function_bodies = off;\nset search_path = app;\n"
                "create or replace function app.a() returns int language sql as $$ select 1 $$;\n"
            ),
            "functions/b_checked.sql": (
                "create or replace function app.b() returns int language sql\n"
                "as $$ select no_such_column from app.items $$;\n"
            ),
        },
    )
    with pytest.raises(ApplyError, match=r"functions/b_checked\.sql") as caught:
        migrate(empty_database, source=tree)
    assert caught.value.pg_message == 'column "no_such_column" does not exist'


def test_plan_prints_the_sql_migrate_would_run_and_changes_nothing(
    empty_database: str, tree: Path
) -> None:
    text = plan(empty_database, source=tree).sql()
    positions = [text.index(body) for body in BASE.values()]
    assert positions == sorted(positions)  # every file verbatim, in migrate's order
    for label in BASE:
        assert f"-- ==== {label} (new) sha256 " in text
    assert "begin;\nreset role; reset all; set check_function_bodies = on;\n" in text
    assert query(empty_database, "select to_regnamespace('eventlive_migrations')") == [(None,)]
    assert query(empty_database, "select to_regnamespace('app')") == [(None,)]
    # The printed SQL runs as a script (statement by statement, as psql sends it).
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for statement in split_statements(text):
            conn.execute(statement.text.encode())
    assert query(empty_database, "select app.item_count()") == [(0,)]


def test_plan_is_empty_when_up_to_date(empty_database: str, tree: Path) -> None:
    migrate(empty_database, source=tree)
    result = plan(empty_database, source=tree)
    assert result.steps == ()
    assert "-- nothing to apply" in result.sql()


def test_status_lists_applied_pending_changed_and_removed_files(
    empty_database: str, tree: Path
) -> None:
    write_tree(tree, {"functions/old.sql": "select 1;\n"})
    assert status(empty_database, source=tree).exit_code == 1  # everything pending
    migrate(empty_database, source=tree)
    (tree / "functions/old.sql").unlink()
    (tree / "policies/items.sql").write_text(BASE["policies/items.sql"] + "-- reworded\n")
    write_tree(tree, {"sql/0002_next.sql": "select 2;\n"})
    result = status(empty_database, source=tree)
    states = {e.label: e.state for e in result.entries}
    assert states == {
        "sql/0001_items.sql": "applied",
        "sql/0002_next.sql": "pending",
        "functions/item_count.sql": "pending",  # re-applied after a versioned file
        "policies/items.sql": "changed",
        "indexes/items.sql": "pending",
        "functions/old.sql": "removed",
    }
    assert result.exit_code == 1


def test_a_file_that_commits_by_itself_is_refused_and_not_recorded(
    empty_database: str, tree: Path
) -> None:
    write_tree(tree, {"sql/0002_commits.sql": "create table app.x (id int);\ncommit;\n"})
    with pytest.raises(MigrationError, match=r"sql/0002_commits\.sql ended the transaction"):
        migrate(empty_database, source=tree)
    assert ("sql", "0002_commits.sql", "apply") not in history(empty_database)
