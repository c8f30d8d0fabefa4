"""The README's first minute, for real: ``eventlive serve`` on the embedded default prints a
viewer token and a service_role token beside the host's; the viewer chats at once,
service_role opens /status; ``eventlive token`` mints working tokens from the same secret;
the README's block runs as written; when serve stops it says the database still runs, and
``eventlive db down`` says what it stopped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from shim.serve import demo
from shim.testing.process import ShimProcess

REPO = Path(__file__).resolve().parent.parent
UNSET = {"DATABASE_URL": "", "JWT_SECRET": "", "EVENTLIVE_ACCESS_LOG": "0"}
CHAT = "/rpc/chat_send"


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **UNSET, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "shim.cli", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _readme_block(marker: str) -> str:
    """The README's sh block that contains ``marker``."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if marker in b]
    return block


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_first_minute_tokens_token_command_and_stopping(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    project.chmod(0o755)
    shim = ShimProcess(UNSET, cwd=project)
    try:
        shim.start(timeout=120)
        printed = dict(re.findall(r"export (\w+)=(\S+)", shim.log.read_text()))
        assert set(printed) == {"TOKEN", "VIEWER_TOKEN", "SERVICE_TOKEN"}, shim.log_tail()
        _the_room(project, shim.base, printed)
        _the_readme_block(project, shim.base, printed)
    finally:
        assert shim.stop() == 0  # SIGTERM: a clean exit
        log = shim.log.read_text()
        down = _cli(project, "db", "down")
        again_down = _cli(project, "db", "down")
        state = project / ".eventlive" / "pgdata.state.json"
        port = data_dir = None
        if state.exists():
            saved = json.loads(state.read_text())
            port, data_dir = saved["port"], Path(saved["data_dir"])
        shim.close()
        if data_dir is not None and not data_dir.is_relative_to(project):
            shutil.rmtree(data_dir.parent, ignore_errors=True)  # relocated under /tmp
    assert (
        f"the embedded PostgreSQL is still running (port {port}, data in {data_dir}), so the "
        "next serve starts at once. Stop it with: eventlive db down"
    ) in log
    assert down.returncode == 0, down.stderr
    assert (
        down.stdout == f"stopped the embedded PostgreSQL on port {port} (data kept in {data_dir})\n"
    )
    assert again_down.stdout == (
        f"the embedded PostgreSQL (port {port}, data in {data_dir}) was not running\n"
    )


def _the_room(project: Path, base: str, printed: dict[str, str]) -> None:
    w = demo.DEMO_WEBINAR

    # the printed viewer chats at once, and is an ordinary viewer (not staff)
    viewer = _bearer(printed["VIEWER_TOKEN"])
    said = httpx.post(f"{base}{CHAT}", headers=viewer, json={"webinar_id": w, "body": "hi"})
    assert said.status_code == 200, said.text
    assert said.json()["status"] == "visible"
    stats = httpx.get(f"{base}/rest/v1/rpc/access_stats?webinar_id={w}", headers=viewer)
    assert (stats.status_code, stats.json()["details"]) == (403, "not_staff")
    # the printed service_role token opens /status; nobody else does
    assert httpx.get(f"{base}/status", headers=_bearer(printed["SERVICE_TOKEN"])).status_code == 200
    assert httpx.get(f"{base}/status").status_code == 401

    # eventlive token, in the project directory: the same secret
    minted = _cli(project, "token")
    assert minted.returncode == 0, minted.stderr
    again = httpx.post(
        f"{base}{CHAT}", headers=_bearer(minted.stdout.strip()),
        json={"webinar_id": w, "body": "again"},
    )  # fmt: skip
    assert again.status_code == 200, again.text
    service = _cli(project, "token", "--role", "service_role", "--exp", "1h").stdout.strip()
    assert httpx.get(f"{base}/status", headers=_bearer(service)).status_code == 200
    anon = _cli(project, "token", "--role", "anon").stdout.strip()
    entered = httpx.post(f"{base}/rpc/track_access", headers=_bearer(anon), json={"webinar_id": w})
    assert entered.status_code == 401  # anon may not enter: a real anon token, verified
    refused = subprocess.run(
        [sys.executable, "-m", "shim.cli", "token"],
        cwd=project, env={**os.environ, **UNSET, "PYTHONPATH": str(REPO), "JWT_SECRET": "x" * 40},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (refused.returncode, refused.stdout) == (2, "")


def _the_readme_block(project: Path, base: str, printed: dict[str, str]) -> None:
    # the README's block, as written (its port is the default 8000; ours is free)
    script = _readme_block("$VIEWER_TOKEN").replace("localhost:8000", base)
    check = (
        'echo "operator=$(curl -s -o /dev/null -w "%{http_code}" '
        + base
        + '/status -H "Authorization: Bearer $OPERATOR")"\n'
    )
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f'eventlive() {{ "{sys.executable}" -m shim.cli "$@"; }}\n{script}{check}'],
        cwd=project,
        env={**os.environ, **UNSET, **printed, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    message, end = json.JSONDecoder().raw_decode(ran.stdout)  # curl -s adds no newline
    assert message["status"] == "visible"
    assert ran.stdout[end:].splitlines() == ["200", "operator=200"]
