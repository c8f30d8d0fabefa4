"""The README's promise: ``eventlive serve`` with no DATABASE_URL, then ``eventlive
verify`` with no arguments in the same directory, checks that deployment and exits 0
(the embedded database, the development secret, http://127.0.0.1:8000 by default; here
on a free port)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from shim.testing.process import ShimProcess

UNSET = {"DATABASE_URL": "", "JWT_SECRET": "", "EVENTLIVE_ACCESS_LOG": "0"}


def test_verify_against_the_embedded_default_passes(tmp_path: Path) -> None:
    """Serve on the embedded default, verify it: exit 0, every flow step OK or n/a."""
    project = tmp_path / "proj"
    project.mkdir()
    project.chmod(0o755)
    shim = ShimProcess(UNSET, cwd=project)
    env = {**os.environ, **UNSET}
    try:
        shim.start(timeout=120)
        run = subprocess.run(
            [sys.executable, "-m", "shim.cli", "verify", "--url", shim.base, "--format", "json"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert [c["status"] for c in report["checks"]] == ["OK"] * 5
        steps = report["flows"]["steps"]
        assert {s["status"] for s in steps} <= {"OK", "n/a"}
        assert sum(s["status"] == "OK" for s in steps) >= 5
        assert report["flows"]["removed"] is True
    finally:
        shim.close()
        subprocess.run(
            [sys.executable, "-m", "shim.cli", "db", "down"],
            cwd=project, env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        state = project / ".eventlive" / "pgdata.state.json"
        if state.exists():  # moved under /tmp when the server user cannot reach tmp_path
            real = Path(json.loads(state.read_text())["data_dir"])
            if not real.is_relative_to(project):
                shutil.rmtree(real.parent, ignore_errors=True)
