"""Workers: ``eventlive serve`` with one, two and four processes, side by side in one run.

Per worker count, everything else as shipped: closed-loop presence_ping and track_access
at the largest closed-loop concurrency, then a join storm of the configured size on a
webinar of its own (the same first-time viewers). The shim of the other scenarios (the
``--workers`` count) is started again at the end. The report compares them
(docs/deployment.md turns them into the default of ``eventlive serve`` and a 16-core
host's advice).
"""

from __future__ import annotations

from typing import Any

from bench.env import W_STORM_WORKERS
from bench.scenarios import closed, storm

COUNTS = (1, 2, 4)
_REGISTRATIONS = "select count(*) from eventlive.registrations where webinar_id = %s"


def run(ctx: Any) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    connections = max(cfg.closed_connections)
    out = []
    try:
        for workers in COUNTS:
            port = world.restart_shim(workers).port
            ctx.log(f"shim restarted with {workers} worker(s) on port {port}")
            target = f"shim, {workers} worker(s)"
            out.append(
                {
                    "workers": workers,
                    "ping": closed.measure(ctx, target, port, "ping", connections),
                    "track": closed.measure(ctx, target, port, "track", connections),
                    "storm": storm.storm(
                        ctx, target, port, _REGISTRATIONS, webinar=W_STORM_WORKERS[workers]
                    ),
                }
            )
    finally:
        world.restart_shim(world.workers)
    return {"runs": out}
