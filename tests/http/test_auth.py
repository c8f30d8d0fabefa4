"""Tokens: HS256, ES256 (JWKS file) and RS256 (JWKS URL on loopback) accepted; every
invalid kind refused with 401 + WWW-Authenticate before anything reaches the database."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import http.server
import json
import string
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from shim_support import (
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
)

from shim.http import auth as auth_module
from shim.http.auth import Authenticator
from shim.http.errors import ApiError
from shim.http.settings import Settings

pytestmark = pytest.mark.anyio


class JwksServer:
    """Serves a mutable JWKS over HTTP on loopback and counts fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                data = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyPair]:
    return {
        "es": ec_key("es-1"),
        "rs": rsa_key("rs-1"),
        "rs2": rsa_key("rs-2"),
        "other": rsa_key("rs-1"),
    }


@pytest.fixture
def jwks_file(tmp_path: Path, keys: dict[str, KeyPair]) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [keys["es"].jwk]}))
    return str(path)


@pytest.fixture
def jwks_server(keys: dict[str, KeyPair]) -> Iterator[JwksServer]:
    server = JwksServer([keys["rs"].jwk])
    yield server
    server.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(sig)


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10",
        "role": "authenticated",
        "aud": "authenticated",
        "exp": now + 600,
        **extra,
    }


async def test_hs256_es256_from_file_and_rs256_from_url_are_accepted(
    shim_db: ShimDb, keys: dict[str, KeyPair], jwks_file: str, jwks_server: JwksServer
) -> None:
    settings = settings_for(shim_db.dsn, jwks_file=jwks_file, jwks_url=jwks_server.url)
    tokens = {
        "HS256": token(),
        "ES256": token(key=keys["es"].private, alg="ES256", kid="es-1"),
        "RS256": token(key=keys["rs"].private, alg="RS256", kid="rs-1"),
        "no aud": token({"aud": None, "role": "anon"}),
        "aud list": token({"aud": ["other", "authenticated"]}),
    }
    async with serve(settings) as client:
        for name, tok in tokens.items():
            r = await client.post("/rpc/whoami", headers=bearer(tok))
            assert r.status_code == 200, (name, r.text)
            assert r.json()["user"] in ("authenticated", "anon")


