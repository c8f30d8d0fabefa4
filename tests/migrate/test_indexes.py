"""``indexes/`` files: run outside a transaction, and invalid or missing indexes rebuilt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from shim.migrate import ApplyError, migrate, plan, status
from shim.migrate.paths import SQL_FOLDERS

TABLE = "create schema app;\ncreate table app.seats (webinar_id int not null, seat int not null);\n"
INDEX = (
    "-- one seat per webinar\n"
    "create unique index concurrently if not exists seats_unique\n"
    "    on app.seats (webinar_id, seat);\n"
    "create index concurrently if not exists seats_seat on app.seats (seat);\n"
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in SQL_FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "sql/0001_seats.sql").write_text(TABLE)
    (tmp_path / "indexes/seats.sql").write_text(INDEX)
    return tmp_path


def run(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


VALIDITY = """
    select c.relname, i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid
    where c.relname like 'seats%' order by 1"""


def test_index_file_runs_concurrent_builds_outside_a_transaction(
    empty_database: str, tree: Path
) -> None:
    assert migrate(empty_database, source=tree).labels == [
        "sql/0001_seats.sql",
        "indexes/seats.sql",
    ]
    assert run(empty_database, VALIDITY) == [("seats_seat", True), ("seats_unique", True)]


def test_invalid_index_from_a_failed_concurrent_build_is_dropped_and_rebuilt(
    empty_database: str, tree: Path
) -> None:
    migrate(empty_database, source=tree)
    # Someone rebuilds the index by hand on duplicate data: the concurrent build fails and
    # leaves an INVALID index that `if not exists` would otherwise skip forever.
    run(empty_database, "drop index app.seats_unique")
    run(empty_database, "insert into app.seats values (1, 7), (1, 7)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        run(
            empty_database,
            "create unique index concurrently seats_unique on app.seats (webinar_id, seat)",
        )
    assert run(empty_database, VALIDITY) == [("seats_seat", True), ("seats_unique", False)]

    entries = {e.label: e for e in status(empty_database, source=tree).entries}
    assert entries["indexes/seats.sql"].state == "pending"
    assert entries["indexes/seats.sql"].detail == "invalid index app.seats_unique"
    assert (
        'drop index concurrently if exists "app"."seats_unique";'
        in plan(empty_database, source=tree).sql()
    )

    # Data still duplicate: the rebuild fails again, naming the file and line.
    with pytest.raises(ApplyError) as caught:
        migrate(empty_database, source=tree)
    assert (caught.value.label, caught.value.line, caught.value.sqlstate) == (
        "indexes/seats.sql",
        2,
        "23505",
    )

    run(empty_database, "delete from app.seats")
    lines: list[str] = []
    assert migrate(empty_database, source=tree, progress=lines.append).labels == [
        "indexes/seats.sql"
    ]
    assert any("dropping invalid index app.seats_unique" in line for line in lines)
    assert run(empty_database, VALIDITY) == [("seats_seat", True), ("seats_unique", True)]
    assert status(empty_database, source=tree).exit_code == 0


def test_index_dropped_by_hand_is_recreated(empty_database: str, tree: Path) -> None:
    migrate(empty_database, source=tree)
    run(empty_database, "drop index app.seats_seat")
    entries = {e.label: e for e in status(empty_database, source=tree).entries}
    assert entries["indexes/seats.sql"].detail == "missing index app.seats_seat"
    assert migrate(empty_database, source=tree).labels == ["indexes/seats.sql"]
    assert run(empty_database, VALIDITY) == [("seats_seat", True), ("seats_unique", True)]
