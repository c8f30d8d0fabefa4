"""``JWT_ISS``: one or more issuers, comma separated. A token that carries ``iss`` must
name one of them (401 ``bad_issuer`` before the database otherwise); a token without
``iss`` passes, as with ``aud``; unset -> no issuer check at all (as before)."""

from __future__ import annotations

import pytest
from shim_support import ShimDb, TcpProxy, bearer, serve, settings_for, token

from shim.http.settings import Settings

pytestmark = pytest.mark.anyio

# What Supabase issues today, and what older projects' tokens carry.
PROJECT = "https://abcdefghijklmnop.supabase.co/auth/v1"
LEGACY = "supabase"


def test_jwt_iss_is_read_as_a_comma_separated_list_and_unset_means_unchecked() -> None:
    """The variable is parsed like the other lists; unset or empty leaves the check off."""
    assert Settings.from_env({"JWT_ISS": f" {PROJECT} , {LEGACY} "}).jwt_iss == (PROJECT, LEGACY)
    assert Settings.from_env({}).jwt_iss == ()
    assert Settings.from_env({"JWT_ISS": ""}).jwt_iss == ()


async def test_a_token_must_name_a_configured_issuer_when_it_carries_one(
    shim_db: ShimDb, proxy: TcpProxy
) -> None:
    """With ``JWT_ISS`` naming both of Supabase's issuers: tokens from either, and tokens
    without ``iss`` (the anon key style), are served; a foreign issuer, a prefix or
    case variant of ours, and an empty ``iss`` are 401 with ``WWW-Authenticate``,
    with zero bytes sent to the database, and counted as ``bad_issuer``."""
    settings = settings_for(proxy.dsn, jwt_iss=(PROJECT, LEGACY))
    good = {
        "project issuer": token({"iss": PROJECT}),
        "legacy issuer": token({"iss": LEGACY}),
        "no iss": token(),
    }
    bad = {
        "foreign issuer": token({"iss": "https://evil.example/auth/v1"}),
        "prefix of ours": token({"iss": "https://abcdefghijklmnop.supabase.co"}),
        "case variant": token({"iss": "Supabase"}),
        "empty": token({"iss": ""}),
    }
    async with serve(settings) as client:
        for name, tok in good.items():
            r = await client.post("/rpc/whoami", headers=bearer(tok))
            assert r.status_code == 200, (name, r.text)
        for name, tok in bad.items():
            proxy.reset()
            r = await client.post("/rpc/whoami", headers=bearer(tok))
            assert r.status_code == 401, (name, r.text)
            assert r.json()["code"] == "PGRST301", name
            assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"'), name
            assert proxy.bytes_up == 0, name
        metrics = (await client.get("/metrics")).text
    assert f'eventlive_rejected_tokens_total{{reason="bad_issuer"}} {float(len(bad))}' in metrics


async def test_without_jwt_iss_any_issuer_is_accepted(shim_db: ShimDb) -> None:
    """Unset: the issuer is not checked, as before this setting existed."""
    async with serve(settings_for(shim_db.dsn)) as client:
        r = await client.post("/rpc/whoami", headers=bearer(token({"iss": "anyone"})))
        assert r.status_code == 200, r.text
