"""Where migrate finds the SQL: ``--source``, the wheel's package data, the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import shim.migrate.paths
from shim.migrate.paths import SQL_FOLDERS, SourceNotFoundError, sql_root

REPO = Path(__file__).resolve().parents[2]


def make_root(path: Path) -> Path:
    for folder in SQL_FOLDERS:
        (path / folder).mkdir(parents=True)
    return path


def test_explicit_source_must_hold_the_four_folders(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    with pytest.raises(SourceNotFoundError, match="missing functions, policies, indexes/"):
        sql_root(tmp_path)
    assert sql_root(make_root(tmp_path / "ok")) == (tmp_path / "ok").resolve()


def test_source_checkout_resolves_to_the_repository_root() -> None:
    assert sql_root() == REPO


def test_package_data_wins_over_the_directory_around_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_root(tmp_path) / "shim"
    make_root(package / "_sql")
    monkeypatch.setattr(shim.migrate.paths, "_PACKAGE_DIR", package)
    assert sql_root() == package / "_sql"


def test_wheel_ships_the_sql_and_migrates_from_any_directory(
    tmp_path: Path, empty_database: str
) -> None:
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (the backend)")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, project / name)
    (project / "README.md").touch()  # hatchling needs one; the lead's may not exist yet
    for name in ("shim", *SQL_FOLDERS):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path / "dist")],
        cwd=project,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(installed)
    for folder in SQL_FOLDERS:
        for path in (REPO / folder).glob("*.sql"):
            assert f"shim/_sql/{folder}/{path.name}" in names

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "shim.cli", "db", "migrate", "--dsn", empty_database],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sql/0001_supabase_compat.sql applied" in done.stdout
    status = subprocess.run(
        [sys.executable, "-m", "shim.cli", "db", "status", "--dsn", empty_database],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"(source {installed / 'shim' / '_sql'})" in status.stdout
