"""8. Behind a transaction pooler: closed-loop pings through PgBouncer (``pool_mode =
transaction``, Debian's ``pgbouncer``, on loopback in front of the bench's server) ÷ the
same pings direct, in one run: the shim restarted with ``DATABASE_URL`` through PgBouncer
and ``EVENTLIVE_LISTEN_URL`` direct (docs/deployment.md), then again direct; the same
viewers, connections and duration. Statements are unprepared through it (the shim's
start-up probe says it is a transaction pooler); the figure includes that and the hop.
Skipped, saying so, without the pgbouncer binary."""

from __future__ import annotations

from typing import Any

from bench.scenarios import closed
from shim.testing.pgbouncer import PgBouncer, find_pgbouncer


def run(ctx: Any) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    if find_pgbouncer() is None:
        return {"skipped": "pgbouncer is not installed (apt-get install pgbouncer)"}
    connections = max(cfg.closed_connections)
    server = world.server
    users = {"authenticator": None}
    out: dict[str, Any] = {}
    with PgBouncer(server.host, server.port, users, pool_size=2 * world.pool_max) as bouncer:
        if bouncer.proc is not None:  # its own session: its pid is its process group
            world.cpu_groups[bouncer.proc.pid] = "pgbouncer"
        try:
            env = {
                "DATABASE_URL": bouncer.dsn(world.auth_dsn()),
                "EVENTLIVE_LISTEN_URL": world.auth_dsn(),
            }
            port = world.restart_shim(world.workers, env).port
            ctx.log(f"shim through PgBouncer (transaction mode, port {bouncer.port}) on {port}")
            out["pgbouncer"] = closed.measure(ctx, "shim via PgBouncer", port, "ping", connections)
        finally:
            world.cpu_groups.clear()
            port = world.restart_shim(world.workers).port
    out["direct"] = closed.measure(ctx, "shim direct", port, "ping", connections)
    direct, pooled = out["direct"]["rps"], out["pgbouncer"]["rps"]
    out["ratio"] = round(pooled / direct, 3) if direct else None
    ctx.log(f"pings/s through PgBouncer / direct: {out['ratio']}")
    return out
