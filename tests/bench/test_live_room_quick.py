"""Smoke test of ``python -m bench.live_room --quick``: the live-room bench runs end to end
(throwaway database, shim, subscriber processes, chat_send at 10/s, reconnect storm with
chat_since catch-up) and its figures are consistent. Nothing about how fast: the targets
are judged from a full run's report, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about a minute: run with --slow (CI does)
@pytest.mark.timeout(300)
def test_live_room_quick_run_is_complete_and_consistent(tmp_path: Path) -> None:
    """Every subscriber of every size got every seq in order; the hub's delivery reads
    never exceed the events (one read per wake-up per room, whatever the subscribers);
    the storm's rejoins were all authorized and catch-up left nothing missing."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.live_room", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["via"] == "chat_send"
    for size, r in results["sizes"].items():
        assert r["joined"] == r["subscribers"] == int(size)
        assert r["complete"] == r["subscribers"]
        assert r["missing"] == 0
        assert r["out_of_order"] == 0
        assert r["events"] == r["sent"]
        assert 0 < r["delivery_reads"] <= r["events"]
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    storm = results["storm"]
    assert storm["failed"] == 0
    assert storm["joins_refused"] == 0
    assert storm["missing_after_catch_up"] == 0
    assert "## Live room" in (tmp_path / "report.md").read_text()
