"""``python -m bench.entry_cost`` runs end to end on a throwaway server of its own and
prints, per round, both trees' CPU per entry, then the ratio of their means."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # two migrated databases: about 20 s; run with --slow (CI does)


def test_entry_cost_compares_the_two_trees_round_by_round() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.entry_cost", "--rounds", "2", "--entries", "100"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    rounds = re.findall(r"round (\d) (before|after) *: backend CPU ([\d.]+) ms/entry", out)
    assert [(n, who) for n, who, _ in rounds] == [
        ("1", "before"), ("1", "after"), ("2", "before"), ("2", "after")
    ]  # fmt: skip
    assert all(float(cpu) > 0 for _, _, cpu in rounds)
    ratio = re.search(r"after / before ([\d.]+)", out)
    assert ratio is not None
    assert float(ratio.group(1)) > 0
