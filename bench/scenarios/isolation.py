"""Tenant isolation (issue #19): one webinar's storm never reaches another.

Webinar Q has ``iso_q`` pre-entered viewers sending ``iso_rate`` heartbeats per second
(open model, fixed rate, latency from the scheduled send), every ``TRACK_EVERY``-th call a
track_access re-confirmation with the viewer's session id. Q's heartbeat is 15 s (bench/env.py),
so its pings write: one viewer's calls are ``iso_q / iso_rate`` seconds apart (5 s in the
full run), more than the 3.75 s ping throttle.

Q is measured alone (``iso_alone_seconds``), then while webinar S gets a join storm of
``iso_s`` never-registered viewers (track_access without a session id at uniform moments
within the storm window, each then pinging at its first_ping_in divided by the storm's
compression): the join storm's own generator spec (``storm.spec``) and summary
(``storm.summarize``), without the doubles (S's figure is first entries). The two
generators are separate processes started together (``start_at``): Q's latencies are not
delayed by the storm's event loop, and Q runs for the whole storm (its window plus the
ping spread). Q's figures are also given for the entry window alone, the storm's peak,
and the shim's event-loop lag over each run (``eventlive_loop_lag_seconds``: the share of
its samples late by more than 10, 50, 100 ms), what a heartbeat read then waits for.
"""

from __future__ import annotations

import time
from typing import Any

from bench import drivers, stats
from bench.env import W_ISO_Q, W_ISO_S
from bench.scenarios import storm

TRACK_EVERY = 20
# Q's viewers are in the room: their connections are open before S's storm starts, as a
# browser's keep-alive connection is (the generator's pool of them is opened before its
# clock starts, not while the storm makes every new connection wait for the shim).
Q_CONNECTIONS = 256
START_LEAD = 2.0  # seconds for both generators to load their viewers and open connections
# The shim's event-loop lag (a 0.1 s timer's lateness, every worker's samples): how long a
# request read by a worker waited for its turn there.
LOOP_LAG = "eventlive_loop_lag_seconds"
LAG_BOUNDS = (0.01, 0.05, 0.1)
_REGISTRATIONS = "select count(*) from eventlive.registrations where webinar_id = %s"


def q_spec(ctx: Any, duration: float, start_at: float | None = None) -> dict[str, Any]:
    """Webinar Q's heartbeats: open model at ``iso_rate``, a re-track every 20th call."""
    world, cfg = ctx.world, ctx.cfg
    return {
        "mode": "open", "host": "127.0.0.1", "port": world.procs["shim"].port,
        "rate": cfg.iso_rate, "duration": duration, "viewers": str(world.files["iso_q"]),
        "webinar": W_ISO_Q, "track_every": TRACK_EVERY, "max_connections": Q_CONNECTIONS,
        "prewarm": Q_CONNECTIONS, "start_at": start_at,
    }  # fmt: skip


def q_summary(raw: dict[str, Any], duration: float, until: float | None = None) -> dict[str, Any]:
    """Q's calls (scheduled before ``until`` when given): all, pings, re-tracks; errors =
    every answer that is not 2xx, no answer included."""
    rows = [r for r in raw["rows"] if until is None or r[1] < until]
    seconds = min(duration, until) if until is not None else duration
    out = stats.summarize(rows, seconds)
    out["errors"] = out["requests"] - sum(
        n for s, n in out["statuses"].items() if s.startswith("2")
    )
    out["ping"] = stats.summarize(rows, seconds, "ping")
    out["track"] = stats.summarize(rows, seconds, "track")
    per_second: dict[int, list[float]] = {}
    for _kind, at, lat, *_rest in rows:
        per_second.setdefault(int(at), []).append(float(lat))
    out["timeline"] = [
        {"second": s, "calls": len(v), "p99_ms": round(stats.percentile(sorted(v), 99), 2)}
        for s, v in sorted(per_second.items())
    ]
    return out


def run(ctx: Any) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    r = world.ranges
    work = world.out / "work"

    world.present_again(W_ISO_Q, r.iso_q_start, r.iso_q)
    lag_before = world.shim_buckets(LOOP_LAG)
    with world.cpu() as meter:
        raw = drivers.run_python(q_spec(ctx, cfg.iso_alone_seconds), work, "iso-q-alone")
    alone = q_summary(raw, cfg.iso_alone_seconds)
    alone["loop_lag"] = stats.over_bounds(lag_before, world.shim_buckets(LOOP_LAG), LAG_BOUNDS)
    alone["cpu_cores"] = meter.split
    alone["cpu_saturation"] = meter.saturation
    ctx.log(
        f"isolation: Q alone {cfg.iso_rate:g}/s: p50 {alone['p50_ms']} p99 {alone['p99_ms']} ms "
        f"{alone['statuses']}"
    )

    world.settle()
    world.present_again(W_ISO_Q, r.iso_q_start, r.iso_q)
    during_s = cfg.storm_window + 120 / cfg.storm_compress
    start_at = time.time() + START_LEAD
    s_spec = storm.spec(ctx, world.procs["shim"].port, world.files["iso_s"], W_ISO_S, start_at)
    s_spec["double_fraction"] = 0.0  # first entries only
    lag_before = world.shim_buckets(LOOP_LAG)
    with world.cpu() as meter:
        q_raw, s_raw = drivers.run_python_together(
            [(q_spec(ctx, during_s, start_at), "iso-q-during"), (s_spec, "iso-s-storm")], work
        )
    during = q_summary(q_raw, during_s)
    during["loop_lag"] = stats.over_bounds(lag_before, world.shim_buckets(LOOP_LAG), LAG_BOUNDS)
    during["cpu_cores"] = meter.split
    during["cpu_saturation"] = meter.saturation
    entries = q_summary(q_raw, during_s, until=cfg.storm_window)
    s = storm.summarize(
        ctx, s_raw, target="shim", webinar=W_ISO_S, count_sql=_REGISTRATIONS, viewers=r.iso_s
    )
    s["cpu_cores"] = meter.split
    s["cpu_saturation"] = meter.saturation
    ctx.log(
        f"isolation: Q during S's storm: p50 {during['p50_ms']} p99 {during['p99_ms']} ms "
        f"{during['statuses']}; S track {s['track']['statuses']} p99 {s['track']['p99_ms']} ms, "
        f"registrations {s['registrations']}"
    )
    return {
        "q_viewers": r.iso_q,
        "q_rate": cfg.iso_rate,
        "track_every": TRACK_EVERY,
        "alone": alone,
        "during": during,
        "during_entries": entries,
        "s": s,
        "start_skew_s": round(abs(q_raw["started_wall"] - s_raw["started_wall"]), 3),
    }
