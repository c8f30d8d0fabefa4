"""2/3. Closed loop (maximum throughput): the shim and the old design, the same
requests (each viewer's own JWT and session id, legacy routes that both serve), the
same connection counts. wrk when installed, else the Python generator (stated).
Statements per call come from pg_stat_statements (calls delta / answered requests)."""

from __future__ import annotations

from typing import Any

from bench import drivers
from bench.env import W_CEIL

PATHS = {
    "ping": f"/api/webinars/{W_CEIL}/presence/ping",
    "track": f"/api/webinars/{W_CEIL}/access/track",
}


def measure(ctx: Any, target: str, port: int, call: str, connections: int) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    world.settle()
    world.reset_statements()
    with world.cpu() as meter:
        if cfg.use_wrk:
            res = drivers.run_wrk(
                port, PATHS[call], world.files["ceiling"],
                connections=connections, duration=cfg.closed_seconds,
            )  # fmt: skip
        else:
            res = drivers.python_closed(
                port, call, world.files["ceiling"], W_CEIL, connections=connections,
                duration=cfg.closed_seconds, work=world.out / "work", name=f"closed-{target}-{call}",
            )  # fmt: skip
    res["cpu_cores"] = meter.split
    res["cpu_saturation"] = meter.saturation
    calls = world.statement_calls()
    res["statements_per_call"] = (
        round(calls / res["answered"], 2) if res["answered"] and calls >= 0 else None
    )
    res.update(target=target, call=call, connections=connections)
    ctx.log(
        f"closed {target} {call} c={connections}: {res['rps']:.0f} rps p99 {res['p99_ms']} ms "
        f"statuses {res['statuses']} stmts/call {res['statements_per_call']}"
    )
    return res


def run_shim(ctx: Any) -> dict[str, Any]:
    port = ctx.world.procs["shim"].port
    runs = [
        measure(ctx, "shim", port, call, c)
        for call in ("ping", "track")
        for c in ctx.cfg.closed_connections
    ]
    return {"runs": runs, "tool": runs[0]["tool"] if runs else None}


def run_old(ctx: Any) -> dict[str, Any]:
    runs = []
    for delay in ctx.cfg.old_delays:
        proxy = ctx.world.start_old(delay)
        for call in ("ping", "track"):
            for c in ctx.cfg.old_connections:
                res = measure(ctx, f"old ({delay:g} ms auth)", proxy.port, call, c)
                res["auth_delay_ms"] = delay
                runs.append(res)
    ctx.world.stop_old()
    return {"runs": runs}
