"""Hostile request bodies, names and values: every one gets a clean 4xx with PostgREST's
body -- never a 500, never a RecursionError, never SQL -- and those the shim can judge
alone never reach the database (counted on a TCP proxy in front of it).

Runs in-process against the real ``api`` schema plus the test schema ``test_api``
(exposed second, chosen with ``Content-Profile``). A client that sends half a body and
stalls belongs to the fault tests.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from shim_support import SECRET, ShimDb, TcpProxy, bearer, serve, settings_for, token

pytestmark = pytest.mark.anyio

SERVICE = bearer(token({"role": "service_role", "sub": None, "aud": None}))
USER = bearer(token())
TEST_API = {"Content-Profile": "test_api"}
JSON = {"Content-Type": "application/json"}
LEAKS = ("select ", "eventlive.", "pg_", "Traceback", 'File "', "psycopg", "registrations")


def clean_4xx(
    r: httpx.Response, status: int | tuple[int, ...] = 400, echo: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The answer is the expected 4xx with exactly PostgREST's four keys and no leak.

    ``echo``: the client's own text, which a message may quote back (an unknown function
    or argument name) -- removed before looking for leaks.
    """
    expected = (status,) if isinstance(status, int) else status
    assert r.status_code in expected, (r.status_code, r.text)
    data = r.json()
    assert set(data) == {"code", "message", "details", "hint"}, data
    assert isinstance(data["code"], str)
    assert isinstance(data["message"], str)
    assert data["message"]
    text = " ".join(str(v) for v in data.values())
    for quoted in echo:
        text = text.replace(quoted, "")
    for leak in LEAKS:
        assert leak not in text, (leak, r.text)
    return dict(data)


def _settings(dsn: str, **overrides: Any) -> Any:
    return settings_for(dsn, schemas=("api", "test_api"), jwt_secret=SECRET, **overrides)


