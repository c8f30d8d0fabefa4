"""6. Pollers: 1, 10, 100 admins GET the access stats every 5 s (staggered) while
viewers heartbeat (open model). Database calls of api.access_stats from
pg_stat_statements (reset before each run) per 5 s interval, and p99 of the polls."""

from __future__ import annotations

from typing import Any

from bench import drivers, stats
from bench.env import W_STEADY

INTERVAL = 5.0


def run(ctx: Any) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    if not world.facts.get("pg_stat_statements"):
        return {"skipped": "pg_stat_statements is not available on this server"}
    out = []
    world.present_again(W_STEADY, world.ranges.steady_start, world.ranges.steady)
    for admins in cfg.poller_counts:
        world.settle()
        world.reset_statements()
        spec = {
            "mode": "pollers", "host": "127.0.0.1", "port": world.procs["shim"].port,
            "admins": str(world.files["admins"]), "admin_count": admins, "webinar": W_STEADY,
            "interval": INTERVAL, "duration": cfg.poller_seconds, "rate": cfg.poller_viewer_rps,
            "viewers": str(world.files["steady"]),
        }  # fmt: skip
        raw = drivers.run_python(spec, world.out / "work", f"pollers-{admins}")
        calls = world.statement_calls("%access_stats%")
        intervals = cfg.poller_seconds / INTERVAL
        res = {
            "admins": admins,
            "seconds": cfg.poller_seconds,
            "intervals": intervals,
            "db_calls": calls,
            "db_calls_per_interval": round(calls / intervals, 2),
            "stats": stats.summarize(raw["rows"], cfg.poller_seconds, "stats"),
            "ping": stats.summarize(raw["rows"], cfg.poller_seconds, "ping"),
        }
        ctx.log(
            f"pollers {admins}: {calls} db calls ({res['db_calls_per_interval']}/interval), "
            f"stats p99 {res['stats']['p99_ms']} ms {res['stats']['statuses']}"
        )
        out.append(res)
    return {"runs": out, "viewer_rps": cfg.poller_viewer_rps}
