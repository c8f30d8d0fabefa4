"""The profile's areas (``bench/scenarios/profile.py``) name modules that exist, so a
renamed module cannot silently fall into "shim request handling" again (it did after the
layout change: JWT and exchange samples were counted as request handling); a sample goes
to the area of its innermost matching frame."""

from __future__ import annotations

from pathlib import Path

from bench.scenarios.profile import AREAS, summarize

REPO = Path(__file__).resolve().parents[2]


def test_every_shim_module_an_area_names_exists() -> None:
    named = [m for marks in AREAS.values() for m in marks if m.startswith("shim/")]
    assert named
    for mark in named:
        assert mark == "shim/" or (REPO / mark).is_file(), mark


def test_a_sample_counts_for_its_innermost_matching_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (uvicorn/server.py:1);__call__ (shim/http/lean.py:9);identify (shim/http/auth.py:3) 3\n"
        "run (uvicorn/server.py:1);__call__ (shim/http/lean.py:9);_pipeline (shim/http/exchange.py:5) 5\n"
        "run (uvicorn/server.py:1);__call__ (shim/http/lean.py:9) 2\n"
    )
    areas = summarize(raw)["areas"]
    assert areas == {
        "database exchange (shim.http.exchange, coalesce; libpq calls, psycopg, psycopg_pool)": 0.5,
        "JWT verification (shim.http.auth, PyJWT, hmac)": 0.3,
        "shim request handling (shim.http.lean, pipeline, database, respond, ...)": 0.2,
    }
