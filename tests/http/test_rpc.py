"""Every status row of the RPC routes, asserted with its PostgREST body (in-process)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from shim_support import USER_ID, ShimDb, TcpProxy, bearer, serve, settings_for, token

pytestmark = pytest.mark.anyio
AUTH = bearer(token())


def body(response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    assert set(data) == {"code", "message", "details", "hint"}, data
    return dict(data)


async def test_post_returns_the_functions_json_as_the_switched_role(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/whoami", headers=AUTH)
        assert r.status_code == 200
        data = r.json()
        assert data["user"] == "authenticated"
        assert data["sub"] == USER_ID
        assert data["claims"]["role"] == "authenticated"
        assert data["read_only"] == "off"
        assert data["statement_timeout"] == "5s"
        r = await client.post("/rest/v1/rpc/whoami")
        assert r.status_code == 200
        assert r.json()["user"] == "anon"
        assert r.json()["claims"] == {"role": "anon"}


async def test_apikey_header_is_the_token_without_authorization(shim_db: ShimDb) -> None:
    service = token({"role": "service_role", "sub": None})
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/whoami", headers={"apikey": service})
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "service_role"
        # Authorization wins over apikey (Supabase clients send both)
        r = await client.post("/rpc/whoami", headers={"apikey": service, **AUTH})
        assert r.json()["user"] == "authenticated"


async def test_arguments_are_typed_and_defaults_apply(shim_db: ShimDb) -> None:
    args = {
        "a": 9007199254740993,
        "b": USER_ID,
        "c": {"x": [1, "y"]},
        "d": "it's",
        "e": True,
        "f": [1, 2],
        "g": 1.5,
    }
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/echo", json=args)
        assert r.status_code == 200
        assert r.json() == args
        r = await client.post("/rpc/echo", json={"a": "12"})
        assert r.json()["a"] == 12
        assert r.json()["b"] is None


async def test_get_runs_stable_functions_read_only_with_query_arguments(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.get("/rpc/echo", params={"a": "5", "b": USER_ID, "e": "true"})
        assert r.status_code == 200
        assert r.json()["a"] == 5
        assert r.json()["e"] is True
        r = await client.get("/rpc/whoami_ro", headers=AUTH)
        assert r.json() == {"user": "authenticated", "read_only": "on"}
        r = await client.head("/rpc/whoami_ro", headers=AUTH)
        assert r.status_code == 200
        assert r.content == b""


async def test_post_on_a_stable_function_runs_read_only(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/whoami_ro")
        assert r.json()["read_only"] == "on"
        r = await client.post("/rpc/write_in_get", headers=AUTH)
        assert r.status_code == 405
        assert body(r)["code"] == "25006"


async def test_void_set_scalar_and_minimal_results(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/nothing")
        assert r.status_code == 204
        assert r.content == b""
        assert (await client.post("/rpc/series", json={"n": 3})).json() == [1, 2, 3]
        assert (await client.post("/rpc/series", json={"n": 0})).json() == []
        r = await client.post("/rpc/squares", json={"n": 2})
        assert r.json() == [{"i": 1, "sq": 1}, {"i": 2, "sq": 4}]
        assert (await client.post("/rpc/greeting", json={"name": "x"})).json() == "hello x"
        r = await client.post("/rpc/whoami", headers={"Prefer": "return=minimal"})
        assert r.status_code == 204


@pytest.mark.parametrize(
    ("payload", "code", "details"),
    [
        (b"{not json", "PGRST102", "malformed_json"),
        (b"[1, 2]", "PGRST102", "not_an_object"),
        (b'"a"', "PGRST102", "not_an_object"),
        (b'{"a": 1, "zz": 2}', "PGRST102", "unknown_argument"),
        (b'{"b": null}', "PGRST102", "missing_argument"),
        (b'{"a": "x1"}', "22P02", "wrong_type"),
        (b'{"a": 1.5}', "22P02", "wrong_type"),
        (b'{"a": true}', "22P02", "wrong_type"),
        (b'{"a": 9223372036854775808}', "22003", "out_of_range"),
        (b'{"a": 1, "b": "not-a-uuid"}', "22P02", "wrong_type"),
        (b'{"a": 1, "b": 5}', "22P02", "wrong_type"),
        (b'{"a": 1, "d": 5}', "22P02", "wrong_type"),
        (b'{"a": 1, "e": "yes"}', "22P02", "wrong_type"),
        (b'{"a": 1, "f": ["x"]}', "22P02", "wrong_type"),
        (b'{"a": 1, "f": 3}', "22P02", "wrong_type"),
        (b'{"a": 1, "g": "lots"}', "22P02", "wrong_type"),
    ],
)
async def test_bad_arguments_are_400_before_the_database(
    shim_db: ShimDb, proxy: TcpProxy, payload: bytes, code: str, details: str
) -> None:
    async with serve(settings_for(proxy.dsn)) as client:
        await client.post("/rpc/nothing")  # warm: the pool's connection exists
        proxy.reset()
        r = await client.post(
            "/rpc/echo", content=payload, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400
        assert body(r)["code"] == code
        assert body(r)["details"] == details
        assert proxy.bytes_up == 0


async def test_unknown_function_is_404_and_unroutable_ones_too(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        for name in ("nope", "hidden"):  # hidden: no API role may execute it
            r = await client.post(f"/rpc/{name}")
            assert r.status_code == 404
            assert body(r)["code"] == "PGRST202"
            assert body(r)["details"] == "unknown_function"


async def test_wrong_method_is_405(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        for method in ("PUT", "PATCH", "DELETE"):
            r = await client.request(method, "/rpc/echo")
            assert r.status_code == 405
            assert body(r)["code"] == "PGRST101"
        r = await client.get("/rpc/whoami")  # volatile: POST only
        assert r.status_code == 405
        assert body(r)["details"] == "method_not_allowed"


async def test_profiles_choose_the_schema_and_unknown_is_406(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.get("/rpc/hello", headers={"Accept-Profile": "test_api2"})
        assert r.json() == "second"
        r = await client.post("/rpc/hello", headers={"Content-Profile": "test_api2"})
        assert r.json() == "second"
        assert (await client.post("/rpc/hello")).status_code == 404
        r = await client.post("/rpc/whoami", headers={"Content-Profile": "eventlive"})
        assert r.status_code == 406
        assert body(r)["code"] == "PGRST106"
        r = await client.get("/rpc/echo?a=1", headers={"Accept-Profile": "public"})
        assert r.status_code == 406


async def test_body_over_the_limit_is_413(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn, max_body=1000)) as client:
        r = await client.post("/rpc/echo", json={"a": 1, "d": "x" * 2000})
        assert r.status_code == 413
        assert body(r)["details"] == "body_too_large"

        async def chunks() -> Any:  # no Content-Length: counted while reading
            for _ in range(5):
                yield b" " * 400

        r = await client.post("/rpc/echo", content=chunks())
        assert r.status_code == 413
        r = await client.post("/rpc/echo", json={"a": 1, "d": "x" * 500})
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("P0001", 400),
        ("PT403", 403),
        ("PT409", 409),
        ("PT418", 418),
        ("23503", 409),
        ("22023", 400),
        ("42883", 404),
    ],
)
async def test_function_errors_map_to_postgrest_statuses_with_reason_in_details(
    shim_db: ShimDb, sqlstate: str, status: int
) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post(
            "/rpc/fail",
            headers=AUTH,
            json={
                "code": sqlstate,
                "msg": "Not registered for this webinar",
                "det": "not_registered",
                "hnt": "register first",
            },
        )
        assert r.status_code == status
        assert body(r) == {
            "code": sqlstate,
            "message": "Not registered for this webinar",
            "details": "not_registered",
            "hint": "register first",
        }


async def test_unique_violation_is_409(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/dup", headers=AUTH)
        assert r.status_code == 409
        assert body(r)["code"] == "23505"


async def test_permission_denied_is_401_for_anon_and_403_for_users(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/only_service")
        assert r.status_code == 401
        assert body(r)["code"] == "42501"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await client.post("/rpc/only_service", headers=AUTH)
        assert r.status_code == 403
        assert body(r)["code"] == "42501"
        r = await client.post("/rpc/only_service", headers=bearer(token({"role": "service_role"})))
        assert r.json() == 1


async def test_internal_errors_give_the_request_id_never_sql(
    shim_db: ShimDb, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/internal_bug", headers={"X-Request-Id": "req-42"})
    assert r.status_code == 500
    data = body(r)
    assert data["details"] == "request_id=req-42"
    assert "select" not in r.text
    assert "test_private" not in r.text
    assert r.headers["X-Request-Id"] == "req-42"
    logged = [rec.getMessage() for rec in caplog.records if "req-42" in rec.getMessage()]
    assert any("test_private" in m for m in logged)


async def test_statement_timeout_applies_and_role_settings_override(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn, statement_timeout="100ms")) as client:
        r = await client.post("/rpc/sleepy", json={"seconds": 1})
        assert r.status_code == 500
        assert body(r)["code"] == "57014"
    import psycopg

    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute("alter role authenticated set statement_timeout = '7s'")
    try:
        async with serve(settings_for(shim_db.dsn)) as client:
            r = await client.post("/rpc/whoami", headers=AUTH)
            assert r.json()["statement_timeout"] == "7s"
            r = await client.post("/rpc/whoami")
            assert r.json()["statement_timeout"] == "5s"
    finally:
        with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
            conn.execute("alter role authenticated reset statement_timeout")


async def test_pool_exhausted_is_503_with_retry_after_quickly(shim_db: ShimDb) -> None:
    import time

    import anyio

    settings = settings_for(shim_db.dsn, pool_min=1, pool_max=1, pool_timeout=0.3)
    async with serve(settings) as client:
        results: list[httpx.Response] = []

        async def hold() -> None:
            results.append(await client.post("/rpc/sleepy", json={"seconds": 1.5}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await anyio.sleep(0.3)  # let it take the only connection
            started = time.monotonic()
            r = await client.post("/rpc/whoami")
            elapsed = time.monotonic() - started
        assert r.status_code == 503
        assert body(r)["code"] == "PGRST003"
        assert r.headers["Retry-After"] == "1"
        assert elapsed < 1.0
        assert results[0].status_code == 200
        assert (await client.post("/rpc/whoami")).status_code == 200


def test_error_bodies_are_json_objects_with_four_keys() -> None:
    from shim.http.errors import ApiError

    assert json.loads(ApiError(400, "X", "m").body()) == {
        "code": "X",
        "message": "m",
        "details": None,
        "hint": None,
    }


async def test_a_deliberate_pt503_keeps_its_message_and_gets_retry_after(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post(
            "/rpc/fail", json={"code": "PT503", "msg": "Try later", "det": "maintenance"}
        )
        assert r.status_code == 503
        assert body(r) == {
            "code": "PT503",
            "message": "Try later",
            "details": "maintenance",
            "hint": None,
        }
        assert r.headers["Retry-After"] == "1"


async def test_hostile_bodies_are_400_not_500(shim_db: ShimDb) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/echo", content=b"[" * 60000)
        assert r.status_code == 400
        assert body(r)["details"] == "malformed_json"
        r = await client.post("/rpc/echo", content=b'{"a": 1, "d": "\xff\xfe"}')
        assert r.status_code == 400
        r = await client.post("/rpc/echo", json={"a": 1, "d": "cut\u0000here"})
        assert r.status_code == 400
        assert body(r)["details"] == "nul_character"
        r = await client.post("/rpc/echo", json={"a": 1, "c": {"k": "\u0000"}})
        assert r.status_code == 400  # Postgres refuses \\u0000 in jsonb: 22P05
        r = await client.get("/rpc/echo", params={"a": "1", "f": "{1,x}"})
        assert r.status_code == 400
        assert body(r)["code"] == "22P02"


async def test_unknown_paths_and_wrong_methods_on_fixed_routes_have_json_bodies(
    shim_db: ShimDb,
) -> None:
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.get("/nowhere")
        assert r.status_code == 404
        assert body(r)["code"] == "PGRST125"
        r = await client.get("/api/webinars/1/presence/ping")
        assert r.status_code == 405
        assert body(r)["code"] == "PGRST101"
