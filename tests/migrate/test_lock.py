"""Two migrations against one database: the advisory lock, and the index-build trap.

Migrations run as separate ``eventlive`` processes (``python -m shim.cli``), as two DBAs
or two deploys would. The waits below poll the database for a condition with a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shim.cli import main
from shim.migrate import LockTimeoutError, migrate
from shim.migrate.lock import LOCK_KEY
from shim.migrate.paths import SQL_FOLDERS, sql_root

REPO = Path(__file__).resolve().parents[2]

# An index whose build takes ~2 s: each row's key costs 20 ms of pg_sleep.
SLOW_TABLE = """
create schema app;
create table app.big (id int not null);
insert into app.big select g from generate_series(1, 100) g;
create function app.slow(v int) returns int
language plpgsql immutable
as $$ begin perform pg_catalog.pg_sleep(0.02); return v; end $$;
"""
SLOW_INDEX = "create index concurrently if not exists big_slow on app.big (app.slow(id));\n"


def eventlive(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "shim.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def scalar(dsn: str, sql: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
        return row[0] if row else None


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def duplicates(dsn: str) -> int:
    return int(
        scalar(
            dsn,
            """select count(*) from (select from eventlive_migrations.history
               group by kind, name, checksum having count(*) > 1) d""",
        )
    )


def test_concurrent_index_build_completes_while_a_second_migrate_waits(
    empty_database: str, tmp_path: Path
) -> None:
    for folder in SQL_FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "sql/0001_big.sql").write_text(SLOW_TABLE)
    (tmp_path / "indexes/big.sql").write_text(SLOW_INDEX)
    args = ("db", "migrate", "--dsn", empty_database, "--source", str(tmp_path))

    first = eventlive(*args)
    building = """select count(*) from pg_stat_progress_create_index
                   where datname = current_database() and command = 'CREATE INDEX CONCURRENTLY'"""
    wait_for(lambda: scalar(empty_database, building) == 1, "the first migrate's index build")

    second = eventlive(*args, "--lock-timeout", "30")
    sessions = """select count(*) from pg_stat_activity
                  where datname = current_database() and application_name = 'eventlive migrate'"""
    wait_for(lambda: scalar(empty_database, sessions) == 2, "the second migrate to connect")
    # The second one is polling for the lock while the build is still running ...
    assert scalar(empty_database, building) == 1

    # ... and neither blocks the other: the build completes, then the second finds nothing.
    code, output = finish(first)
    assert code == 0, output
    assert "indexes/big.sql applied in" in output
    code, output = finish(second)
    assert code == 0, output
    assert "waiting up to 30 s for the migration lock, held by pid" in output
    assert "nothing to apply" in output

    assert scalar(
        empty_database,
        "select indisvalid from pg_index where indexrelid = 'app.big_slow'::regclass",
    )
    assert duplicates(empty_database) == 0


def test_two_migrates_started_together_apply_each_file_once(
    empty_database: str, tmp_path: Path
) -> None:
    for folder in SQL_FOLDERS:  # a snapshot of the project's SQL, safe from concurrent edits
        shutil.copytree(sql_root() / folder, tmp_path / folder)
    args = ("db", "migrate", "--dsn", empty_database, "--source", str(tmp_path))
    procs = [eventlive(*args) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    appliers = [out for _, out in results if "sql/0001_supabase_compat.sql applied" in out]
    assert len(appliers) == 1, results
    assert duplicates(empty_database) == 0
    files = int(scalar(empty_database, "select count(*) from eventlive_migrations.history"))
    assert files == len(migrate(empty_database, source=tmp_path).applied) + files  # nothing left


@pytest.fixture
def lock_holder(empty_database: str) -> Any:
    """A session holding the migration lock, as a running migrate would."""
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        yield conn


def test_migrate_gives_up_after_lock_timeout_naming_the_holder_and_applies_nothing(
    empty_database: str, lock_holder: psycopg.Connection[Any]
) -> None:
    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as caught:
        migrate(empty_database, lock_timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    message = str(caught.value)
    assert f"held by pid {lock_holder.info.backend_pid}" in message
    assert "gave up after 0.3 s" in message
    assert "Nothing was applied" in message
    assert scalar(empty_database, "select to_regnamespace('eventlive_migrations')") is None


def test_cli_exits_3_on_lock_timeout(
    empty_database: str, lock_holder: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "migrate", "--dsn", empty_database, "--lock-timeout", "0.1"]) == 3
    assert "another migration is running" in capsys.readouterr().err


def test_migrate_through_a_transaction_pooler_is_refused_at_once(
    empty_database: str, eventlive_pgbouncer: Any
) -> None:
    """The session lock cannot be held through PgBouncer in transaction mode: exit 2 at
    once (not a hang, not a lock held for nobody), saying what to connect to instead;
    nothing applied. The same database directly migrates."""
    pooled = eventlive_pgbouncer.dsn(empty_database)
    started = time.monotonic()
    code, err = finish(eventlive("db", "migrate", "--dsn", pooled, "--lock-timeout", "60"))
    assert time.monotonic() - started < 20
    assert code == 2, err
    assert "transaction-mode pooler" in err
    assert "directly or through a session-mode pooler" in err
    assert "Nothing was applied" in err
    with psycopg.connect(empty_database) as conn:
        row = conn.execute("select to_regnamespace('eventlive_migrations')").fetchone()
        assert row == (None,)
        held = conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and objid = %s",
            (LOCK_KEY & 0xFFFFFFFF,),
        ).fetchone()
        assert held == (0,)
    assert main(["db", "migrate", "--dsn", empty_database]) == 0
