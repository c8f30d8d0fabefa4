"""The status page in a real browser (chromium, headless): an anonymous visitor gets the
sign-in form and no data; an operator signs in with the service_role key and sees a live
webinar's viewer count change as viewers join, without reloading. The screenshot in the
README (docs/status.png) is this page (written when EVENTLIVE_SCREENSHOT names a path)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from browser import launch
from shim_support import NO_HUB, ShimDb, bearer, settings_for, token, uvicorn_server

from shim.serve.app import create_app

WEBINAR = 149402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch()


def setup_webinars(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            "select set_config('role', 'service_role', false),"
            " set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
        )
        conn.execute("select api.upsert_webinar(%s, 'Q4 product launch (live)')", (WEBINAR,))
        conn.execute("select api.upsert_webinar(149403, 'Partner onboarding')")


def join(client: httpx.Client, admin_dsn: str, webinar: int = WEBINAR) -> None:
    uid = str(uuid.uuid4())
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
    auth = bearer(token({"sub": uid}))
    s = client.post("/rpc/track_access", json={"webinar_id": webinar}, headers=auth).json()
    r = client.post(
        "/rpc/presence_ping",
        json={"webinar_id": webinar, "session_id": s["session_id"]},
        headers=auth,
    )
    assert r.status_code == 204, r.text


def viewers_cell(page: Any) -> str:
    return str(page.inner_text(f'tr[data-webinar="{WEBINAR}"] td.viewers'))


def test_status_page_refuses_anonymous_then_shows_viewers_changing_live(
    browser: Any, shim_db: ShimDb, tmp_path: Path
) -> None:
    """Anonymous: 401 and the sign-in form. Signed in: the viewer count goes 1 → 3 as two
    viewers join, swapped in by the page's script (no reload)."""
    setup_webinars(shim_db.admin_dsn)
    app = create_app(settings_for(shim_db.dsn, schemas=("api",)), NO_HUB)
    with uvicorn_server(app) as base, httpx.Client(base_url=base) as client:
        join(client, shim_db.admin_dsn)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        response = page.goto(f"{base}/status")
        assert response.status == 401
        assert page.is_visible("input#key")
        assert page.locator("tr[data-webinar]").count() == 0
        page.fill("input#key", token({"role": "service_role", "sub": None, "aud": None}))
        page.click("button[type=submit]")
        page.wait_for_selector(f'tr[data-webinar="{WEBINAR}"]')
        assert page.url == f"{base}/status"  # the key is in no URL
        assert viewers_cell(page) == "1"
        page.evaluate("window.__same_document = true")
        for _ in range(2):
            join(client, shim_db.admin_dsn)
        page.wait_for_function(
            f"document.querySelector('tr[data-webinar=\"{WEBINAR}\"] td.viewers').textContent === '3'",
            timeout=10_000,
        )
        assert page.evaluate("window.__same_document") is True  # updated in place
        lights = page.locator("li[data-check]")
        assert lights.count() == 3
        assert page.locator('li[data-status="OK"] .light.ok').count() == 3
        # Some traffic for the functions table, then the README's picture.
        for _ in range(3):
            join(client, shim_db.admin_dsn, 149403)
        auth = bearer(token())
        for _ in range(4):
            client.post(
                "/rpc/presence_ping",
                json={"webinar_id": WEBINAR, "session_id": str(uuid.uuid4())},
                headers=auth,
            )
        page.wait_for_selector('tr[data-webinar="149403"]', timeout=10_000)
        page.wait_for_timeout(2500)
        target = os.environ.get("EVENTLIVE_SCREENSHOT") or str(tmp_path / "status.png")
        page.screenshot(path=target, full_page=True)
        assert Path(target).stat().st_size > 10_000


GREEN = "rgb(47, 191, 113)"  # --ok in status.css


