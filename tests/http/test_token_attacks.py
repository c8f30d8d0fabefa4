"""Token attacks beyond ``test_auth``'s basic refusals: forged algorithms, key confusion,
embedded keys, hostile ``kid`` values, roles that name database superusers or the login
role, claims that are not a JSON object, absurd sizes and non-ASCII garbage.

Every one is a 401 with ``WWW-Authenticate: Bearer`` and PostgREST's body -- through
``Authorization`` and through ``apikey`` alike -- and nothing reaches the database (zero
bytes on a TCP proxy in front of it). The issuer (``iss``) is not checked, as in PostgREST:
a token is trusted for its key and audience.

A valid token can outlive its user (deleted from ``auth.users``; on Supabase for up to an
hour): that is the database's to tell, as 401 ``user_not_found`` in PostgREST's body, not
PostgreSQL's 23503 naming tables and constraints (issue #21).
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from shim_support import (
    NO_HUB,
    SECRET,
    KeyPair,
    ShimDb,
    TcpProxy,
    bearer,
    ec_key,
    rsa_key,
    serve,
    settings_for,
    token,
    uvicorn_server,
)

from shim.http.auth import Authenticator
from shim.http.errors import ApiError
from shim.http.settings import Settings
from shim.serve.app import create_app
from shim.testing import create_user

RSA = rsa_key("rs-1")
EC = ec_key("es-1")
ATTACKER = rsa_key("rs-1")  # same kid, another key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: Any) -> str:
    return _b64(value if isinstance(value, bytes) else json.dumps(value).encode())


def forge(
    header: Any, payload: Any, key: bytes | None = SECRET.encode(), digest: str = "sha256"
) -> str:
    """A token with any header and payload (objects, or raw bytes), HMAC-signed with
    ``key`` (our secret by default: only what is inside is wrong), or unsigned."""
    signing = _segment(header) + "." + _segment(payload)
    sig = b"" if key is None else hmac.new(key, signing.encode(), digest).digest()
    return signing + "." + _b64(sig)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10",
        "role": "authenticated",
        "aud": "authenticated",
        "exp": now + 600,
        **extra,
    }


HS = {"alg": "HS256", "typ": "JWT"}


def _pem(pair: KeyPair) -> bytes:
    return pair.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _attacks() -> dict[str, str]:
    service = claims(role="service_role")
    now = int(time.time())
    rsa_jwk_text = json.dumps(RSA.jwk).encode()
    return {
        # The algorithm is the attacker's to choose: only HS256 / RS256 / ES256, each
        # with its own kind of key.
        "alg none, service_role": forge({"alg": "none"}, service, None),
        "alg None": forge({"alg": "None"}, claims(), None),
        "alg NONE": forge({"alg": "NONE"}, claims(), None),
        "alg none with a signature": forge({"alg": "none"}, claims()),
        "alg empty": forge({"alg": ""}, claims()),
        "alg missing": forge({"typ": "JWT"}, claims()),
        "alg as a list": forge({"alg": ["HS256"]}, claims()),
        "HS512 with our secret": forge({"alg": "HS512"}, claims(), digest="sha512"),
        "HS384 with our secret": forge({"alg": "HS384"}, claims(), digest="sha384"),
        "PS256 header": forge({"alg": "PS256", "kid": "rs-1"}, claims()),
        "HS256 with the RSA public key (PEM), kid": forge(
            {"alg": "HS256", "kid": "rs-1"}, service, _pem(RSA)
        ),
        "HS256 with the RSA public key (PEM), no kid": forge(HS, service, _pem(RSA)),
        "HS256 with the RSA public key (JWK text)": forge(
            {"alg": "HS256", "kid": "rs-1"}, service, rsa_jwk_text
        ),
        "HS256 with the EC public key (PEM)": forge(
            {"alg": "HS256", "kid": "es-1"}, service, _pem(EC)
        ),
        "RS256 by an attacker's key under our kid": token(
            {"role": "service_role"}, key=ATTACKER.private, alg="RS256", kid="rs-1"
        ),
        "RS256 header on the EC kid": token(key=RSA.private, alg="RS256", kid="es-1"),
        "RS256 with the attacker's key in an embedded jwk": jwt.encode(
            claims(role="service_role"),
            ATTACKER.private,
            algorithm="RS256",
            headers={"jwk": ATTACKER.jwk, "kid": "attacker"},
        ),
        "RS256 with a jku pointing elsewhere": jwt.encode(
            claims(role="service_role"),
            ATTACKER.private,
            algorithm="RS256",
            headers={"jku": "http://127.0.0.1:9/jwks.json", "kid": "attacker"},
        ),
        # kid: looked up, never used as a path or query.
        "kid path traversal": token(key=ATTACKER.private, alg="RS256", kid="../../../dev/null"),
        "kid sql": token(key=ATTACKER.private, alg="RS256", kid="' or 1=1 --"),
        "kid empty": token(key=ATTACKER.private, alg="RS256", kid=""),
        # Time.
        "expired a day ago": token({"exp": now - 86400}),
        "expired beyond the leeway": token({"exp": now - 60}),
        "nbf beyond the leeway": token({"nbf": now + 120}),
        "exp as Infinity": forge(HS, b'{"role": "authenticated", "exp": Infinity}'),
        "exp as NaN": forge(HS, b'{"role": "authenticated", "exp": NaN}'),
        "exp as an object": forge(HS, {"role": "authenticated", "exp": {"$gt": 0}}),
        "exp past, as a string": forge(HS, {"role": "authenticated", "exp": str(now - 3600)}),
        "nbf as -Infinity": forge(HS, b'{"role": "authenticated", "nbf": -Infinity}'),
        "exp with 5000 digits": forge(
            HS, b'{"role": "authenticated", "exp": 9' + b"9" * 5000 + b"}"
        ),
        # Audience.
        "aud of another project": token({"aud": "someone-else"}),
        "aud list without ours": token({"aud": ["a", "b"]}),
        "aud empty": token({"aud": ""}),
        "aud as a number": forge(HS, claims(aud=1)),
        "aud as an object": forge(HS, claims(aud={"authenticated": True})),
        # Roles: only anon / authenticated / service_role, and service_role only with a key
        # we trust.
        "service_role with a wrong secret": token(
            {"role": "service_role"}, key="a-guessed-secret-of-at-least-32-bytes"
        ),
        "service_role with the secret truncated": token({"role": "service_role"}, key=SECRET[:-1]),
        "service_role, signature stripped": token({"role": "service_role"}).rsplit(".", 1)[0] + ".",
        "service_role, signature of another token": token({"role": "service_role"}).rsplit(".", 1)[
            0
        ]
        + "."
        + token().rsplit(".", 1)[1],
        "role postgres": token({"role": "postgres"}),
        "role authenticator": token({"role": "authenticator"}),
        "role pg_read_all_data": token({"role": "pg_read_all_data"}),
        "role pg_write_server_files": token({"role": "pg_write_server_files"}),
        "role pg_execute_server_program": token({"role": "pg_execute_server_program"}),
        "role with sql": token({"role": "authenticated'; reset role; --"}),
        "role PUBLIC": token({"role": "public"}),
        "role upper case": token({"role": "SERVICE_ROLE"}),
        "role empty": token({"role": ""}),
        "role with a NUL": token({"role": "service_role\u0000"}),
        "role as a list": token({"role": ["service_role"]}),
        "role as an object": token({"role": {"name": "service_role"}}),
        "role as null": forge(HS, claims(role=None)),
        "role as a number": token({"role": 10}),
        # Claims that are not a JSON object (correctly signed).
        "claims: array": forge(HS, [claims()]),
        "claims: string": forge(HS, "service_role"),
        "claims: number": forge(HS, 1),
        "claims: null": forge(HS, None),
        "claims: true": forge(HS, True),
        "claims: not JSON": forge(HS, b"role=service_role"),
        "claims: invalid UTF-8": forge(HS, b'{"role": "authenticated\xff"}'),
        "claims: nested 100000 deep": forge(HS, b"[" * 100_000),
        "header: array": forge(b'["HS256"]', claims()),
        "header: not JSON": forge(b"alg=HS256", claims()),
        "header: nested 100000 deep": forge(b"{" * 100_000, claims()),
        # Shapes.
        "two segments": ".".join(token().split(".")[:2]),
        "four segments": token() + ".x",
        "empty segments": "..",
        "only dots": "." * 1000,
        "padding and junk": token() + "====",
        "bad base64": "%%%.%%%.%%%",
        "whitespace inside": token().replace(".", " . ", 1),
    }


@pytest.fixture
def jwks_file(tmp_path: Path) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [RSA.jwk, EC.jwk]}))
    return str(path)


def assert_refused(r: httpx.Response, name: str) -> None:
    assert r.status_code == 401, (name, r.status_code, r.text)
    data = r.json()
    assert set(data) == {"code", "message", "details", "hint"}, (name, data)
    assert data["code"] == "PGRST301", (name, data)
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"'), name
    for leak in ("Traceback", "psycopg", "select ", "pg_", SECRET):
        assert leak not in r.text, (name, leak, r.text)


@pytest.mark.anyio
async def test_every_forged_or_malformed_token_is_401_and_never_reaches_the_database(
    shim_db: ShimDb, proxy: TcpProxy, jwks_file: str, anyio_backend: str
) -> None:
    attacks = _attacks()
    settings = settings_for(proxy.dsn, schemas=("test_api",), jwks_file=jwks_file)
    wrong: dict[str, str] = {}
    async with serve(settings) as client:
        # The keys work: each kind of genuine token gets in.
        for good in (
            token(),
            token(key=RSA.private, alg="RS256", kid="rs-1"),
            token(key=EC.private, alg="ES256", kid="es-1"),
        ):
            assert (await client.post("/rpc/whoami", headers=bearer(good))).status_code == 200
        for name, tok in attacks.items():
            for headers in (bearer(tok), {"apikey": tok}):
                proxy.reset()
                try:
                    r = await client.post("/rpc/whoami", headers=headers)
                    assert_refused(r, name)
                    assert proxy.bytes_up == 0, "reached the database"
                except (AssertionError, ValueError, KeyError) as exc:
                    wrong[f"{name} via {next(iter(headers))}"] = str(exc)[:300]
    assert not wrong, json.dumps(wrong, indent=1)
    assert len(attacks) >= 70


@pytest.mark.anyio
async def test_a_bad_authorization_header_is_not_rescued_by_a_good_apikey(
    shim_db: ShimDb, proxy: TcpProxy, anyio_backend: str
) -> None:
    async with serve(settings_for(proxy.dsn)) as client:
        service = token({"role": "service_role"})
        proxy.reset()
        for authorization in (
            "Bearer " + token({"role": "service_role"}, key="wrong-secret-of-at-least-32-bytes!"),
            "Bearer",
            "Bearer ",
            "Basic " + base64.b64encode(b"postgres:postgres").decode(),
            "Token " + service,
            service,  # no scheme
        ):
            r = await client.post(
                "/rpc/whoami", headers={"Authorization": authorization, "apikey": service}
            )
            assert_refused(r, authorization[:20])
        assert proxy.bytes_up == 0


def test_absurdly_long_and_non_ascii_tokens_through_real_uvicorn_are_4xx_never_500(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    settings = settings_for(proxy.dsn)
    header = _segment({"alg": "HS256", "pad": "A" * 1_000_000})
    huge = header + "." + _segment(claims()) + ".c2ln"
    with (
        uvicorn_server(create_app(settings, NO_HUB)) as base,
        httpx.Client(base_url=base) as client,
    ):
        assert client.post("/rpc/whoami", headers=bearer(token())).status_code == 200
        proxy.reset()
        cases: dict[str, dict[str, Any]] = {
            "1 MB header segment": bearer(huge),
            "1 MB apikey": {"apikey": huge},
            "60 kB token": bearer(forge({"alg": "HS256", "pad": "A" * 45_000}, claims(), b"k")),
            "latin-1 garbage": {"Authorization": b"Bearer \xe9\xff\xfe.\xa0.\xc3"},
            "utf-8 garbage": {"Authorization": "Bearer ключ.ключ.ключ".encode()},
            "control characters": {"Authorization": b"Bearer a\x01b.c\x7fd.e"},
        }
        statuses: dict[str, int] = {}
        for name, headers in cases.items():
            r = client.post("/rpc/whoami", headers=headers)
            statuses[name] = r.status_code
            assert r.status_code in (400, 401, 413, 431), (name, r.status_code, r.text[:200])
            if r.status_code == 401:
                assert_refused(r, name)
        # uvicorn refuses a header past h11's limit itself; the shim judges the rest.
        assert statuses["60 kB token"] == 401, statuses
        assert proxy.bytes_up == 0
        # And the server is still fine.
        assert client.post("/rpc/whoami", headers=bearer(token())).status_code == 200


@pytest.mark.anyio
async def test_a_kid_that_is_not_a_string_is_401_not_500(
    shim_db: ShimDb, proxy: TcpProxy, anyio_backend: str
) -> None:
    async with serve(settings_for(proxy.dsn)) as client:
        proxy.reset()
        for kid in ({"$ne": ""}, ["rs-1"], 1, True):
            tok = forge({"alg": "HS256", "kid": kid}, claims())
            assert_refused(await client.post("/rpc/whoami", headers=bearer(tok)), str(kid))
            assert_refused(await client.post("/rpc/whoami", headers={"apikey": tok}), str(kid))
        assert proxy.bytes_up == 0


@pytest.mark.anyio
async def test_a_cached_token_with_exp_as_a_numeric_string_still_expires(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    # PyJWT accepts exp "1700000000" (it calls int() on it); the cache must honour it too.
    auth = Authenticator(Settings(jwt_secret=SECRET, jwt_leeway=0))
    tok = forge(HS, {"role": "authenticated", "exp": str(int(time.time()) + 60)})
    assert (await auth.identify(tok)).role == "authenticated"
    real = time.time
    monkeypatch.setattr("shim.http.auth.time.time", lambda: real() + 120)
    with pytest.raises(ApiError) as err:
        await auth.identify(tok)  # from the cache
    assert err.value.status == 401
    assert err.value.reason == "expired"


GONE = {
    "code": "PT401",
    "message": "The user of this token no longer exists.",
    "details": "user_not_found",
    "hint": "Sign in again.",
}


@pytest.mark.anyio
async def test_a_valid_token_whose_user_was_deleted_is_a_postgrest_401_user_not_found(
    shim_db: ShimDb, anyio_backend: str
) -> None:
    """Entry, heartbeat (the coalesced path), chat and Q&A, through /rpc, supabase-js's
    /rest/v1/rpc and the legacy routes: each a 401 with PostgREST's JSON body and
    ``WWW-Authenticate: Bearer``, the same reason everywhere."""
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as admin:
        admin.execute("select api.upsert_webinar(7, 'Soon without its viewer')")
        uid = create_user(admin)
        tok = bearer(token({"sub": str(uid)}))
        async with serve(settings_for(shim_db.dsn, schemas=("api",))) as client:
            r = await client.post("/rpc/track_access", json={"webinar_id": 7}, headers=tok)
            assert r.status_code == 200, r.text
            session = r.json()["session_id"]
            admin.execute("delete from auth.users where id = %s", (uid,))
            calls: list[tuple[str, dict[str, Any]]] = [
                ("/rpc/track_access", {"webinar_id": 7}),
                ("/rest/v1/rpc/track_access", {"webinar_id": 7, "session_id": session}),
                ("/api/webinars/7/access/track", {}),
                ("/rpc/presence_ping", {"webinar_id": 7, "session_id": session}),
                ("/api/webinars/7/presence/ping", {"session_id": session}),
                ("/rpc/chat_send", {"webinar_id": 7, "body": "still here?"}),
                ("/rpc/question_ask", {"webinar_id": 7, "body": "still here?"}),
                ("/rpc/register", {"webinar_id": 7}),
            ]
            for path, args in calls:
                r = await client.post(path, json=args, headers=tok)
                assert r.status_code == 401, (path, r.text)
                assert r.headers["content-type"].startswith("application/json"), path
                assert r.headers["WWW-Authenticate"].startswith("Bearer"), path
                assert r.json() == GONE, path
            r = await client.get("/rpc/chat_since", params={"webinar_id": "7"}, headers=tok)
            assert (r.status_code, r.json()) == (401, GONE)
