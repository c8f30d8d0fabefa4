"""The testers' guide (docs/testing.md) as a tester follows it: the install commands it gives
resolve to this project with its ``test`` extra, and its example of asserting a ``PTnnn``
reason passes as written, through the plugin, on the session's server. (Its first example
is run by tests/testing/test_plugin_reuse.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from shim.testing.plugin import EventliveServer

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "testing.md"
PLUGIN_VIA_ENTRY_POINT = any(
    ep.value == "shim.testing.plugin" for ep in entry_points(group="pytest11")
)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def _pip_commands() -> list[str]:
    return [
        line.split("#")[0].strip()
        for block in _blocks("sh")
        for line in block.splitlines()
        if line.startswith("pip install")
    ]


def _resolve(requirement: str, cwd: Path) -> dict[str, object]:
    """What pip would install for ``requirement``: offline, this project only."""
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
            "--no-deps", "--no-index", "--no-build-isolation", requirement,
        ],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (install,) = json.loads(done.stdout)["install"]
    return dict(install)


def test_the_guide_does_not_send_testers_to_pypi() -> None:
    commands = _pip_commands()
    assert commands, "docs/testing.md gives no pip install command"
    assert "pip install 'eventlive-rpc[test]'" not in commands  # not on PyPI


def test_install_from_a_clone_resolves_to_this_project_with_the_test_extra(
    tmp_path: Path,
) -> None:
    (clone,) = [c for c in _pip_commands() if "/path/to/eventlive-rpc" in c]
    requirement = (
        clone.removeprefix("pip install ").strip("'").replace("/path/to/eventlive-rpc", str(REPO))
    )
    install = _resolve(requirement, tmp_path)
    assert install["metadata"]["name"] == "eventlive-rpc"  # type: ignore[index]
    assert install["requested_extras"] == ["test"]


def test_install_from_git_resolves_to_this_project_with_the_test_extra(tmp_path: Path) -> None:
    """The git form, with this repository's own URL in place of the hosted one."""
    (from_git,) = [c for c in _pip_commands() if "@ git+" in c]
    requirement = re.sub(r"git\+https://\S+?\.git", f"git+file://localhost{REPO}", from_git)
    requirement = requirement.removeprefix("pip install ").strip("'")
    assert requirement.startswith("eventlive-rpc[test] @ git+file://localhost/")
    install = _resolve(requirement, tmp_path)
    assert install["metadata"]["name"] == "eventlive-rpc"  # type: ignore[index]
    assert install["requested_extras"] == ["test"]


def _ptnnn_example() -> str:
    (example,) = [b for b in _blocks("python") if "diag.sqlstate" in b]
    assert "diag.message_detail" in example
    return example


def _run_example(
    text: str, tmp_path: Path, server: EventliveServer
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_guide_ptnnn.py").write_text(text)
    env = dict(os.environ, EVENTLIVE_TEST_DSN=server.admin_dsn())
    env.pop("PYTEST_ADDOPTS", None)
    args = ["-W", "error"]
    if not PLUGIN_VIA_ENTRY_POINT:  # a checkout that was not pip-installed
        env["PYTHONPATH"] = str(REPO)
        args += ["-p", "shim.testing.plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "test_guide_ptnnn.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip


def test_the_ptnnn_example_passes_as_written(
    tmp_path: Path, eventlive_server: EventliveServer
) -> None:
    done = _run_example(_ptnnn_example(), tmp_path, eventlive_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_ptnnn_example_fails_on_another_reason(
    tmp_path: Path, eventlive_server: EventliveServer
) -> None:
    """The example can fail: expecting another reason than the one raised, it does."""
    example = _ptnnn_example()
    changed = example.replace('"not_registered"', '"webinar_closed"')
    assert changed != example
    done = _run_example(changed, tmp_path, eventlive_server)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
    assert "'not_registered' == 'webinar_closed'" in done.stdout
