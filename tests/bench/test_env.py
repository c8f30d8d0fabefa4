"""The bench's world without a database: its fast token minting is PyJWT's, byte for byte,
and its viewer ranges cannot overlap (two scenarios sharing viewers would share their
rows and their cached tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jwt
import pytest

from bench.env import SECRET, CpuMeter, Ranges, mint, mint_many, uid


def test_mint_many_gives_pyjwts_tokens() -> None:
    """Every token of a batch equals PyJWT's for the same claims, and verifies."""
    lo, n, exp, iat = 599_990, 20, 1_900_000_000, 1_800_000_000
    fast = list(mint_many(lo, n, exp, iat))
    assert fast == [mint(i, exp, iat) for i in range(lo, lo + n)]
    claims = jwt.decode(fast[3], SECRET, algorithms=["HS256"], audience="authenticated",
                        options={"verify_exp": False, "verify_iat": False})  # fmt: skip
    assert claims == {
        "sub": uid(lo + 3), "role": "authenticated", "aud": "authenticated",
        "iat": iat, "exp": exp,
    }  # fmt: skip


def test_viewer_ranges_may_not_overlap() -> None:
    """A steady-state pool that would reach into the admins' range is refused."""
    Ranges(ceiling=40_000, storm=35_000, steady=600_000, iso_q=2_000, iso_s=20_000)
    with pytest.raises(ValueError, match="overlaps"):
        Ranges(ceiling=10, storm=10, steady=1_000_001)


def test_cpu_meter_finds_the_saturated_seconds_an_average_hides() -> None:
    """Busy children on every core for 3 s, then 2 s idle: the seconds they saturated are
    counted, and in them the live children (named as the load generator) held the cores."""
    cores = len(os.sched_getaffinity(0))
    spin = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3: pass\n"
    with CpuMeter({}, None) as meter:
        children = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cores)]
        for child in children:
            child.wait()
        time.sleep(2)
    sat = meter.saturation
    assert sat["window_s"] >= 5
    assert 2 <= sat["seconds"] < sat["window_s"]
    assert sat["cores"].get("load generator", 0) >= 0.5 * cores
    # The whole run's average: the reaped children, over all of it.
    assert meter.split["load generator"] < 0.85 * cores
