"""5. Steady state: V viewers at their real intervals (ping every 120 s, re-track every
300 s: V/120 + V/300 calls/s, 71 % pings, 29 % tracks), open model. No time
compression: the rate is real, and viewers are visited in a shuffled round robin over a
pool of V pre-entered viewers, so one viewer's calls are V/rate (~86 s) apart and every
ping writes (the 30 s throttle does not flatter it). The largest V with p99 < 100 ms, no
error and the offered rate achieved: doubling, then bisection.

Before the search, viewers ping once (closed loop, ``warm_up``): a viewer of a steady
audience has pinged before, so the shim's token cache holds its token. Without this, a
10 s probe meets mostly first-seen tokens (it visits only ~12 % of V) and measures JWT
verification, which the join storm measures. Warmed: the first min(pool, cache) viewers,
cache = the shim's ``token_cache`` setting as it runs (``EVENTLIVE_TOKEN_CACHE``, per
worker), because the cache evicts the oldest entry first: warming more would only push out
the first viewers again, which every probe draws from. Warmed last line first, so that
the misses of a probe with V above the cache push out the viewers nearest the cache's
size, not those of the smaller probes that bisection sends next. Such a probe meets
misses (its hit share, from the shim's ``/metrics``, is in the result); a real audience
that large, pinging in a cycle, would miss more often than that."""

from __future__ import annotations

import os
import time
from typing import Any

from bench import drivers, stats
from bench.env import W_STEADY
from shim.http.settings import Settings

PER_VIEWER = 1 / 120 + 1 / 300
TRACK_SHARE = (1 / 300) / PER_VIEWER


def probe(ctx: Any, viewers: int, n: int) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    rate = viewers * PER_VIEWER
    world.settle()
    t = time.perf_counter()
    world.present_again(W_STEADY, world.ranges.steady_start, viewers)
    present_s = round(time.perf_counter() - t, 1)
    spec = {
        "mode": "open", "host": "127.0.0.1", "port": world.procs["shim"].port,
        "rate": rate, "duration": cfg.steady_seconds, "viewers": str(world.files["steady"]),
        "limit": viewers, "seed": n, "webinar": W_STEADY, "mix_track": TRACK_SHARE,
        "max_connections": 256,
    }  # fmt: skip
    cache_before = world.shim_counter("eventlive_token_cache")
    with world.cpu() as meter:
        raw = drivers.run_python(spec, world.out / "work", f"steady-{viewers}")
    cache = _delta(world.shim_counter("eventlive_token_cache"), cache_before)
    res = stats.summarize(raw["rows"], cfg.steady_seconds)
    hits, misses = cache.get('result="hit"'), cache.get('result="miss"')
    res["token_cache"] = {"hits": hits, "misses": misses}
    res["ping"] = stats.summarize(raw["rows"], cfg.steady_seconds, "ping")
    res["track"] = stats.summarize(raw["rows"], cfg.steady_seconds, "track")
    res.update(
        viewers=viewers,
        offered_rps=round(rate, 1),
        cpu_cores=meter.split,
        cpu_saturation=meter.saturation,
        present_s=present_s,
    )
    res["passed"] = (
        res["p99_ms"] < 100 and stats.ok_fraction(res) == 1.0 and res["rps"] >= 0.95 * rate
    )
    ctx.log(
        f"steady V={viewers} ({rate:.0f}/s): p99 {res['p99_ms']} ms {res['statuses']} passed={res['passed']}"
    )
    return res


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: round(v - before.get(k, 0.0)) for k, v in after.items()}


def token_cache_size() -> int:
    """The shim's token cache per worker as the bench starts it (its setting's default,
    or ``EVENTLIVE_TOKEN_CACHE`` from this environment, which the shim inherits)."""
    return Settings.from_env(os.environ).token_cache


def warm_up(ctx: Any, pool: int) -> dict[str, Any]:
    """One ping per viewer of the first min(pool, token cache), closed loop: their tokens
    in the shim's cache."""
    world = ctx.world
    cache = token_cache_size()
    n = min(pool, cache) if cache > 0 else 0
    world.settle()
    world.present_again(W_STEADY, world.ranges.steady_start, n)
    spec = {
        "mode": "closed", "host": "127.0.0.1", "port": world.procs["shim"].port,
        "connections": 64, "duration": 600, "count": n, "call": "ping",
        "viewers": str(world.files["steady"]), "limit": n, "webinar": W_STEADY,
        "descending": True,
    }  # fmt: skip
    raw = drivers.run_python(spec, world.out / "work", "steady-warm-up") if n else None
    rows = raw["rows"] if raw else []
    res = stats.summarize(rows, raw["elapsed"] if raw else 0.0)
    out = {
        "pings": len(rows),
        "seconds": round(raw["elapsed"], 1) if raw else 0.0,
        "statuses": res["statuses"],
        "token_cache": cache,
    }
    ctx.log(f"steady warm-up: {out['pings']} pings in {out['seconds']} s {out['statuses']}")
    return out


def run(ctx: Any) -> dict[str, Any]:
    cfg = ctx.cfg
    pool = ctx.world.ranges.steady
    warm = warm_up(ctx, pool)
    probes = []
    v = min(cfg.steady_start, pool)
    good, bad = 0, None
    while True:
        res = probe(ctx, v, len(probes))
        probes.append(res)
        if res["passed"]:
            good = v
            if v >= pool:
                break
            v = min(v * 2, pool)
        else:
            bad = v
            break
    while not good and v > 1000:  # even the first probe failed: halve until one passes
        v //= 2
        res = probe(ctx, v, len(probes))
        probes.append(res)
        if res["passed"]:
            good = v
        else:
            bad = v
    steps = 0
    while (
        bad is not None
        and good
        and steps < cfg.steady_bisect
        and bad - good > max(1000, good // 10)
    ):
        v = (good + bad) // 2
        res = probe(ctx, v, len(probes))
        probes.append(res)
        if res["passed"]:
            good = v
        else:
            bad = v
        steps += 1
    return {
        "warm_up": warm,
        "probes": probes,
        "best_viewers": good,
        "best_rps": round(good * PER_VIEWER, 1),
        "limited_by_pool": bad is None,
        "pool": pool,
        "per_viewer_rps": PER_VIEWER,
    }
