"""Operations: /health, /ready, /metrics, /openapi.json, Server-Timing, request ids and
one JSON access-log line per request."""

from __future__ import annotations

import json
import logging
import re

import pytest
from shim_support import NO_HUB, ShimDb, bearer, serve, settings_for

pytestmark = pytest.mark.anyio


async def test_health_and_ready(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_ready_is_503_when_the_database_is_unreachable() -> None:
    settings = settings_for("host=127.0.0.1 port=1 user=authenticator dbname=x connect_timeout=1")
    from shim.serve.app import create_app

    app = create_app(settings, NO_HUB)
    async with app.router.lifespan_context(app):  # starts although the database is down
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
            assert (await client.get("/health")).status_code == 200
            r = await client.get("/ready")
            assert r.status_code == 503
            assert r.headers["Retry-After"] == "1"
            r = await client.post("/rpc/whoami")
            assert r.status_code == 503
            assert r.json()["code"] == "PGRST002"


async def test_server_timing_and_request_id_on_every_answer(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        for r in (await client.post("/rpc/whoami"), await client.post("/rpc/nope")):
            parts = dict(p.strip().split(";dur=") for p in r.headers["Server-Timing"].split(","))
            assert set(parts) == {"auth", "db", "total"}
            assert float(parts["total"]) >= float(parts["db"])
            assert len(r.headers["X-Request-Id"]) == 16


async def test_metrics_count_requests_latency_pool_and_rejections(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        await client.post("/rpc/whoami")
        await client.post("/rpc/whoami", headers=bearer("bad"))
        await client.get("/rpc/echo?a=1")
        await client.get("/rpc/echo?a=1")
        text = (await client.get("/metrics")).text
    assert (
        'eventlive_requests_total{function="test_api.whoami",route="/rpc/{fn}",status="200"} 1.0'
        in text
    )
    assert 'eventlive_requests_total{function="",route="/rpc/{fn}",status="401"} 1.0' in text
    assert 'eventlive_request_duration_seconds_bucket{le="0.1",route="/rpc/{fn}"}' in text
    assert "eventlive_db_duration_seconds_count" in text
    size = re.search(r"^eventlive_pool_size (\d+)\.0$", text, re.M)
    assert size is not None
    assert 1 <= int(size.group(1)) <= 2
    assert "eventlive_pool_in_use 0.0" in text
    assert "eventlive_pool_waiting 0.0" in text
    assert 'eventlive_rejected_tokens_total{reason="malformed"} 1.0' in text
    assert 'eventlive_cache_total{result="miss"} 2.0' in text


async def test_one_json_log_line_per_request(
    shim_db: ShimDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventlive.access")
    async with serve(settings_for(shim_db.dsn, access_log=True)) as client:
        caplog.clear()
        await client.post("/rpc/whoami", headers={"X-Request-Id": "abc"})
        await client.post("/rpc/nope")
    # one JSON object per line; lines drained together share a log record
    lines = [
        json.loads(line)
        for r in caplog.records
        if r.name == "eventlive.access"
        for line in r.getMessage().splitlines()
    ]
    assert len(lines) == 2
    assert lines[0]["request_id"] == "abc"
    assert lines[0]["status"] == 200
    assert lines[0]["function"] == "test_api.whoami"
    assert lines[0]["role"] == "anon"
    assert lines[1]["status"] == 404
    assert lines[1]["error"] == "PGRST202"


async def test_openapi_describes_the_exposed_functions(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        doc = (await client.get("/openapi.json")).json()
        second = (await client.get("/openapi.json", headers={"Accept-Profile": "test_api2"})).json()
    assert doc["openapi"] == "3.1.0"
    echo = doc["paths"]["/rpc/echo"]
    assert echo["post"]["summary"] == "Echo the arguments."
    body = echo["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["a"]
    assert body["properties"]["a"]["type"] == ["integer", "null"]  # null is SQL NULL
    assert body["properties"]["b"]["format"] == "uuid"
    assert "get" in echo  # stable
    assert "get" not in doc["paths"]["/rpc/whoami"]
    assert "204" in doc["paths"]["/rpc/nothing"]["post"]["responses"]
    assert "/rpc/hidden" not in doc["paths"]
    for code in ("400", "401", "403", "404", "409", "503"):
        assert code in echo["post"]["responses"]
    # each function under /rpc and its /rest/v1 twin (tests/http/test_openapi.py)
    assert list(second["paths"]) == ["/rpc/hello", "/rest/v1/rpc/hello"]


async def test_cors_preflight_lets_browser_clients_call_rpc(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.options(
            "/rest/v1/rpc/whoami",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, apikey, content-type",
            },
        )
        assert r.status_code == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        r = await client.post("/rpc/whoami", headers={"Origin": "https://app.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "x-request-id" in r.headers["Access-Control-Expose-Headers"]
    async with serve(settings_for(shim_db.dsn, cors_origins=())) as client:
        r = await client.post("/rpc/whoami", headers={"Origin": "https://app.example"})
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_unknown_function_names_do_not_become_metric_labels(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        for n in range(5):
            await client.post(f"/rpc/made_up_{n}")
        text = (await client.get("/metrics")).text
    assert "made_up" not in text
    assert 'eventlive_requests_total{function="",route="/rpc/{fn}",status="404"} 5.0' in text
