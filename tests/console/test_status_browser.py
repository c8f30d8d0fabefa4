"""The status page in a real browser (chromium, headless): an anonymous visitor gets the
sign-in form and no data; an operator signs in with the service_role key and sees a live
webinar's viewer count change as viewers join, without reloading. The screenshot in the
README (docs/status.png) is this page (written when EVENTLIVE_SCREENSHOT names a path)."""

from __future__ import annotations

import os
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
