"""4. Join storm: N viewers (never registered) call track_access at uniform random
moments within T seconds, a fraction of them twice at the same moment (two tabs); each
then sends its first presence_ping at the first_ping_in the server returned, divided by
``compress`` (time compression, stated in the report). The same storm hits the old
design (its own tables), whose answers say first_ping_in = 120 (its fixed heartbeat).

Two sizes in the full run, ``storm_viewers`` and ``storm_big`` (issue #19's 10,000 and
25,000, each with its own target in the report), each with viewers of its own whose
tokens the shim has not seen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import drivers, stats
from bench.env import W_STORM, W_STORM_BIG


def spec(
    ctx: Any, port: int, viewers_file: Path, webinar: int, start_at: float | None = None
) -> dict[str, Any]:
    """The generator's spec of a storm of the run's window, doubles and compression (the
    tenant-isolation scenario sends its own storm with it)."""
    cfg = ctx.cfg
    return {
        "mode": "storm", "host": "127.0.0.1", "port": port,
        "viewers": str(viewers_file), "webinar": webinar, "window": cfg.storm_window,
        "double_fraction": cfg.storm_doubles, "compress": cfg.storm_compress,
        "heartbeat": 120, "max_connections": cfg.storm_connections, "drain": cfg.storm_drain,
        "start_at": start_at,
    }  # fmt: skip


def summarize(
    ctx: Any, raw: dict[str, Any], *, target: str, webinar: int, count_sql: str, viewers: int
) -> dict[str, Any]:
    """A storm's outcome: track and ping summaries, registrations stored, p99 per second."""
    cfg = ctx.cfg
    track = stats.summarize(raw["rows"], cfg.storm_window, "track")
    ping = stats.summarize(raw["rows"], raw["elapsed"], "ping")
    registrations = int(ctx.world.sql(count_sql, (webinar,))[0][0])
    per_second: dict[int, list[float]] = {}
    for kind, at, lat, *_rest in raw["rows"]:
        if kind == "track":
            per_second.setdefault(int(at), []).append(float(lat))
    timeline = [
        {"second": s, "calls": len(v), "p99_ms": round(stats.percentile(sorted(v), 99), 2)}
        for s, v in sorted(per_second.items())
    ]
    return {
        "target": target, "viewers": viewers, "window_s": cfg.storm_window,
        "doubles": raw["extra"].get("doubles", 0), "track": track, "ping": ping,
        "registrations": registrations, "facts": raw["extra"], "timeline": timeline,
        "compress": cfg.storm_compress,
    }  # fmt: skip


def storm(
    ctx: Any,
    target: str,
    port: int,
    count_sql: str,
    *,
    viewers: int = 0,
    webinar: int = W_STORM,
    skip: int = 0,
) -> dict[str, Any]:
    """One storm of ``viewers`` (the storm file's lines after the first ``skip``: viewers
    whose tokens the shim has not seen yet) on ``webinar``."""
    world, cfg = ctx.world, ctx.cfg
    viewers = viewers or cfg.storm_viewers
    world.settle()
    path = world.viewers_file("storm", viewers, skip=skip)
    with world.cpu() as meter:
        raw = drivers.run_python(
            spec(ctx, port, path, webinar), world.out / "work", f"storm-{target}"
        )
    res = summarize(ctx, raw, target=target, webinar=webinar, count_sql=count_sql, viewers=viewers)
    res["cpu_cores"] = meter.split
    res["cpu_saturation"] = meter.saturation
    track, ping = res["track"], res["ping"]
    ctx.log(
        f"storm {target}: track {track['statuses']} p99 {track['p99_ms']} ms; "
        f"ping {ping['statuses']}; registrations {res['registrations']}"
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
        # A larger crowd in the same window (its own target); viewers after the first
        # storm's, so that its tokens too are first-seen by the shim.
        big = storm(
            ctx, "shim", ctx.world.procs["shim"].port,
            "select count(*) from eventlive.registrations where webinar_id = %s",
            viewers=ctx.cfg.storm_big, webinar=W_STORM_BIG, skip=ctx.cfg.storm_viewers,
        )  # fmt: skip
        big["size"] = "big"
        out.append(big)
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
