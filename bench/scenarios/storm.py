"""4. Join storm: N viewers (never registered) call track_access at uniform random
moments within T seconds, a fraction of them twice at the same moment (two tabs); each
then sends its first presence_ping at the first_ping_in the server returned, divided by
``compress`` (time compression, stated in the report). The same storm hits the old
design (its own tables), whose answers say first_ping_in = 120 (its fixed heartbeat)."""

from __future__ import annotations

from typing import Any

from bench import drivers, stats
from bench.env import W_STORM, W_STORM_BIG


def storm(
    ctx: Any, target: str, port: int, count_sql: str, *, viewers: int = 0, webinar: int = W_STORM
) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    viewers = viewers or cfg.storm_viewers
    world.settle()
    spec = {
        "mode": "storm", "host": "127.0.0.1", "port": port,
        "viewers": str(world.viewers_file("storm", viewers)), "webinar": webinar,
        "window": cfg.storm_window,
        "double_fraction": cfg.storm_doubles, "compress": cfg.storm_compress,
        "heartbeat": 120, "max_connections": cfg.storm_connections, "drain": cfg.storm_drain,
    }  # fmt: skip
    with world.cpu() as meter:
        raw = drivers.run_python(spec, world.out / "work", f"storm-{target}")
    track = stats.summarize(raw["rows"], cfg.storm_window, "track")
    ping = stats.summarize(raw["rows"], raw["elapsed"], "ping")
    registrations = int(world.sql(count_sql, (webinar,))[0][0])
    per_second: dict[int, list[float]] = {}
    for kind, at, lat, *_rest in raw["rows"]:
        if kind == "track":
            per_second.setdefault(int(at), []).append(float(lat))
    timeline = [
        {"second": s, "calls": len(v), "p99_ms": round(stats.percentile(sorted(v), 99), 2)}
        for s, v in sorted(per_second.items())
    ]
    res = {
        "target": target, "viewers": viewers, "window_s": cfg.storm_window,
        "doubles": raw["extra"].get("doubles", 0), "track": track, "ping": ping,
        "registrations": registrations, "facts": raw["extra"], "timeline": timeline,
        "compress": cfg.storm_compress, "cpu_cores": meter.split,
    }  # fmt: skip
    ctx.log(
        f"storm {target}: track {track['statuses']} p99 {track['p99_ms']} ms; "
        f"ping {ping['statuses']}; registrations {registrations}"
    )
    return res


def run(ctx: Any) -> dict[str, Any]:
    out = [
        storm(
            ctx, "shim", ctx.world.procs["shim"].port,
            "select count(*) from eventlive.registrations where webinar_id = %s",
        )
    ]  # fmt: skip
    if ctx.cfg.storm_big:
        # The knee: a larger crowd in the same window, reported whatever it gives.
        out.append(
            storm(
                ctx, "shim", ctx.world.procs["shim"].port,
                "select count(*) from eventlive.registrations where webinar_id = %s",
                viewers=ctx.cfg.storm_big, webinar=W_STORM_BIG,
            )
        )  # fmt: skip
    delay = ctx.cfg.old_delays[0]
    proxy = ctx.world.start_old(delay)
    out.append(
        storm(
            ctx, f"old ({delay:g} ms auth)", proxy.port,
            "select count(*) from legacy.registrations where webinar_id = %s",
        )
    )  # fmt: skip
    ctx.world.stop_old()
    return {"runs": out}
