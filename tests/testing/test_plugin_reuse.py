"""The kit on an existing server (EVENTLIVE_TEST_DSN) and in someone else's project.

Each test runs pytest in a subprocess, so it proves what a tester's run sees: the report
header, repeated and concurrent runs on one server, nothing left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import psycopg
import pytest

from shim.testing.plugin import EventliveServer

REPO = Path(__file__).resolve().parents[2]
SELECTION = ["tests/testing/test_plugin.py", "-k", "invisible or applies_rls or anon_is_denied"]
PLUGIN_VIA_ENTRY_POINT = any(
    ep.value == "shim.testing.plugin" for ep in entry_points(group="pytest11")
)


def _pytest(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=100)
    assert proc.returncode == 0, out
    return out


def _leftovers(server: EventliveServer) -> list[str]:
    """Databases made by test runs other than this session's."""
    with psycopg.connect(server.admin_dsn()) as conn:
        rows = conn.execute(
            "select datname from pg_database where datname like 'eventlive\\_%%'"
            " and datname not like %s order by 1",
            (f"%{server.run_id}%",),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def env_on_session_server(eventlive_server: EventliveServer) -> dict[str, str]:
    env = dict(os.environ, EVENTLIVE_TEST_DSN=eventlive_server.admin_dsn())
    env.pop("PYTEST_ADDOPTS", None)
    return env


def test_suite_run_twice_against_one_server_passes_both_times(
    eventlive_server: EventliveServer, env_on_session_server: dict[str, str]
) -> None:
    for _run in range(2):
        out = _finish(_pytest(SELECTION, cwd=REPO, env=env_on_session_server))
        assert "4 passed" in out
        assert f"eventlive: PostgreSQL {_version(eventlive_server)} at " in out  # report header
        assert "clones, mean" in out  # per-test clone time in the summary
    assert _leftovers(eventlive_server) == []


def test_concurrent_runs_against_one_server_do_not_collide(
    eventlive_server: EventliveServer, env_on_session_server: dict[str, str]
) -> None:
    procs = [_pytest(SELECTION, cwd=REPO, env=env_on_session_server) for _ in range(2)]
    outs = [_finish(p) for p in procs]
    assert all("4 passed" in out for out in outs)
    assert _leftovers(eventlive_server) == []


def test_kit_works_in_another_project_on_its_own_throwaway_server(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(
        textwrap.dedent(
            """
            from shim.testing import act_as, assert_rls_enabled, create_user

            def test_fixtures_and_helpers(db, admin_conn, eventlive_server):
                uid = create_user(admin_conn, email="tester@example.com")
                with act_as(db, uid):
                    row = db.execute("select auth.uid(), current_user").fetchone()
                assert row == (uid, "authenticated")
                assert_rls_enabled(admin_conn, "eventlive")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("EVENTLIVE_TEST_DSN", "PYTEST_ADDOPTS")}
    args = ["-W", "error"]
    if not PLUGIN_VIA_ENTRY_POINT:  # a checkout that was not pip-installed
        env["PYTHONPATH"] = str(REPO)
        args += ["-p", "shim.testing.plugin"]
    out = _finish(_pytest([*args, "test_mine.py"], cwd=tmp_path, env=env))
    assert "1 passed" in out
    assert "eventlive: throwaway PostgreSQL" in out


def _version(server: EventliveServer) -> str:
    with psycopg.connect(server.admin_dsn()) as conn:
        return conn.info.parameter_status("server_version") or "?"


def test_plugin_imports_without_the_test_extra() -> None:
    """The pytest11 entry point loads the plugin wherever eventlive-rpc is installed, so
    it must import without pytest-postgresql (which only the [test] extra brings)."""
    blocked = (
        "import sys; sys.modules['pytest_postgresql'] = None\n"
        "import shim.testing.plugin, shim.testing\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocked],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def _testers_guide_example() -> str:
    """The Python block of the testers' guide (docs/testing.md), as a tester would paste it."""
    section = (REPO / "docs" / "testing.md").read_text()
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_testers_guide_example_passes_as_written(
    tmp_path: Path, env_on_session_server: dict[str, str]
) -> None:
    (tmp_path / "test_readme_example.py").write_text(_testers_guide_example())
    env = dict(env_on_session_server)
    args = ["-W", "error"]
    if not PLUGIN_VIA_ENTRY_POINT:  # a checkout that was not pip-installed
        env["PYTHONPATH"] = str(REPO)
        args += ["-p", "shim.testing.plugin"]
    out = _finish(_pytest([*args, "test_readme_example.py"], cwd=tmp_path, env=env))
    assert "2 passed" in out
