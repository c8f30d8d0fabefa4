"""``GET /status``: only service_role sees it (header or the sign-in cookie; nothing in a
URL); it shows live webinars' current viewers, per-function rates and errors, the pool,
the database and the DoD-1..3 lights; however many pages poll it, the database answers
once per interval (counted at the wire, through a proxy)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import psycopg
from shim_support import NO_HUB, ShimDb, TcpProxy, bearer, settings_for, token, uvicorn_server

from shim.console import COOKIE, INTERVAL
from shim.serve.app import create_app

SERVICE = {"role": "service_role", "sub": None, "aud": None}


def live_webinar(admin_dsn: str, webinar_id: int) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            "select set_config('role', 'service_role', false),"
            " set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
        )
        conn.execute(
            "select api.upsert_webinar(webinar_id => %s, title => 'Status page demo')",
            (webinar_id,),
        )


def viewer(admin_dsn: str) -> str:
    uid = str(uuid.uuid4())
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
    return token({"sub": uid})


def test_anonymous_users_and_non_service_tokens_get_the_sign_in_page(shim_db: ShimDb) -> None:
    """401 with the sign-in form, no data: no token, a user's token, a bad key posted."""
    app = create_app(settings_for(shim_db.dsn, schemas=("api",)), NO_HUB)
    with uvicorn_server(app) as base, httpx.Client(base_url=base) as c:
        for headers in ({}, bearer(token()), bearer("not.a.jwt")):
            r = c.get("/status", headers=headers)
            assert r.status_code == 401
            assert "service_role key" in r.text
            assert "Live webinars" not in r.text
            assert c.get("/status/live", headers=headers).status_code == 401
        r = c.post("/status", data={"key": token()})
        assert r.status_code == 401
        assert "not a valid service_role key" in r.text
        assert COOKIE not in r.cookies


def test_the_sign_in_form_sets_an_httponly_cookie_and_the_page_shows_live_viewers(
    shim_db: ShimDb,
) -> None:
    """The key travels in a POST body; the cookie is HttpOnly, SameSite=Strict, path
    /status; the page lists the live webinar with its viewers, the functions called, the
    pool and the lights."""
    live_webinar(shim_db.admin_dsn, 777001)
    app = create_app(settings_for(shim_db.dsn, schemas=("api",)), NO_HUB)
    with uvicorn_server(app) as base, httpx.Client(base_url=base) as c:
        for _ in range(2):
            t = bearer(viewer(shim_db.admin_dsn))
            s = c.post("/rpc/track_access", json={"webinar_id": 777001}, headers=t).json()
            assert (
                c.post(
                    "/rpc/presence_ping",
                    json={"webinar_id": 777001, "session_id": s["session_id"]},
                    headers=t,
                ).status_code
                == 204
            )
        r = c.post("/status", data={"key": token(SERVICE)})
        assert r.status_code == 303
        assert r.headers["location"] == "/status"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/status" in cookie
        page = c.get("/status")
        assert page.status_code == 200
        html = page.text
        assert '<tr data-webinar="777001">' in html
        row = html.split('<tr data-webinar="777001">')[1].split("</tr>")[0]
        assert '<td class="num big viewers">2</td>' in row
        assert 'data-function="api.presence_ping"' in html
        assert 'data-check="DoD-1" data-status="OK"' in html
        assert 'data-ok="true"' in html
        assert c.get("/status/live").status_code == 200
        assert c.post("/status/logout").status_code == 303
        c.cookies.clear()
        assert c.get("/status").status_code == 401


def test_many_open_pages_cost_the_database_one_query_per_interval(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    """20 pages refreshing as fast as they can for 3 intervals: the sampler read the
    database about once per interval, and nothing else crossed the wire."""
    app = create_app(settings_for(proxy.dsn, schemas=("api",), pool_min=1), NO_HUB)
    service_auth = bearer(token(SERVICE))
    with uvicorn_server(app) as base:
        with httpx.Client(base_url=base) as c:
            assert c.get("/status", headers=service_auth).status_code == 200
        time.sleep(0.3)
        sampler = app.state.console.sampler
        proxy.reset()
        before = sampler.queries
        answers: list[int] = []
        stop = time.monotonic() + 3 * INTERVAL

        def page() -> None:
            with httpx.Client(base_url=base) as pc:
                while time.monotonic() < stop:
                    answers.append(pc.get("/status/live", headers=service_auth).status_code)

        threads = [threading.Thread(target=page) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        reads = sampler.queries - before
        bursts = proxy.bursts
    assert len(answers) > 100
    assert set(answers) == {200}
    assert 2 <= reads <= 4, reads
    assert bursts == reads, (bursts, reads)


def test_a_database_outage_shows_red_not_an_error_page(shim_db: ShimDb, proxy: TcpProxy) -> None:
    """The database cut away: the page still answers 200, the database light is red."""
    app = create_app(
        settings_for(proxy.dsn, schemas=("api",), pool_min=1, pool_timeout=0.3), NO_HUB
    )
    auth = bearer(token(SERVICE))
    with uvicorn_server(app) as base, httpx.Client(base_url=base, headers=auth) as c:
        assert 'data-ok="true"' in c.get("/status").text
        proxy.cut()
        deadline = time.monotonic() + 10
        text: Any = ""
        while time.monotonic() < deadline:
            r = c.get("/status/live")
            assert r.status_code == 200
            text = r.text
            if 'data-ok="false"' in text:
                break
            time.sleep(0.5)
        assert 'data-ok="false"' in text
        proxy.restore()


def test_the_errors_trend_counts_each_minute_from_the_metrics_slots() -> None:
    """4xx and 5xx per minute over the last 15, oldest first, from the slots the metrics
    keep (no sampler history needed); the one-minute window's true span."""
    from shim.console.sampler import error_trend, window_span
    from shim.http.metrics import Recent

    now = [1_000_025.0]  # 5 s into a 15-second slot
    errors = Recent(clock=lambda: now[0])
    for minutes_ago, status, n in (
        (0, "409", 7),
        (1, "404", 2),
        (1, "503", 1),
        (14, "401", 3),
        (20, "400", 9),
    ):
        now[0] = 1_000_025.0 - 60 * minutes_ago
        for _ in range(n):
            errors.add(("api.presence_ping", status, "PT409", "session_superseded"))
    now[0] = 1_000_025.0
    trend = error_trend(errors)
    assert len(trend) == 15
    assert trend[-1] == (7, 0)
    assert trend[-2] == (2, 1)
    assert trend[0] == (3, 0)  # 14 minutes ago; 20 minutes ago is out
    assert sum(a + b for a, b in trend) == 13
    assert window_span(1_000_025.0, uptime=3600) == 45 + 1_000_025.0 % 15
    assert window_span(1_000_025.0, uptime=8) == 8
