"""In-process JWT verification: HS256 with a shared secret, ES256 / RS256 from a JWKS.

Contract of ``Authenticator.identify(token)``: returns the ``Identity`` (role + the claims
as JSON text for ``request.jwt.claims``) or raises ``ApiError`` 401 with a
``WWW-Authenticate`` header and a ``reason`` (metric label). It never touches the
database; it contacts the JWKS URL only for a ``kid`` it does not know, at most once per
``jwks_refetch_seconds``. Verified tokens are cached (bounded; expiry still enforced).

The cache holds a whole audience: ``EVENTLIVE_TOKEN_CACHE`` (600,000 per worker,
above the 500,000-viewer audience of the steady-state target) entries
keyed by a 16-byte BLAKE2b digest of the token (not the token text: a Supabase token is
~300-800 bytes), each holding the ``Identity``'s fields (role, claims JSON, expiry, user
id) as a tuple the garbage collector does not walk.
Measured with Supabase-shaped HS256 tokens (``tests/http/test_auth.py``
``test_the_token_cache_holds_a_whole_audience_within_its_memory_bound``): 630 bytes per
entry (tracemalloc), so the bound is ~380 MB per worker for 600,000 entries; a hit costs
one digest and one dict lookup, a miss a full PyJWT verification (the bench's py-spy
profile: 18 % of the shim's samples with a cold cache, absent once the audience is in).
The role ``eventlive_batcher`` (the shim's internal batch role) is refused in any token,
whatever ``EVENTLIVE_JWT_ROLES`` says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from shim.http.settings import Settings
from shim.web.token import rejected

log = logging.getLogger("eventlive.auth")

# The only algorithm each key type may verify: no "none", no HS256 with an RSA key.
_ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}
# Never claimable by a token: the shim's internal role for coalesced calls.
INTERNAL_ROLES = frozenset({"eventlive_batcher"})
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: Any) -> bool:
    """A lower-case 8-4-4-4-12 UUID string: what clients send, the only form the coalesced
    path accepts (in an array literal, braces or quotes of other forms would mean more),
    and a shortcut for argument binding (0.17 us; ``uuid.UUID`` takes 0.75 us)."""
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


@dataclass(slots=True)
class Identity:
    """Who is calling: the database role and the claims JSON for the transaction. Made
    anew from the token cache for every request and never changed: not ``frozen``, whose
    ``__init__`` sets each field through ``object.__setattr__`` (8,800 instructions a
    cache hit, against 2,400; callgrind)."""

    role: str
    claims: str
    expires: float | None = None
    # The anon role, with or without a token: 42501 is then 401, not 403 (PostgREST).
    anonymous: bool = False
    # The sub of an ``authenticated`` token when it is a canonical lower-case UUID, the
    # only identities the coalesced path accepts; None otherwise.
    user_id: str | None = None


# What the token cache keeps of an Identity: a plain tuple of strings, a float and a
# bool, which the garbage collector stops tracking (see ``Authenticator.identify``).
_Entry = tuple[str, str, float | None, bool, str | None]


class _CheckedSecretHS256(jwt.algorithms.HMACAlgorithm):
    """PyJWT's HS256, with its check of the secret done once per secret, not per token.

    PyJWT's ``HMACAlgorithm.prepare_key`` makes sure the secret is not an asymmetric key
    by trying to load it as a DER public key and as an X.509 certificate, on every
    ``decode``: 12 % of the shim's CPU in a 25,000-viewer join storm (py-spy), where every
    token is new. The secret is the configured one, so its answer is remembered (the
    check itself, and every refusal it raises, are PyJWT's)."""

    def __init__(self) -> None:
        super().__init__(jwt.algorithms.HMACAlgorithm.SHA256)
        self._prepared: dict[bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        raw = key.encode() if isinstance(key, str) else key
        prepared = self._prepared.get(raw)
        if prepared is None:
            prepared = super().prepare_key(raw)
            if len(self._prepared) < 8:  # the configured secret (and a test's)
                self._prepared[raw] = prepared
        return prepared


_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class _SegmentsPyJWS(jwt.PyJWS):
    """PyJWS whose segments are checked for junk in one C call.

    PyJWT 2.15 refuses a segment with a byte outside the base64url alphabet (its fix of
    GHSA-hxm8-2xgr-2p9m) by testing each byte in a generator expression: 470 Python steps
    for a Supabase-shaped token, 31 % of a token's verification (cProfile). The same
    refusals here: more than two ``=``, ``=`` on a segment whose length is not a multiple
    of 4, a length no base64 has, a byte outside the alphabet, an encoding that is not
    the canonical one."""

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        data = segment.rstrip(b"=")
        pad = len(segment) - len(data)
        if (
            pad > 2
            or (pad and len(segment) % 4)
            or len(data) % 4 == 1
            or data.translate(None, _BASE64URL)
        ):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
        except binascii.Error as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64.urlsafe_b64encode(decoded).rstrip(b"=") != data:  # not canonical
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


def _decoder() -> jwt.PyJWT:
    """A PyJWT of the Authenticator's own (the module-level one stays PyJWT's), with
    ``_SegmentsPyJWS`` for its segments and ``_CheckedSecretHS256`` as its HS256."""
    decoder = jwt.PyJWT()
    # PyJWT keeps its PyJWS here (its version is pinned); the same options.
    jws = decoder._jws = _SegmentsPyJWS(options=decoder._jws.options)
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _CheckedSecretHS256())
    return decoder


# Token headers (their first segment) seen before, parsed: a project signs every token
# with one or a few headers, and PyJWT's get_unverified_header costs 8 % of the shim's
# CPU in a join storm (py-spy). Bounded; malformed headers are never kept.
_HEADERS_KEPT = 64


def _digest(token: str) -> bytes:
    """The token cache's key of ``token`` (module doc)."""
    return hashlib.blake2b(token.encode("latin-1", "replace"), digest_size=16).digest()


def _anon_claims(role: str) -> str:
    return json.dumps({"role": role})


def load_jwks(data: dict[str, Any]) -> dict[str | None, jwt.PyJWK]:
    """Usable asymmetric keys of a JWKS by kid; symmetric and unknown types are dropped."""
    keys: dict[str | None, jwt.PyJWK] = {}
    for raw in data.get("keys", []):
        if raw.get("kty") not in ("RSA", "EC"):
            continue
        try:
            key = jwt.PyJWK(raw)
        except jwt.PyJWKError as exc:
            log.warning("JWKS key %s skipped: %s", raw.get("kid"), exc)
            continue
        if key.algorithm_name in _ASYMMETRIC:
            keys[key.key_id] = key
    return keys


class Authenticator:
    """Verifies bearer tokens against the configured secret and JWKS (see module doc)."""

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._anon = Identity(
            settings.anon_role, _anon_claims(settings.anon_role), None, anonymous=True
        )
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._cache: dict[bytes, _Entry] = {}
        self._last_fetch = float("-inf")
        self._fetch_lock = asyncio.Lock()
        self._roles = {r: r for r in settings.jwt_roles if r not in INTERNAL_ROLES}
        self._jwt = _decoder()
        self._headers: dict[str, dict[str, Any]] = {}
        # Plain ints (no lock): read by /metrics as eventlive_token_cache.
        self.cache_hits = 0
        self.cache_misses = 0
        self.jwks_fetches = 0

    @property
    def anon(self) -> Identity:
        """The identity of requests that carry no token."""
        return self._anon

    async def load_keys(self) -> None:
        """Read ``JWKS_FILE`` and fetch ``JWKS_URL`` (start-up; failures are logged)."""
        keys: dict[str | None, jwt.PyJWK] = {}
        if self._s.jwks_file:
            with open(self._s.jwks_file, encoding="utf-8") as fh:
                keys.update(load_jwks(json.load(fh)))
        self._keys = keys
        if self._s.jwks_url:
            await self._refetch(force=True)

    async def _refetch(self, force: bool = False) -> None:
        async with self._fetch_lock:
            now = time.monotonic()
            if not force:
                # Only on-demand refetches count against the rate limit: a key rotated
                # just after start is still picked up by the first token that uses it.
                if now - self._last_fetch < self._s.jwks_refetch_seconds:
                    return
                self._last_fetch = now
            assert self._s.jwks_url is not None
            self.jwks_fetches += 1
            try:
                async with httpx.AsyncClient(timeout=2.0) as client:
                    response = await client.get(self._s.jwks_url)
                    response.raise_for_status()
                    fetched = load_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch from %s failed: %s", self._s.jwks_url, exc)
                return
            self._keys = {**self._keys, **fetched}
            log.info("JWKS: %d keys from %s", len(fetched), self._s.jwks_url)

    def known(self, token: str | None) -> Identity | None:
        """``identify`` without waiting, when nothing is to verify: anon for no token, a
        cached token's identity (or its 401 once expired); None when ``token`` must be
        verified. The hot path calls it first: a coroutine per request less (2,500
        instructions; callgrind)."""
        if not token:
            return self._anon
        key = _digest(token)
        hit = self._cache.get(key)
        if hit is None:
            return None
        self.cache_hits += 1
        expires = hit[2]
        if expires is not None and expires + self._s.jwt_leeway < time.time():
            del self._cache[key]
            raise rejected("expired", "JWT expired")
        return Identity(*hit)

    async def identify(self, token: str | None) -> Identity:
        """The identity for ``token`` (None -> anon), or raise a 401 ``ApiError``."""
        found = self.known(token)
        if found is not None:
            return found
        assert token is not None
        self.cache_misses += 1
        identity = await self._verify(token)
        if self._s.token_cache <= 0:
            return identity
        if len(self._cache) >= self._s.token_cache:
            # Oldest first: dicts keep insertion order; cheap and bounded.
            del self._cache[next(iter(self._cache))]
        # A tuple of atoms, not the Identity: the collector untracks such tuples, so a
        # full collection does not walk the audience (300,000 Identity objects made
        # every full collection take 75 ms on this box; as tuples, 8 ms in all).
        self._cache[_digest(token)] = (
            identity.role,
            identity.claims,
            identity.expires,
            identity.anonymous,
            identity.user_id,
        )
        return identity

    def cached(self) -> int:
        """Tokens in the cache (tests and the memory measurement)."""
        return len(self._cache)

    async def _key_for(self, alg: str, kid: str | None) -> Any:
        if alg == "HS256":
            if not self._s.jwt_secret:
                raise rejected("bad_algorithm", "HS256 tokens are not accepted here")
            return self._s.jwt_secret
        if alg not in _ASYMMETRIC:
            raise rejected("bad_algorithm", f"Algorithm {alg!r} is not allowed")
        key = self._find(alg, kid)
        if key is None and self._s.jwks_url:
            await self._refetch()
            key = self._find(alg, kid)
        if key is None:
            raise rejected("unknown_kid", "No key matches the token's kid")
        return key.key

    def _find(self, alg: str, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            key = self._keys.get(kid)
        else:
            candidates = [k for k in self._keys.values() if k.algorithm_name == alg]
            key = candidates[0] if len(candidates) == 1 else None
        if key is not None and key.algorithm_name != alg:
            raise rejected("bad_algorithm", "The token's algorithm does not match its key")
        return key

    async def _verify(self, token: str) -> Identity:
        header = self._header(token)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise rejected("bad_algorithm", "JWT has no algorithm")
        kid = header.get("kid")
        key = await self._key_for(alg, kid if isinstance(kid, str) else None)
        try:
            payload: dict[str, Any] = self._jwt.decode(
                token,
                key,
                algorithms=[alg],
                leeway=self._s.jwt_leeway,
                options={"verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise rejected("expired", "JWT expired") from None
        except jwt.ImmatureSignatureError:
            raise rejected("not_yet_valid", "JWT not yet valid") from None
        except jwt.InvalidSignatureError:
            raise rejected("bad_signature", "JWT signature is invalid") from None
        except jwt.DecodeError:  # segments, padding or JSON (the header came from the memo)
            raise rejected("malformed", "JWT could not be decoded") from None
        except jwt.InvalidTokenError as exc:
            raise rejected("invalid", f"JWT invalid: {exc}") from None
        self._check_audience(payload)
        self._check_issuer(payload)
        claimed = payload.get("role", self._s.anon_role)
        role = self._roles.get(claimed) if isinstance(claimed, str) else None
        if role is None:
            raise rejected("bad_role", "JWT role is not allowed")
        exp = payload.get("exp")
        sub = payload.get("sub")
        return Identity(
            role,
            json.dumps(payload, separators=(",", ":")),
            # PyJWT checked int(exp) (it takes "1700000000" too): the cache honours the same.
            None if exp is None else int(exp),
            anonymous=role == self._s.anon_role,
            user_id=sub if role == "authenticated" and canonical_uuid(sub) else None,
        )

    def _header(self, token: str) -> dict[str, Any]:
        """The token's header as PyJWT parses it, or a 401 ``malformed``."""
        segment = token.partition(".")[0]
        header = self._headers.get(segment)
        if header is not None:
            return header
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # DecodeError, or a header PyJWT refuses (kid: {})
            raise rejected("malformed", "JWT could not be decoded") from None
        if len(self._headers) < _HEADERS_KEPT:
            self._headers[segment] = header
        return header

    def _check_audience(self, payload: dict[str, Any]) -> None:
        # PostgREST: a token without aud passes; one with aud must name ours.
        expected = self._s.jwt_aud
        if not expected or "aud" not in payload:
            return
        aud = payload["aud"]
        if aud == expected or (isinstance(aud, list) and expected in aud):
            return
        raise rejected("bad_audience", "JWT audience is not accepted")

    def _check_issuer(self, payload: dict[str, Any]) -> None:
        # Like aud: a token without iss passes; one with iss must name one of JWT_ISS.
        allowed = self._s.jwt_iss
        if not allowed or "iss" not in payload:
            return
        iss = payload["iss"]
        if isinstance(iss, str) and iss in allowed:
            return
        raise rejected("bad_issuer", "JWT issuer is not accepted")
