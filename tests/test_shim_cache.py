"""The single-flight cache on its own: one load for concurrent identical keys, errors
shared but not stored, expiry, bound, ETag comparison."""

from __future__ import annotations

import asyncio

import pytest

from shim.cache import SharedCache, etag_matches, etag_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_concurrent_identical_keys_load_once_and_errors_are_not_kept() -> None:
    cache = SharedCache(10)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return '{"n": 1}'

    results = await asyncio.gather(*(cache.get("k", 0, load) for _ in range(50)))
    assert calls == 1
    assert {how for _, how in results} == {"miss", "shared"}
    assert len({e.etag for e, _ in results}) == 1

    async def fail() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    outcomes = await asyncio.gather(
        *(cache.get("e", 5, fail) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert calls == 2
    with pytest.raises(ValueError, match="boom"):
        await cache.get("e", 5, fail)  # the error was not stored
    assert calls == 3


async def test_entries_live_ttl_seconds_and_the_cache_is_bounded() -> None:
    cache = SharedCache(2)

    async def load() -> str:
        return "x"

    _, how = await cache.get("a", 60, load)
    assert how == "miss"
    _, how = await cache.get("a", 60, load)
    assert how == "hit"
    _, how = await cache.get("z", 0, load)  # ttl 0: shared in flight only
    _, how = await cache.get("z", 0, load)
    assert how == "miss"
    for key in ("b", "c", "d"):
        await cache.get(key, 60, load)
    assert len(cache._entries) <= 2


def test_etag_comparison() -> None:
    tag = etag_of('{"a":1}')
    assert etag_matches(tag, tag)
    assert etag_matches(f'"other", W/{tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"other"', tag)
    assert etag_of(None) == etag_of("")
