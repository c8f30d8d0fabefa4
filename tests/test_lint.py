"""Lint is part of the test command: ruff, mypy --strict, sqlfluff, squawk.

Each tool runs as a subprocess from this environment with the repository's own config
(pyproject.toml, .sqlfluff, .squawk.toml); a failure shows the tool's output.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SQL_DIRS = ("sql", "functions", "policies", "indexes")


def _tool(name: str) -> str:
    """The tool installed next to this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _sql_files(*dirs: str) -> list[str]:
    return [str(p.relative_to(REPO)) for d in dirs for p in sorted((REPO / d).glob("*.sql"))]


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}", pytrace=False
        )


def test_ruff_check_passes() -> None:
    _run(_tool("ruff"), "check", "--no-cache", ".")


def test_ruff_format_leaves_nothing_to_change() -> None:
    _run(_tool("ruff"), "format", "--check", "--no-cache", ".")


@pytest.mark.timeout(600)  # a cold mypy run on two shared cores
def test_mypy_strict_passes_on_shim() -> None:
    _run(_tool("mypy"), "--strict", "shim")


@pytest.mark.timeout(300)
def test_sqlfluff_lint_passes_on_all_sql() -> None:
    _run(_tool("sqlfluff"), "lint", "--disable-progress-bar", *_sql_files(*SQL_DIRS))


def test_sqlfluff_never_skips_large_files() -> None:
    from sqlfluff.core import FluffConfig

    config = FluffConfig.from_path(str(REPO))
    assert config.get("large_file_skip_byte_limit") == 0
    assert config.get("dialect") == "postgres"
    assert config.get("templater") == "raw"


def test_squawk_passes_on_migrations() -> None:
    files = _sql_files("sql")
    assert files, "no migrations found"
    _run(_tool("squawk"), "--reporter", "gcc", *files)


def test_squawk_passes_on_indexes_run_outside_transactions() -> None:
    files = _sql_files("indexes")
    assert files, "no index files found"
    import tomllib

    # require-lock-timeout: migrate sets lock_timeout itself before every index file
    # (shim.migrate.apply.INDEX_LOCK_TIMEOUT), so the files need not each repeat it.
    # (--exclude replaces the config's list, so that list is passed along.)
    excluded = tomllib.loads((REPO / ".squawk.toml").read_text())["excluded_rules"]
    rules = ",".join([*excluded, "require-lock-timeout"])
    _run(
        _tool("squawk"),
        "--reporter",
        "gcc",
        "--no-assume-in-transaction",
        "--exclude",
        rules,
        *files,
    )


def test_import_contract_is_kept() -> None:
    """``lint-imports`` with the contracts in pyproject.toml: the parts import one way."""
    _run(_tool("lint-imports"), "--no-cache")


def test_import_contract_names_every_sub_package() -> None:
    """A new sub-package must take its place in the layers, or the contract says nothing
    about it."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = {
        part.strip()
        for contract in config["contracts"]
        if contract["type"] == "layers"
        for layer in contract["layers"]
        for part in layer.split("|")
    }
    packages = {f"shim.{p.parent.name}" for p in (REPO / "shim").glob("*/__init__.py")}
    modules = {f"shim.{p.stem}" for p in (REPO / "shim").glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= layered, sorted((packages | modules) - layered)


# Beyond this a module should be two, unless its docstring says why it is not.
MAX_MODULE_LINES = 450


def test_modules_are_small_or_say_why() -> None:
    long = []
    for path in sorted((REPO / "shim").rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES and "Long on purpose" not in "\n".join(lines[:40]):
            long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
    assert not long, long


def test_every_sub_package_says_what_it_is() -> None:
    for init in sorted((REPO / "shim").glob("*/__init__.py")):
        text = init.read_text().lstrip()
        assert text.startswith('"""'), f"{init.relative_to(REPO)} has no docstring"