def _bad_tokens(keys: dict[str, KeyPair]) -> dict[str, str]:
    now = int(time.time())
    rsa_pem = (
        keys["rs"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "expired": token({"exp": now - 3600}),
        "not yet valid": token({"nbf": now + 3600}),
        "wrong audience": token({"aud": "someone-else"}),
        "wrong secret": token(key="another-secret-of-at-least-32-bytes!!"),
        "wrong rsa key, known kid": token(key=keys["other"].private, alg="RS256", kid="rs-1"),
        "unknown kid": token(key=keys["rs2"].private, alg="RS256", kid="rs-2"),
        "alg none": _forge({"alg": "none", "typ": "JWT"}, _claims(), None),
        "hs256 signed with the rsa public key": _forge(
            {"alg": "HS256", "typ": "JWT", "kid": "rs-1"}, _claims(), rsa_pem
        ),
        "es256 header on an rsa kid": token(key=keys["es"].private, alg="ES256", kid="rs-1"),
        "role outside the allowed set": token({"role": "postgres"}),
        "role authenticator": token({"role": "authenticator"}),
        "garbage": "not.a.jwt",
        "rs512": token(key=keys["rs"].private, alg="RS512", kid="rs-1"),
    }


async def test_invalid_tokens_are_401_and_never_reach_the_database(
    shim_db: ShimDb, proxy: TcpProxy, keys: dict[str, KeyPair], jwks_server: JwksServer
) -> None:
    settings = settings_for(proxy.dsn, jwks_url=jwks_server.url, jwks_refetch_seconds=3600)
    async with serve(settings) as client:
        await client.post("/rpc/whoami")
        for name, tok in _bad_tokens(keys).items():
            for headers in (bearer(tok), {"apikey": tok}):
                proxy.reset()
                r = await client.post("/rpc/whoami", headers=headers)
                assert r.status_code == 401, (name, r.text)
                body = r.json()
                assert body["code"] == "PGRST301", name
                assert set(body) == {"code", "message", "details", "hint"}
                assert r.headers["WWW-Authenticate"].startswith(
                    'Bearer error="invalid_token", error_description="'
                ), name
                assert proxy.bytes_up == 0, name
        r = await client.post("/rpc/whoami", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        metrics = (await client.get("/metrics")).text
    for reason in (
        "expired",
        "not_yet_valid",
        "bad_audience",
        "bad_signature",
        "unknown_kid",
        "bad_algorithm",
        "bad_role",
        "malformed",
    ):
        assert f'eventlive_rejected_tokens_total{{reason="{reason}"}}' in metrics, reason


async def test_unknown_kid_refetches_the_jwks_at_most_once_per_interval(
    keys: dict[str, KeyPair], jwks_server: JwksServer
) -> None:
    auth = Authenticator(Settings(jwks_url=jwks_server.url, jwks_refetch_seconds=3600))
    await auth.load_keys()
    assert jwks_server.fetches == 1
    new = token(key=keys["rs2"].private, alg="RS256", kid="rs-2")
    jwks_server.keys = [keys["rs"].jwk, keys["rs2"].jwk]  # rotated after our first fetch
    assert (await auth.identify(new)).role == "authenticated"  # refetched once
    assert jwks_server.fetches == 2
    for _ in range(3):  # unknown kids now: refused without a fetch storm
        with pytest.raises(ApiError) as err:
            await auth.identify(token(key=keys["rs2"].private, alg="RS256", kid="rs-9"))
        assert err.value.reason == "unknown_kid"
    assert jwks_server.fetches == 2


async def test_verified_tokens_are_cached_until_they_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = Authenticator(Settings(jwt_secret=SECRET, jwt_leeway=0, token_cache=2))
    tok = token(ttl=60)
    first = await auth.identify(tok)
    assert await auth.identify(tok) == first
    assert (auth.cache_hits, auth.cache_misses) == (1, 1)  # served from the cache
    real = time.time
    monkeypatch.setattr("shim.http.auth.time.time", lambda: real() + 120)
    with pytest.raises(ApiError) as err:
        await auth.identify(tok)
    assert err.value.reason == "expired"
    monkeypatch.undo()
    for n in range(5):  # bounded
        await auth.identify(token({"n": n}))
    assert len(auth._cache) <= 2


async def test_audience_check_can_be_turned_off() -> None:
    auth = Authenticator(Settings.from_env({"JWT_SECRET": SECRET, "JWT_AUD": ""}))
    assert (await auth.identify(token({"aud": "anything"}))).role == "authenticated"
    strict = Authenticator(Settings.from_env({"JWT_SECRET": SECRET}))
    with pytest.raises(ApiError):
        await strict.identify(token({"aud": "anything"}))


async def test_no_token_is_anon_and_a_token_without_role_is_anon() -> None:
    auth = Authenticator(Settings(jwt_secret=SECRET))
    assert (await auth.identify(None)).role == "anon"
    assert (await auth.identify(token({"role": None}))).role == "anon"
    assert jwt.decode(token(), SECRET, algorithms=["HS256"], audience="authenticated")


async def test_the_token_cache_holds_a_whole_audience_within_its_memory_bound() -> None:
    """Supabase-shaped user tokens (sub, role, aud, email, session_id, app/user metadata):
    5,000 distinct ones all stay cached (the default holds 600,000 per worker) at under
    0.7 kB each, so a full cache of 600,000 stays under 420 MB; a hit costs no
    verification. Past the bound the oldest entries go, never more than the bound stays."""
    now = int(time.time())
    tokens = [
        jwt.encode(
            {
                "sub": str(uuid.uuid4()),
                "role": "authenticated",
                "aud": "authenticated",
                "iat": now,
                "exp": now + 3600,
                "email": f"viewer{i}@example.com",
                "session_id": str(uuid.uuid4()),
                "app_metadata": {"provider": "email", "providers": ["email"]},
                "user_metadata": {},
                "is_anonymous": False,
            },
            SECRET,
            algorithm="HS256",
        )
        for i in range(5_000)
    ]
    auth = Authenticator(Settings(jwt_secret=SECRET))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for tok in tokens:
        await auth.identify(tok)
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(tokens)
    tracemalloc.stop()
    print(f"token cache: {per_entry:.0f} bytes per entry")
    assert auth.cached() == len(tokens)
    assert per_entry < 700, per_entry
    assert Settings().token_cache * per_entry < 420 * 2**20
    bounded = Authenticator(Settings(jwt_secret=SECRET, token_cache=1_000))
    for tok in tokens[:3_000]:
        await bounded.identify(tok)
    assert bounded.cached() == 1_000


async def test_a_full_token_cache_gives_the_garbage_collector_nothing_to_walk() -> None:
    """20,000 cached identities add (almost) no object the collector tracks, so a full
    collection does not grow with the audience (it paused the event loop for 75 ms at
    300,000 cached Identity objects), and a hit still returns the same identity."""
    now = int(time.time())
    tokens = [
        jwt.encode(
            {"sub": str(uuid.uuid4()), "role": "authenticated", "exp": now + 3600},
            SECRET,
            algorithm="HS256",
        )
        for _ in range(20_000)
    ]
    auth = Authenticator(Settings(jwt_secret=SECRET))
    gc.collect()
    baseline = len(gc.get_objects())
    for tok in tokens:
        await auth.identify(tok)
    gc.collect()  # tuples of atoms are untracked when a collection first sees them
    assert auth.cached() == len(tokens)
    assert len(gc.get_objects()) - baseline < len(tokens) // 100
    fresh = Authenticator(Settings(jwt_secret=SECRET, token_cache=0))
    for tok in tokens[:50]:
        assert await auth.identify(tok) == await fresh.identify(tok)


async def test_new_tokens_check_the_secret_once_and_reuse_a_known_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every token of a join storm is new: PyJWT's check that the secret is no asymmetric
    key (a DER and an X.509 parse) runs for the first token only, and the header segment
    all of them share is parsed once; each token is still verified in full (a forged
    signature or a broken payload behind a known header is refused, with its reason)."""
    users = [str(uuid.UUID(int=i + 1)) for i in range(50)]
    tokens = [token({"sub": user}) for user in users]  # signed before counting
    good = token()
    checks: list[bytes] = []
    real = jwt.algorithms.HMACAlgorithm._is_der_key

    def is_der_key(key: bytes) -> bool:
        checks.append(key)
        return real(key)

    parsed: list[str] = []
    real_header = jwt.get_unverified_header

    def get_unverified_header(tok: str) -> dict[str, Any]:
        parsed.append(tok)
        return real_header(tok)

    monkeypatch.setattr(jwt.algorithms.HMACAlgorithm, "_is_der_key", staticmethod(is_der_key))
    monkeypatch.setattr(jwt, "get_unverified_header", get_unverified_header)
    auth = Authenticator(Settings(jwt_secret=SECRET, token_cache=0))
    for user, tok in zip(users, tokens, strict=True):
        assert (await auth.identify(tok)).user_id == user
    assert len(checks) == 1, len(checks)
    assert len(parsed) == 1, len(parsed)
    head, _payload, signature = good.split(".")
    # signed with another secret: a well-formed signature that does not match
    forged = token(key="another-secret-that-is-also-32-bytes-long")
    broken = f"{head}.a.{signature}"  # a payload segment no base64 decodes
    for bad, reason in ((forged, "bad_signature"), (broken, "malformed")):
        with pytest.raises(ApiError) as refused:
            await auth.identify(bad)
        assert refused.value.reason == reason


@settings(max_examples=3000, derandomize=True, database=None, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "-_=!+/. ", max_size=12))
def test_segments_are_refused_and_decoded_exactly_as_pyjwt_does(text: str) -> None:
    """The one-call junk check of token segments (``auth._SegmentsPyJWS``) agrees with
    PyJWT's own, byte by byte: junk, padding, lengths and non-canonical encodings."""
    segment = text.encode()

    def outcome(decode: Any) -> bytes | str:
        try:
            decoded: bytes = decode(segment, "payload")
        except jwt.DecodeError as exc:
            return str(exc)
        return decoded

    ours = outcome(auth_module._SegmentsPyJWS._decode_base64url_segment)
    assert ours == outcome(jwt.PyJWS._decode_base64url_segment)
