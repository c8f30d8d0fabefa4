"""Only exposed functions are callable: nothing of ``pg_catalog``, ``eventlive``, ``auth``
or ``public`` is reachable through ``/rpc``, whatever the profile header; functions of
``api`` that the caller's role may not execute answer 401 (anon) / 403; a function of
``api`` granted to no API role does not exist for the shim; and ``statement_timeout``
stops a slow call with a clear error and a usable connection afterwards.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import SECRET, ShimDb, TcpProxy, bearer, serve, settings_for, token

pytestmark = pytest.mark.anyio

USER = bearer(token())
SERVICE = bearer(token({"role": "service_role", "sub": None, "aud": None}))
CALLERS = {"anon": {}, "authenticated": USER, "service_role": SERVICE}


def body(r: httpx.Response, echo: str = "") -> dict[str, Any]:
    """PostgREST's four keys, and nothing internal beyond ``echo`` (the name asked for)."""
    data = r.json()
    assert set(data) == {"code", "message", "details", "hint"}, data
    text = " ".join(str(v) for v in data.values()).replace(echo or "\0", "")
    for leak in ("select ", "Traceback", "psycopg", "eventlive.", "pg_"):
        assert leak not in text, data
    return dict(data)


def _settings(dsn: str, **overrides: Any) -> Any:
    return settings_for(dsn, schemas=("api", "test_api"), jwt_secret=SECRET, **overrides)


# (schema, function) pairs that exist in the database but are not exposed.
NOT_EXPOSED = [
    ("pg_catalog", "pg_sleep"),
    ("pg_catalog", "pg_read_file"),
    ("pg_catalog", "pg_terminate_backend"),
    ("pg_catalog", "set_config"),
    ("pg_catalog", "current_setting"),
    ("pg_catalog", "version"),
    ("pg_catalog", "now"),
    ("eventlive", "staff_webinar_ids"),  # granted to authenticated, yet not in api
    ("eventlive", "is_service_role"),
    ("eventlive", "require_staff"),
    ("eventlive", "count_registrations"),
    ("eventlive", "record_presence_minute"),
    ("auth", "uid"),
    ("auth", "role"),
    ("auth", "jwt"),
    ("test_private", "writer"),  # granted to authenticated, in a schema not exposed
]


async def test_functions_outside_the_exposed_schemas_are_404_for_every_caller(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        for schema, name in NOT_EXPOSED:  # they exist: a 404 means "not exposed"
            found = conn.execute(
                "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
                " where n.nspname = %s and p.proname = %s",
                (schema, name),
            ).fetchone()
            assert found is not None
            assert found[0] >= 1, (schema, name)
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/echo", json={"a": 1}, headers={"Content-Profile": "test_api"})
        proxy.reset()
        for schema, name in NOT_EXPOSED:
            for caller, headers in CALLERS.items():
                for path in (f"/rpc/{name}", f"/rest/v1/rpc/{name}", f"/rpc/{schema}.{name}"):
                    r = await client.post(path, json={}, headers=headers)
                    assert r.status_code == 404, (path, caller, r.text)
                    assert body(r, echo=path.rsplit("/", 1)[1])["code"] == "PGRST202"
                    r = await client.get(path, headers=headers)
                    assert r.status_code == 404, (path, caller, r.text)
        assert proxy.bytes_up == 0  # refused from the catalog, not by the database


@pytest.mark.parametrize("schema", ["eventlive", "pg_catalog", "auth", "public", "API", ""])
async def test_a_profile_naming_a_schema_that_is_not_exposed_is_406(
    shim_db: ShimDb, proxy: TcpProxy, schema: str
) -> None:
    async with serve(_settings(proxy.dsn)) as client:
        proxy.reset()
        for caller, headers in CALLERS.items():
            r = await client.post(
                "/rpc/staff_webinar_ids", headers={**headers, "Content-Profile": schema}
            )
            assert r.status_code == 406, (caller, r.text)
            assert body(r)["code"] == "PGRST106"
            r = await client.get("/rpc/pg_sleep?seconds=1", headers={"Accept-Profile": schema})
            assert r.status_code == 406, r.text
        assert proxy.bytes_up == 0


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("upsert_webinar", {"webinar_id": 1, "title": "x"}),
        ("set_staff", {"webinar_id": 1, "user_id": "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10"}),
        ("remove_staff", {"webinar_id": 1, "user_id": "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10"}),
    ],
)
async def test_management_functions_are_401_for_anon_and_403_for_users(
    shim_db: ShimDb, name: str, args: dict[str, Any]
) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        r = await client.post(f"/rpc/{name}", json=args)
        assert r.status_code == 401, r.text
        assert body(r)["code"] == "42501"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await client.post(f"/rpc/{name}", json=args, headers=USER)
        assert r.status_code == 403, r.text
        assert body(r)["code"] == "42501"
        r = await client.post(f"/rpc/{name}", json=args, headers=SERVICE)
        assert r.status_code < 500, r.text
        assert r.status_code not in (401, 403), r.text  # the role that may, can