def incident(client: httpx.Client, admin_dsn: str) -> None:
    """Before anyone looks: viewers enter and ping; one viewer's old tab pings a
    superseded session 4 times (4 x 409); 2 entries to an unknown webinar (2 x 404)."""
    for _ in range(2):
        join(client, admin_dsn)
    uid = str(uuid.uuid4())
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
    auth = bearer(token({"sub": uid}))
    old = client.post("/rpc/track_access", json={"webinar_id": WEBINAR}, headers=auth).json()
    assert (
        client.post("/rpc/track_access", json={"webinar_id": WEBINAR}, headers=auth).status_code
        == 200
    )
    for _ in range(4):
        r = client.post(
            "/rpc/presence_ping",
            json={"webinar_id": WEBINAR, "session_id": old["session_id"]},
            headers=auth,
        )
        assert r.status_code == 409, r.text
    for _ in range(2):
        r = client.post("/rpc/track_access", json={"webinar_id": 987654}, headers=auth)
        assert r.status_code == 404, r.text


def refreshes(page: Any) -> int:
    return int(
        page.evaluate(
            "performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('/status/live')).length"
        )
    )


def test_an_operator_arriving_mid_incident_sees_the_last_minute_at_once(
    browser: Any, shim_db: ShimDb
) -> None:
    """Traffic and errors happen before the page is first opened (no sampler running):
    the first render already lists the functions with their req/s and 409s by reason,
    and so do the refreshes after it (the rates are the metrics' one-minute window, not
    counted from the moment the page opened); the errors trend is drawn from the same
    window, minute by minute; the checks carry plain names with their DoD tag; the pool
    bar is labelled; the sign-in page shows no green dot."""
    setup_webinars(shim_db.admin_dsn)
    app = create_app(settings_for(shim_db.dsn, schemas=("api",)), NO_HUB)
    with uvicorn_server(app) as base, httpx.Client(base_url=base) as client:
        incident(client, shim_db.admin_dsn)
        assert app.state.console.sampler.latest is None  # nobody has looked yet
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        assert page.goto(f"{base}/status").status == 401
        logo = page.locator(".signin .logo")
        assert logo.count() == 1
        assert logo.evaluate("e => getComputedStyle(e).color") != GREEN
        assert page.locator(".light.ok, .logo.ok").count() == 0
        page.fill("input#key", token({"role": "service_role", "sub": None, "aud": None}))
        page.click("button[type=submit]")
        page.wait_for_selector('tr[data-function="api.presence_ping"]')
        assert refreshes(page) == 0  # what follows is the first render

        def check_table() -> None:
            ping = page.locator('tr[data-function="api.presence_ping"]')
            assert float(ping.locator("td").nth(1).inner_text()) > 0  # req/s
            assert "session_superseded 4" in ping.locator("td").nth(4).inner_text()
            track = page.locator('tr[data-function="api.track_access"]')
            assert "webinar_not_found 2" in track.locator("td").nth(4).inner_text()
            values = page.get_attribute('polyline[data-series="4xx"]', "data-values")
            assert values is not None
            per_minute = [int(v) for v in values.split(",")]
            assert len(per_minute) == 15
            assert sum(per_minute) >= 6  # 4 x 409 and 2 x 404 (the minute may have turned)
            assert page.get_attribute('polyline[data-series="5xx"]', "points")
            assert int(page.inner_text("#errors-4xx").split()[0]) == per_minute[-1]

        check_table()
        names = {
            li.get_attribute("data-check"): (
                li.locator(".name").inner_text(),
                li.locator(".tag").inner_text(),
            )
            for li in page.locator("li[data-check]").all()
        }
        assert names == {
            "DoD-1": ("Missing columns, tables or functions", "DoD-1"),
            "DoD-2": ("Conflict storms (409)", "DoD-2"),
            "DoD-3": ("Load on the auth server", "DoD-3"),
        }
        label = page.inner_text("#pool-label")
        assert re.fullmatch(r"pool: \d+ of 2 connections in use \(\d+ %\)", label), label
        assert page.get_attribute(".bar[role=meter]", "aria-valuemax") == "2"
        assert page.locator("#health.logo.ok").count() == 1  # all checks OK, database up
        page.wait_for_function(
            "performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('/status/live')).length >= 2",
            timeout=10_000,
        )
        check_table()  # still there after refreshes: nothing new happened, nothing lost
