"""``/metrics`` for verify and /status: errors by function, status, SQLSTATE and reason
with bounded labels (a client cannot grow them), token cache hits and misses, the process
start time, and per-window series that count only the recent past."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from shim_support import NO_HUB, ShimDb, bearer, settings_for, token, uvicorn_server

from shim.http import metrics
from shim.serve.app import create_app

REPO = Path(__file__).resolve().parents[2]


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    ]


def test_every_reason_our_functions_raise_is_a_known_label() -> None:
    """A reason missing from ``metrics.REASONS`` would be counted as ``other``."""
    raised = set()
    for path in (REPO / "functions").glob("*.sql"):
        raised |= set(re.findall(r"detail\s*=\s*'([a-z_]+)'", path.read_text()))
    assert raised, "no reasons found: the pattern is stale"
    assert raised <= metrics.REASONS, sorted(raised - metrics.REASONS)


def test_every_reason_the_shim_gives_is_a_known_label() -> None:
    """The shim's own reasons: ``details=`` of its errors, 503 and rejected-token reasons."""
    given = set()
    for path in (REPO / "shim" / "http").glob("*.py"):
        text = path.read_text()
        given |= set(re.findall(r'details="([a-z_]+)"', text))
        given |= set(re.findall(r'rejected\(\s*"([a-z_]+)"', text))
        given |= set(re.findall(r'bad_request\(\s*"[^"]+",\s*[^,]+,\s*"([a-z_]+)"', text))
        given |= set(re.findall(r'unavailable\([^)]*"([a-z_]+)",?\s*\)', text, re.S))
    assert len(given) > 20, sorted(given)
    assert given <= metrics.REASONS, sorted(given - metrics.REASONS)


def test_errors_are_counted_by_function_status_sqlstate_and_reason_with_bounded_labels(
    shim_db: ShimDb,
) -> None:
    """A function's own error keeps its reason; an internal error is ``internal``; an
    unknown SQLSTATE is ``other``; an unknown function name never becomes a label."""
    app = create_app(settings_for(shim_db.dsn), NO_HUB)
    auth = bearer(token())
    with uvicorn_server(app) as base, httpx.Client(base_url=base, headers=auth) as c:
        assert (
            c.post(
                "/rpc/fail", json={"code": "PT409", "msg": "m", "det": "session_superseded"}
            ).status_code
            == 409
        )
        assert (
            c.post(
                "/rpc/fail", json={"code": "PT400", "msg": "m", "det": "made_up_reason_x"}
            ).status_code
            == 400
        )
        assert c.post("/rpc/fail", json={"code": "2F004", "msg": "m"}).status_code == 400
        assert c.post("/rpc/internal_bug", json={}).status_code == 500
        for i in range(20):
            assert c.post(f"/rpc/no_such_fn_{i}", json={}).status_code == 404
        assert (
            c.post(
                "/rpc/echo", json={"a": 1}, headers={"Authorization": "Bearer x.y.z"}
            ).status_code
            == 401
        )
        text = c.get("/metrics").text
    got = {
        (lb["function"], lb["status"], lb["sqlstate"], lb["reason"]): v
        for lb, v in samples(text, "eventlive_errors_total")
    }
    assert got == {
        ("test_api.fail", "409", "PT409", "session_superseded"): 1,
        ("test_api.fail", "400", "PT400", "other"): 1,
        ("test_api.fail", "400", "other", "internal"): 1,
        ("test_api.internal_bug", "500", "XX000", "internal"): 1,
        ("", "404", "PGRST202", "unknown_function"): 20,
        ("", "401", "PGRST301", "malformed"): 1,
    }
    five = {
        (lb["function"], lb["sqlstate"]): v
        for lb, v in samples(text, "eventlive_window_errors")
        if lb["window"] == "5m"
    }
    assert five[("", "PGRST202")] == 20
    start = samples(text, "eventlive_process_start_time_seconds")
    assert len(start) == 1
    assert start[0][1] > 1.7e9


def test_token_cache_hits_and_misses_are_counted(shim_db: ShimDb) -> None:
    """One token used four times: one miss (verified), three hits."""
    app = create_app(settings_for(shim_db.dsn), NO_HUB)
    with uvicorn_server(app) as base, httpx.Client(base_url=base, headers=bearer(token())) as c:
        for _ in range(4):
            assert c.post("/rpc/whoami", json={}).status_code == 200
        text = c.get("/metrics").text
    cache = {lb["result"]: v for lb, v in samples(text, "eventlive_token_cache_total")}
    assert cache == {"hit": 3, "miss": 1}
    assert samples(text, "eventlive_jwks_fetches_total") == [({}, 0)]


def test_a_window_counts_only_its_recent_slots() -> None:
    """Counts older than the window drop out of it; older than an hour they are gone."""
    now = [1_000_000.0]
    recent = metrics.Recent(clock=lambda: now[0])
    recent.add(("f",))
    now[0] += 120
    recent.add(("f",))
    recent.add(("g",))
    assert recent.totals(60) == {("f",): 1, ("g",): 1}
    assert recent.totals(300) == {("f",): 2, ("g",): 1}
    now[0] += 3600
    recent.add(("h",))
    assert recent.totals(3600) == {("h",): 1}
