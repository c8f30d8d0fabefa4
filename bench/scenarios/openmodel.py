"""2/3. Open model: presence_ping at fixed offered rates (fractions of each target's
closed-loop maximum, rising until the server falls behind: p99 > 1 s, errors, or under
90 % of the rate answered), latency from the scheduled send time (overload shows as
latency). The Python generator (bench.loadgen) drives it: wrk cannot hold a fixed rate."""

from __future__ import annotations

from typing import Any

from bench import drivers, stats
from bench.env import W_CEIL


def sweep(ctx: Any, target: str, port: int, top_rps: float) -> list[dict[str, Any]]:
    world, cfg = ctx.world, ctx.cfg
    out = []
    for frac in cfg.open_fractions:
        world.settle()
        rate = max(10.0, round(top_rps * frac))
        spec = {
            "mode": "open", "host": "127.0.0.1", "port": port, "rate": rate,
            "duration": cfg.open_seconds, "viewers": str(world.files["ceiling"]),
            "webinar": W_CEIL, "max_connections": 256,
        }  # fmt: skip
        raw = drivers.run_python(spec, world.out / "work", f"open-{target}-{frac}")
        res = stats.summarize(raw["rows"], cfg.open_seconds)
        res.update(target=target, offered_rps=rate, fraction_of_closed_max=frac)
        ctx.log(
            f"open {target} {rate}/s: p50 {res['p50_ms']} p99 {res['p99_ms']} ms {res['statuses']}"
        )
        out.append(res)
        if res["p99_ms"] > 1000 or stats.ok_fraction(res) < 0.99 or res["rps"] < 0.9 * rate:
            break  # past the knee: higher rates only queue more
    return out


def run(ctx: Any) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": []}
    shim_max = ctx.best_closed("shim", "ping")
    if shim_max:
        results["runs"] += sweep(ctx, "shim", ctx.world.procs["shim"].port, shim_max)
    delay = ctx.cfg.old_delays[0]
    old_target = f"old ({delay:g} ms auth)"
    old_max = ctx.best_closed(old_target, "ping")
    if old_max:
        proxy = ctx.world.start_old(delay)
        results["runs"] += sweep(ctx, old_target, proxy.port, old_max)
        ctx.world.stop_old()
    return results