# Bodies the shim refuses before any database work: (body, details).
REFUSED_BEFORE_THE_DATABASE = {
    "deeply nested array": (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
    "deeply nested inside an argument": (
        b'{"webinar_id": 1, "client": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
        "malformed_json",
    ),
    "unclosed nesting": (b'{"webinar_id": [[[[[[', "malformed_json"),
    "invalid utf-8 in a value": (b'{"webinar_id": 1, "client": {"k": "\xff\xfe"}}', None),
    "invalid utf-8 in a key": (b'{"webinar_\xc3\x28id": 1}', None),
    "overlong utf-8 encoding of a quote": (b'{"webinar_id": 1, "client": "\xc0\xa2"}', None),
    "nul in a text value": (b'{"webinar_id": 1, "session_id": "a\\u0000b"}', None),
    "nul in a key": (b'{"webinar_id": 1, "sess\\u0000ion_id": null}', "unknown_argument"),
    "raw nul byte": (b'{"webinar_id": 1\x00}', "malformed_json"),
    "bigint above range": (b'{"webinar_id": 9223372036854775808}', "out_of_range"),
    "bigint below range": (b'{"webinar_id": -9223372036854775809}', "out_of_range"),
    "huge integer": (b'{"webinar_id": ' + b"9" * 4000 + b"}", None),
    "float for bigint": (b'{"webinar_id": 1.5}', "wrong_type"),
    "integral float for bigint": (b'{"webinar_id": 1e3}', "wrong_type"),
    "exponent overflow": (b'{"webinar_id": 1e999}', None),
    "boolean for bigint": (b'{"webinar_id": true}', "wrong_type"),
    "object for uuid": (b'{"webinar_id": 1, "session_id": {}}', "wrong_type"),
    "array instead of object": (b'[{"webinar_id": 1}]', "not_an_object"),
    "string instead of object": (b'"webinar_id"', "not_an_object"),
    "number instead of object": (b"149402", "not_an_object"),
    "null instead of object": (b"null", "not_an_object"),
    "trailing garbage": (b'{"webinar_id": 1} {"x": 2}', "malformed_json"),
    "single quotes": (b"{'webinar_id': 1}", "malformed_json"),
    "sql in an argument name": (
        b'{"webinar_id": 1, "session_id\\"); drop table eventlive.registrations; --": 1}',
        "unknown_argument",
    ),
    "sql as an argument name only": (b'{"1=1; select pg_sleep(10)": 1}', "unknown_argument"),
}


def _names(payload: bytes) -> tuple[str, ...]:
    """The argument names of an object body, which a message may quote."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return ()
    return tuple(value) if isinstance(value, dict) else ()


async def test_hostile_bodies_are_clean_400s_that_never_reach_the_database(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    wrong: dict[str, str] = {}
    async with serve(_settings(proxy.dsn, max_body=1 << 20)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        for name, (payload, details) in REFUSED_BEFORE_THE_DATABASE.items():
            fn = "upsert_webinar" if b'"title"' in payload else "track_access"
            proxy.reset()
            r = await client.post(f"/rpc/{fn}", content=payload, headers={**SERVICE, **JSON})
            try:
                data = clean_4xx(r, echo=_names(payload))
                assert details is None or data["details"] == details
                assert proxy.bytes_up == 0, "reached the database"
            except (AssertionError, ValueError) as exc:
                wrong[name] = f"{r.status_code} {r.text[:200]} {exc}"
    assert not wrong, json.dumps(wrong, indent=1)


async def test_bigint_bounds_themselves_pass_and_reach_the_function(shim_db: ShimDb) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        for webinar in (9223372036854775807, -9223372036854775808):
            r = await client.post("/rpc/track_access", headers=USER, json={"webinar_id": webinar})
            assert clean_4xx(r, 404)["details"] == "webinar_not_found"


async def test_values_postgres_refuses_are_400_with_its_reason_not_500(shim_db: ShimDb) -> None:
    cases = [
        # (function, body, headers): Postgres' input functions and the functions' checks.
        ("echo", {"a": 1, "c": {"k": "\u0000"}}, TEST_API),  # 22P05: jsonb has no NUL
        ("echo", {"a": 1, "c": {"k": "\ud800"}}, TEST_API),  # lone surrogate in jsonb
        ("echo", {"a": 1, "g": "1e999999"}, TEST_API),
        ("echo", {"a": 1, "f": [2**31]}, TEST_API),
        ("upsert_webinar", {"webinar_id": 1, "title": "t", "opens_at": "not a date"}, SERVICE),
        ("upsert_webinar", {"webinar_id": 1, "title": "t", "opens_at": "294277-01-01"}, SERVICE),
        ("upsert_webinar", {"webinar_id": 1, "title": "x" * 501}, SERVICE),
        ("upsert_webinar", {"webinar_id": 1, "title": "t", "heartbeat_seconds": 2**31}, SERVICE),
        ("track_access", {"webinar_id": 1, "client": {"x": "y" * 5000}}, USER),
    ]
    async with serve(_settings(shim_db.dsn, max_body=1 << 20)) as client:
        for fn, payload, headers in cases:
            body = json.dumps(payload).encode()  # ASCII: escapes the lone surrogate
            r = await client.post(f"/rpc/{fn}", content=body, headers={**headers, **JSON})
            assert r.status_code in (400, 404), (fn, payload, r.text)
            clean_4xx(r, (400, 404))


async def test_numeric_nan_and_infinity_in_text_form_do_not_break_the_jsonb_result(
    shim_db: ShimDb,
) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        for value in ("NaN", "Infinity", "-Infinity"):
            r = await client.post(
                "/rpc/echo", json={"a": 1, "g": value}, headers={**TEST_API, **USER}
            )
            assert r.status_code in (200, 400), (value, r.text)
            if r.status_code == 400:
                clean_4xx(r)


async def test_oversized_bodies_are_413_with_or_without_content_length(shim_db: ShimDb) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        big = json.dumps({"webinar_id": 1, "client": {"pad": "x" * 70_000}}).encode()
        r = await client.post("/rpc/track_access", content=big, headers={**USER, **JSON})
        assert clean_4xx(r, 413)["details"] == "body_too_large"

        async def stream() -> Any:  # chunked: no Content-Length, counted while reading
            for _ in range(100):
                yield b" " * 10_000

        r = await client.post("/rpc/track_access", content=stream(), headers=USER)
        clean_4xx(r, 413)
        lying = {**USER, **JSON, "Content-Length": "10"}  # says small, sends more
        r = await client.post("/rpc/track_access", content=big, headers=lying)
        assert r.status_code in (400, 413), r.text


async def test_a_hundred_thousand_ids_are_413_or_400_never_500(shim_db: ShimDb) -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(100_000)]
    payload = json.dumps({"user_ids": ids}).encode()
    async with serve(_settings(shim_db.dsn)) as client:  # default limit: 64 kB
        r = await client.post("/rpc/profiles_batch", content=payload, headers={**USER, **JSON})
        assert clean_4xx(r, 413)["details"] == "body_too_large"
    async with serve(_settings(shim_db.dsn, max_body=8 << 20)) as client:  # let it through
        r = await client.post("/rpc/profiles_batch", content=payload, headers={**USER, **JSON})
        assert clean_4xx(r)["details"] == "too_many_ids"
        r = await client.post(
            "/rpc/profiles_batch", json={"user_ids": [None] * 100_000}, headers=USER
        )
        assert clean_4xx(r)["details"] == "too_many_ids"


async def test_empty_and_whitespace_bodies_mean_no_arguments(shim_db: ShimDb) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        for payload in (b"", b"   \n", b"{}"):
            r = await client.post("/rpc/track_access", content=payload, headers={**USER, **JSON})
            assert clean_4xx(r)["details"] == "missing_argument", payload


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",  # what fetch() sends for a string body without a header
        "application/x-www-form-urlencoded",  # what curl -d sends without -H
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
    ],
)
@pytest.mark.parametrize("path", ["/rpc/track_access", "/api/webinars/1/presence/ping"])
async def test_a_body_declared_as_not_json_is_415_before_the_database(
    proxy: TcpProxy, content_type: str, path: str
) -> None:
    """PostgREST's answer to a media type it cannot read: 415 PGRST107, whatever the body
    holds (JSON labelled as a form included), with nothing sent to the database."""
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", json={"webinar_id": 1}, headers=USER)  # warm
        headers = {**USER, "Content-Type": content_type}
        for content in (b"webinar_id=149402", b'{"webinar_id": 1}', b""):
            proxy.reset()
            r = await client.post(path, content=content, headers=headers)
            assert clean_4xx(r, 415)["code"] == "PGRST107", r.text
            assert r.json()["details"] == "unsupported_media_type"
            assert proxy.bytes_up == 0, "reached the database"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.pgrst.object+json",
    ],
)
async def test_json_or_no_content_type_is_read_as_json(
    shim_db: ShimDb, content_type: str | None
) -> None:
    """supabase-js sends application/json; curl without -d sends no Content-Type and no
    body: both work as before, and a body without a declared type is read as JSON."""
    async with serve(_settings(shim_db.dsn)) as client:
        headers = dict(USER) if content_type is None else {**USER, "Content-Type": content_type}
        r = await client.post("/rpc/track_access", content=b'{"webinar_id": 1}', headers=headers)
        assert clean_4xx(r, 404)["details"] == "webinar_not_found"
        r = await client.post("/api/webinars/1/access/track", content=b"", headers=headers)
        assert clean_4xx(r, 404)["details"] == "webinar_not_found"
        r = await client.post("/rpc/track_access", content=b"webinar_id=1", headers=headers)
        assert clean_4xx(r)["details"] == "malformed_json"


@pytest.mark.parametrize(
    "path",
    [
        "/rpc/track_access;drop table x",
        "/rpc/track_access%3Bdrop%20table%20x",
        '/rpc/"track_access"',
        "/rpc/%22x%22",
        "/rpc/pg_catalog.pg_sleep",
        "/rpc/api.track_access",
        "/rpc/eventlive.registrations",
        "/rpc/track_access'--",
        "/rpc/track_access%00",
        "/rpc/%C0%AE%C0%AE",
        "/rpc/" + "a" * 5000,
        "/rpc/..%2f..%2fetc%2fpasswd",
        "/rpc/TRACK_ACCESS",
    ],
)
async def test_sql_and_tricks_in_function_names_are_404_without_the_database(
    shim_db: ShimDb, proxy: TcpProxy, path: str
) -> None:
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        proxy.reset()
        name = path.removeprefix("/rpc/")
        for method in ("GET", "POST"):
            r = await client.request(method, path, headers=USER)
            clean_4xx(r, 404, echo=(name,))
        assert proxy.bytes_up == 0


async def test_sql_in_get_argument_names_and_values_is_refused(shim_db: ShimDb) -> None:
    async with serve(_settings(shim_db.dsn)) as client:
        r = await client.get(
            "/rpc/access_stats", params={"webinar_id": "1; select pg_sleep(5)"}, headers=USER
        )
        assert clean_4xx(r)["details"] == "wrong_type"
        r = await client.get(
            "/rpc/access_stats",
            params={"webinar_id": "1", "x) or 1=1 --": "1"},
            headers=USER,
        )
        assert clean_4xx(r, echo=("x) or 1=1 --",))["details"] == "unknown_argument"
        r = await client.get("/rpc/access_stats?webinar_id=1&webinar_id=2", headers=USER)
        assert clean_4xx(r)["details"] == "duplicate_argument"
        r = await client.get("/rpc/access_stats?webinar_id=%00", headers=USER)
        clean_4xx(r)


async def test_a_lone_surrogate_in_a_text_argument_is_400_not_500(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    # Valid JSON escapes, but no UTF-8 text: Postgres cannot receive them.
    bodies = [
        (b'{"webinar_id": 1, "title": "\\ud800"}', "upsert_webinar"),
        (b'{"webinar_id": 1, "title": "ok", "state": "\\udfff"}', "upsert_webinar"),
        (b'{"user_ids": ["\\ud83d"]}', "profiles_batch"),
    ]
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        for payload, fn in bodies:
            proxy.reset()
            r = await client.post(f"/rpc/{fn}", content=payload, headers={**SERVICE, **JSON})
            assert clean_4xx(r)["code"] in ("22021", "22P02"), payload
            assert proxy.bytes_up == 0
        r = await client.post(
            "/rpc/echo",
            content=b'{"a": 1, "d": "\\udc00", "f": null}',
            headers={**TEST_API, **JSON},
        )
        assert clean_4xx(r)["details"] == "invalid_unicode"


async def test_nan_and_infinity_are_not_json_and_never_reach_the_database(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        for payload in (
            b'{"webinar_id": NaN}',
            b'{"webinar_id": Infinity}',
            b'{"webinar_id": 1, "client": -Infinity}',
            b'{"webinar_id": 1, "client": {"x": [NaN]}}',
        ):
            proxy.reset()
            r = await client.post("/rpc/track_access", content=payload, headers={**USER, **JSON})
            assert clean_4xx(r)["details"] == "malformed_json", payload
            assert proxy.bytes_up == 0, payload


async def test_a_duplicated_argument_in_a_body_is_400_as_in_a_query_string(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    # Which of two values counts is parser trivia (first? last?): a filter in front may
    # have judged the other one. Refused, like a repeated query parameter.
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        for payload in (
            b'{"webinar_id": 1, "webinar_id": 149402}',
            b'{"webinar_id": 1, "client": {"k": 1, "k": 2}}',
        ):
            proxy.reset()
            r = await client.post("/rpc/track_access", content=payload, headers={**USER, **JSON})
            assert clean_4xx(r)["details"] == "duplicate_key", payload
            assert proxy.bytes_up == 0, payload


@pytest.mark.parametrize(
    "webinar",
    ["%C2%B2", "%D9%A1%D9%A2", "%EF%BC%91", "1%3Bdrop", "-1", "0x10", "9" * 19, "1e3", "%00"],
)
async def test_a_legacy_route_id_that_is_not_ascii_digits_is_400(
    shim_db: ShimDb, proxy: TcpProxy, webinar: str
) -> None:
    # Superscript two and Arabic-Indic digits pass str.isdigit(); only ASCII digits count.
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        proxy.reset()
        r = await client.post(f"/api/webinars/{webinar}/access/track", headers=USER)
        assert clean_4xx(r)["details"] == "invalid_webinar_id", r.text
        r = await client.get(f"/api/webinars/{webinar}/stats/access", headers=USER)
        assert clean_4xx(r)["details"] == "invalid_webinar_id", r.text
        assert proxy.bytes_up == 0


async def test_integers_in_strings_are_ascii_digits_only(shim_db: ShimDb, proxy: TcpProxy) -> None:
    # Python's \d and int() read Arabic-Indic and other Unicode digits; Postgres does not.
    async with serve(_settings(proxy.dsn)) as client:
        await client.post("/rpc/track_access", headers=USER, json={"webinar_id": 1})  # warm
        proxy.reset()
        for value in ("\u0661\u0664\u0669", "\uff11", "1\u0662"):
            r = await client.post("/rpc/track_access", headers=USER, json={"webinar_id": value})
            assert clean_4xx(r)["details"] == "wrong_type", value
            r = await client.get(f"/rpc/access_stats?webinar_id={value}", headers=USER)
            assert clean_4xx(r)["details"] == "wrong_type", value
        assert proxy.bytes_up == 0
