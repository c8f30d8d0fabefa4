"""The bench's world without a database: its fast token minting is PyJWT's, byte for byte,
and its viewer ranges cannot overlap (two scenarios sharing viewers would share their
rows and their cached tokens)."""

from __future__ import annotations

import jwt
import pytest

from bench.env import SECRET, Ranges, mint, mint_many, uid


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