@pytest.mark.parametrize(
    "name", ["track_access", "presence_ping", "presence_leave", "participants", "access_stats"]
)
async def test_anon_may_execute_nothing_of_the_api(shim_db: ShimDb, name: str) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        r = await client.post(
            f"/rpc/{name}",
            json={"webinar_id": 1, "session_id": "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10"}
            if name.startswith("presence")
            else {"webinar_id": 1},
        )
        assert r.status_code == 401, r.text
        assert body(r)["code"] == "42501"


async def test_a_new_api_function_without_grants_is_not_callable_by_anyone(
    shim_db: ShimDb,
) -> None:
    # Default privileges of the api schema revoke EXECUTE from PUBLIC: a function someone
    # adds without granting it stays unreachable, for service_role too.
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(
            "create function api.forgotten_grant() returns text language sql"
            " as $$ select current_user::text $$"
        )
        conn.execute("notify eventlive_reload")
    async with serve(_settings(shim_db.dsn)) as client:
        for caller, headers in CALLERS.items():
            r = await client.post("/rpc/forgotten_grant", headers=headers)
            assert r.status_code == 404, (caller, r.text)
        doc = (await client.get("/openapi.json")).json()
        assert "/rpc/forgotten_grant" not in doc["paths"]
        assert "/rpc/track_access" in doc["paths"]


async def test_statement_timeout_stops_a_slow_call_promptly_with_a_clear_message(
    shim_db: ShimDb,
) -> None:
    async with serve(_settings(shim_db.dsn, statement_timeout="200ms")) as client:
        started = time.monotonic()
        r = await client.post(
            "/rpc/sleepy", json={"seconds": 30}, headers={**USER, "Content-Profile": "test_api"}
        )
        elapsed = time.monotonic() - started
        assert elapsed < 3, elapsed
        assert r.status_code == 500, r.text  # PostgREST: class 57 -> 500
        data = body(r)
        assert data["code"] == "57014"
        assert data["message"] == "canceling statement due to statement timeout", data
        assert "pg_sleep" not in r.text
        assert "sleepy" not in data["message"]
        # The connection went back to the pool clean: the next call works at once.
        r = await client.post(
            "/rpc/sleepy", json={"seconds": 0}, headers={**USER, "Content-Profile": "test_api"}
        )
        assert r.json() == 1


async def test_a_per_role_statement_timeout_stops_that_role_only(shim_db: ShimDb) -> None:
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        name = conn.execute("select current_database()").fetchone()
        assert name is not None
        conn.execute(f"alter role anon in database \"{name[0]}\" set statement_timeout = '150ms'")
    profile = {"Content-Profile": "test_api"}
    async with serve(_settings(shim_db.dsn)) as client:
        r = await client.post("/rpc/sleepy", json={"seconds": 1}, headers=profile)
        assert r.status_code == 500, r.text
        assert body(r)["code"] == "57014"
        assert "statement timeout" in body(r)["message"]
        r = await client.post("/rpc/sleepy", json={"seconds": 0.5}, headers={**USER, **profile})
        assert r.json() == 1  # authenticated keeps the default (5s)
