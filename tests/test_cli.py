"""The ``eventlive`` command: help, exit codes, output streams, where the DSN comes from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from shim import cli
from shim.cli import main
from shim.migrate.paths import SQL_FOLDERS
from shim.migrate.plpgsql_bodies import NOT_CHECKED
from shim.pg.ports import free_port
from shim.serve import devtoken

REPO = Path(__file__).resolve().parent.parent
FUNCTION = "create or replace function app.one() returns int language sql as $$ select 1 $$;\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in SQL_FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "sql/0001_app.sql").write_text("create schema app;\n")
    (tmp_path / "functions/one.sql").write_text(FUNCTION)
    return tmp_path


def db(command: str, dsn: str, source: Path, *extra: str) -> list[str]:
    return ["db", command, "--dsn", dsn, "--source", str(source), *extra]


def test_help_names_every_command() -> None:
    top = subprocess.run(
        [sys.executable, "-m", "shim.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "serve" in top
    assert "db" in top
    sub = subprocess.run(
        [sys.executable, "-m", "shim.cli", "db", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("up", "down", "migrate", "status", "plan", "repair", "baseline"):
        assert f"    {command} " in sub
    assert "db status: 0 up to date / 1 pending / 2 drift or error" in sub
    assert "db migrate: 0 done / 1 a file failed (rolled back) / 2 drift or error" in sub


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: eventlive" in capsys.readouterr().err


def test_status_exits_1_when_pending_0_when_up_to_date_2_on_drift(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(db("status", empty_database, tree)) == 1
    assert "pending  sql/0001_app.sql" in capsys.readouterr().out
    assert main(db("migrate", empty_database, tree)) == 0
    assert main(db("status", empty_database, tree)) == 0
    out = capsys.readouterr().out
    assert "applied  functions/one.sql" in out
    assert "-- 2 applied" in out
    (tree / "functions/one.sql").write_text(FUNCTION.replace("select 1", "select 1 + 0"))
    assert main(db("status", empty_database, tree)) == 1
    assert "changed  functions/one.sql" in capsys.readouterr().out
    (tree / "sql/0001_app.sql").write_text("create schema app; -- edited\n")
    assert main(db("status", empty_database, tree)) == 2
    captured = capsys.readouterr()
    assert "drift    sql/0001_app.sql" in captured.out
    assert "error: sql/0001_app.sql changed after it was applied" in captured.err


def test_migrate_prints_progress_file_by_file_with_timings(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(db("migrate", empty_database, tree)) == 0
    # Without plpgsql_check on the server (the PostgreSQL 18 wheel) migrate says so once.
    out = [x for x in capsys.readouterr().out.splitlines() if x != NOT_CHECKED]
    assert out[0].startswith("migrating database ")
    assert out[0].endswith(f" from {tree}")
    assert out[1] == "[1/2] sql/0001_app.sql (new) ..."
    assert out[2].startswith("[1/2] sql/0001_app.sql applied in ")
    assert out[4].startswith("[2/2] functions/one.sql applied in ")
    assert out[-1].startswith("2 file(s) applied in ")
    assert main(db("migrate", empty_database, tree)) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "nothing to apply: the database is up to date"
    ]


def test_migrate_exits_2_on_drift_and_1_on_a_failing_file(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(db("migrate", empty_database, tree)) == 0
    (tree / "sql/0001_app.sql").write_text("create schema app; -- edited\n")
    assert main(db("migrate", empty_database, tree)) == 2
    assert "refusing to migrate, nothing was applied" in capsys.readouterr().err
    assert main(db("repair", empty_database, tree, "--file", "sql/0001_app.sql")) == 0
    (tree / "sql/0002_bad.sql").write_text("select 1;\nselect nope from app.missing;\n")
    assert main(db("migrate", empty_database, tree)) == 1
    err = capsys.readouterr().err
    assert "migration failed in sql/0002_bad.sql, line 2, column 18: 42P01" in err
    assert 'relation "app.missing" does not exist' in err


def test_plan_prints_sql_on_stdout_and_runs_nothing(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(db("plan", empty_database, tree)) == 0
    out = capsys.readouterr().out
    assert out.startswith("-- eventlive db plan: 2 file(s) to apply")
    assert FUNCTION in out
    assert main(db("status", empty_database, tree)) == 1  # still all pending


def test_dsn_comes_from_database_url_without_dsn_flag(
    empty_database: str, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database)
    assert main(["db", "migrate", "--source", str(tree)]) == 0
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("select app.one()").fetchone() == (1,)


def test_baseline_and_repair_commands(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("create schema app")
    assert main(db("baseline", empty_database, tree)) == 0
    assert "sql/0001_app.sql: baselined (not run)" in capsys.readouterr().out
    assert main(db("baseline", empty_database, tree)) == 2
    assert main(db("repair", empty_database, tree)) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert main(db("repair", empty_database, tree, "--file", "nope.sql")) == 2


def test_unreachable_database_and_bad_source_exit_2(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2"
    assert main(db("status", dead, tree)) == 2
    assert "error: database:" in capsys.readouterr().err
    assert main(["db", "plan", "--dsn", dead, "--source", str(tmp_path / "nowhere")]) == 2
    assert "is not an eventlive SQL source" in capsys.readouterr().err


def test_console_script_entry_point_runs_main(empty_database: str, tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shim.cli; sys.exit(shim.cli.main())",
            *db("status", empty_database, tree),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr


# -- eventlive token ----------------------------------------------------------------------

DEV = "development-secret-of-this-test-project-0123456789"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory as `eventlive serve` leaves it: .eventlive/dev-jwt-secret."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / ".eventlive").mkdir()
    (tmp_path / ".eventlive" / "dev-jwt-secret").write_text(DEV + "\n")
    return tmp_path


def _minted(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, object], str]:
    import jwt

    assert main(["token", *args]) == 0
    out, err = capsys.readouterr()
    claims = jwt.decode(out.strip(), DEV, algorithms=["HS256"], options={"verify_aud": False})
    return claims, err


def test_token_mints_from_the_development_secret_with_sensible_defaults(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shim.serve import demo

    claims, err = _minted(capsys)
    assert claims["role"] == "authenticated"
    assert claims["aud"] == "authenticated"
    assert claims["sub"] == demo.DEMO_VIEWER  # registered to the demo webinar by serve
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == 7 * 86400
    assert f"development secret {project / '.eventlive' / 'dev-jwt-secret'}" in err
    claims, _ = _minted(capsys, "--role", "service_role", "--exp", "12h")
    assert set(claims) == {"role", "iat", "exp"}  # shaped like Supabase's keys
    assert (claims["role"], int(str(claims["exp"])) - int(str(claims["iat"]))) == (
        "service_role",
        43200,
    )
    someone = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    claims, err = _minted(capsys, "--role", "anon", "--sub", someone, "--exp", "90")
    assert (claims["role"], claims["sub"]) == ("anon", someone)
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == 90
    assert f"anon token for sub {someone}, valid until " in err


def test_token_accepts_jwt_secret_set_to_the_development_secret(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", DEV)  # e.g. the environment serve sets for its workers
    assert _minted(capsys)[0]["role"] == "authenticated"


def test_token_refuses_unless_the_configured_secret_is_the_development_one(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "a-deployment-secret-that-is-not-the-dev-one")
    assert main(["token"]) == devtoken.REFUSED == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: refused: JWT_SECRET is set and is not the development secret" in err
    monkeypatch.delenv("JWT_SECRET")
    monkeypatch.setenv("DATABASE_URL", "postgresql://authenticator@db.example/app")
    assert main(["token", "--role", "service_role"]) == 2
    assert "DATABASE_URL is set and JWT_SECRET is not" in capsys.readouterr().err
    monkeypatch.delenv("DATABASE_URL")
    (project / ".eventlive" / "dev-jwt-secret").unlink()
    assert main(["token"]) == 2
    assert "no development secret at " in capsys.readouterr().err
    assert not (project / ".eventlive" / "dev-jwt-secret").exists()  # not created here


@pytest.mark.parametrize(
    "args", [["--sub", "not-a-uuid"], ["--exp", "0"], ["--exp", "3 weeks"], ["--role", "admin"]]
)
def test_token_rejects_bad_arguments_with_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", *args])
    assert exited.value.code == 2
    assert "usage: eventlive token" in capsys.readouterr().err


def test_token_is_a_command_with_its_exit_codes_in_its_help() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "shim.cli", "token", "--help"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"token: {cli.EXIT_CODES['token']}" in helped
    assert "--role {authenticated,service_role,anon}" in helped
    assert "    token " in subprocess.run(
        [sys.executable, "-m", "shim.cli", "--help"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


# -- db status names its database; migrate says the bodies were checked; db down says ---


def test_status_names_the_database_it_talks_to(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(db("status", empty_database, tree)) == 1
    first = capsys.readouterr().out.splitlines()[0]
    with psycopg.connect(empty_database) as conn:
        info = conn.info
        expected = (
            f"status of database {info.dbname} on {info.host}:{info.port} as {info.user} "
            "(PostgreSQL "
        )
    assert first.startswith(expected), first


def test_migrate_says_whether_plpgsql_bodies_were_checked(
    empty_database: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exactly one of the two lines: checked (plpgsql_check on the server, as .ci/run
    installs it) or not checked (e.g. the PostgreSQL 18 wheel)."""
    from shim.migrate.apply import CHECKED

    with psycopg.connect(empty_database) as conn:
        available = (
            conn.execute(
                "select from pg_available_extensions where name = 'plpgsql_check'"
            ).fetchone()
            is not None
        )
    (tree / "functions/two.sql").write_text(
        "create or replace function app.two() returns int language plpgsql"
        " as $$ begin return 2; end $$;\n"
    )
    assert main(db("migrate", empty_database, tree)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out.count(CHECKED) == (1 if available else 0)
    assert out.count(NOT_CHECKED) == (0 if available else 1)
    if available:
        assert out.index(CHECKED) == len(out) - 2  # after the files, before the total


def test_db_down_says_there_is_nothing_to_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["db", "down"]) == 0
    where = tmp_path / ".eventlive" / "pgdata"
    assert capsys.readouterr().out == f"no embedded PostgreSQL in {where}: nothing to stop\n"
