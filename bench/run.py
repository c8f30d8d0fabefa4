"""``python -m bench [--quick] [--out DIR]``: the whole benchmark, one command.

Starts a throwaway PostgreSQL (shim.pg.embedded), migrates it, seeds the bench's webinars
and viewers, starts the shim (uvicorn, separate process) and the old design (its API
app and a proxy hop, separate processes), runs the scenarios and writes
``report.md``, ``results.json`` and PNG charts to ``--out`` (default
``bench/results/runs/<UTC time>``). Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import drivers, report
from bench.env import REPO, Ranges, World
from bench.scenarios import (
    ceiling,
    closed,
    isolation,
    openmodel,
    pollers,
    pooler,
    profile,
    steady,
    storm,
    workers,
)


@dataclass
class Config:
    """Sizes and durations of one run (``full()`` and ``quick()``)."""

    name: str
    ceiling_pool: int
    storm_viewers: int
    steady_pool: int
    pgbench_clients: list[int]
    pgbench_modes: list[str]
    pgbench_seconds: float
    closed_connections: list[int]
    old_connections: list[int]
    closed_seconds: float
    old_delays: list[float]
    open_fractions: list[float]
    open_seconds: float
    storm_window: float
    storm_doubles: float
    storm_compress: float
    storm_connections: int
    storm_drain: float
    steady_start: int
    steady_seconds: float
    steady_bisect: int
    poller_counts: list[int]
    poller_seconds: float
    poller_viewer_rps: float
    profile: bool = False
    profile_seconds: float = 10
    workers: int = 1
    pool_max: int = 10
    use_wrk: bool = True
    loadgen: str = "auto"
    storm_big: int = 0  # a second, larger join storm (same window), its own target
    # tenant isolation: Q's pre-entered viewers and heartbeats/s, Q alone for that long,
    # S's storm of first entries (in storm_window, compressed as the join storm)
    iso_q_viewers: int = 0
    iso_rate: float = 0.0
    iso_alone_seconds: float = 0.0
    iso_storm: int = 0

    @classmethod
    def full(cls) -> Config:
        return cls(
            name="full",
            ceiling_pool=40_000,
            storm_viewers=10_000,
            steady_pool=600_000,
            pgbench_clients=[2, 8, 32],
            pgbench_modes=["prepared", "pipeline", "strict"],
            pgbench_seconds=8,
            closed_connections=[4, 16, 64],
            old_connections=[16, 64],
            closed_seconds=8,
            old_delays=[30.0, 0.0],
            open_fractions=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0],
            open_seconds=8,
            storm_window=10,
            storm_doubles=0.2,
            storm_compress=12,
            storm_connections=512,
            storm_drain=30,
            steady_start=25_000,
            steady_seconds=10,
            steady_bisect=3,
            poller_counts=[1, 10, 100, 1000],
            poller_seconds=30,
            poller_viewer_rps=300,
            profile=True,
            storm_big=25_000,
            iso_q_viewers=2_000,
            iso_rate=400,
            iso_alone_seconds=10,
            iso_storm=20_000,
        )

    @classmethod
    def quick(cls) -> Config:
        return cls(
            name="quick",
            ceiling_pool=4_000,
            storm_viewers=400,
            steady_pool=12_000,
            pgbench_clients=[8],
            pgbench_modes=["prepared", "pipeline", "strict"],
            pgbench_seconds=2,
            closed_connections=[32],
            old_connections=[32],
            closed_seconds=2,
            old_delays=[30.0, 0.0],
            open_fractions=[0.5, 1.1],
            open_seconds=2,
            storm_window=2,
            storm_doubles=0.2,
            storm_compress=60,
            storm_connections=256,
            storm_drain=6,
            steady_start=3_000,
            steady_seconds=2,
            steady_bisect=1,
            poller_counts=[1, 10, 100],
            poller_seconds=5,
            poller_viewer_rps=100,
            storm_big=600,
            iso_q_viewers=200,
            iso_rate=40,
            iso_alone_seconds=2,
            iso_storm=400,
        )


@dataclass
class Context:
    world: World
    cfg: Config
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def log(self, line: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {line}", flush=True)

    def best_closed(self, target: str, call: str) -> float:
        """The best closed-loop rps of ``target`` for ``call`` measured so far (0 if none)."""
        runs = []
        for key in ("closed_shim", "closed_old"):
            runs += self.results.get(key, {}).get("runs", [])
        mine = [r["rps"] for r in runs if r["target"] == target and r["call"] == call]
        return max(mine, default=0.0)


SCENARIOS: list[tuple[str, str, Callable[[Context], dict[str, Any]]]] = [
    ("ceiling", "1. Ceiling (pgbench)", ceiling.run),
    ("closed_shim", "2. Shim, closed loop", closed.run_shim),
    ("profile", "Profile of the shim under load (py-spy)", profile.run),
    ("closed_old", "3. Old design, closed loop", closed.run_old),
    ("open", "2/3. Open model (fixed rates)", openmodel.run),
    ("storm", "4. Join storm", storm.run),
    ("isolation", "4b. Tenant isolation: webinar Q during S's storm", isolation.run),
    ("steady", "5. Steady state", steady.run),
    ("pollers", "6. Pollers", pollers.run),
    ("workers", "7. Workers: one, two and four processes", workers.run),
    ("pooler", "8. Behind a transaction pooler (PgBouncer / direct)", pooler.run),
]


def machine_facts() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
    }


def shipped_workers() -> int:
    """``eventlive serve``'s ``--workers`` when not given, read from its own parser."""
    from shim import cli  # noqa: PLC0415 - the CLI only for its defaults

    workers: int = cli._parser().parse_args(["serve"]).workers
    return workers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="eventlive benchmark: ceiling, shim, old design, join storm, "
        "steady state, pollers -> Markdown report with PNG charts.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, about a minute")
    parser.add_argument(
        "--out", type=Path, help="output directory (default bench/results/runs/<time>)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated scenarios to run: " + ",".join(k for k, _t, _f in SCENARIOS),
    )
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="closed-loop generator: wrk if installed (auto), or the Python one",
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep work/ (tokens, specs, process logs)"
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy the shim under load (default: on in the full run, off with --quick)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers of the shim and of each old-design process (default: eventlive "
        "serve's own default)",
    )
    parser.add_argument(
        "--old-auth-delay-ms",
        type=float,
        default=None,
        help="simulated auth-server lookup of the old design (default 30; 0 is also run)",
    )
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> Config:
    """The run's configuration from the command line (``SystemExit(2)`` when impossible)."""
    cfg = Config.quick() if args.quick else Config.full()
    cfg.workers = args.workers or shipped_workers()
    if args.profile is not None:
        cfg.profile = args.profile
    if args.old_auth_delay_ms is not None:
        cfg.old_delays = [args.old_auth_delay_ms, 0.0] if args.old_auth_delay_ms else [0.0]
    wrk = drivers.wrk_path()
    if args.loadgen == "wrk" and not wrk:
        print("error: --loadgen wrk but wrk is not installed", file=sys.stderr)
        raise SystemExit(2)
    cfg.use_wrk = bool(wrk) and args.loadgen != "python"
    cfg.loadgen = (
        "wrk" if cfg.use_wrk else
        "python (wrk not installed)" if not wrk else "python (--loadgen python)"
    )  # fmt: skip
    return cfg


def ranges(cfg: Config, only: set[str] | None) -> Ranges:
    """The viewers to seed: those of the scenarios that run (``--only`` seeds no 600,000
    steady-state viewers for a ceiling). The ceiling's are always there (``settle``)."""

    def size(n: int, *users: str) -> int:
        return n if only is None or only & set(users) else 0

    return Ranges(
        ceiling=cfg.ceiling_pool,
        storm=size(cfg.storm_viewers + cfg.storm_big, "storm", "workers"),
        steady=size(cfg.steady_pool, "steady", "pollers"),
        admins=size(max(cfg.poller_counts), "pollers"),
        iso_q=size(cfg.iso_q_viewers, "isolation"),
        iso_s=size(cfg.iso_storm, "isolation"),
    )


def run_scenarios(ctx: Context, only: set[str] | None) -> None:
    """Each scenario after the machine settled; one scenario's failure is recorded and the
    rest still run."""
    results = ctx.results
    for key, title, fn in SCENARIOS:
        if only is not None and key not in only:
            continue
        waited = ctx.world.settle()
        t = time.perf_counter()
        ctx.log(f"== {title} (settled in {waited} s)")
        try:
            results[key] = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - one scenario's failure is reported, the rest runs
            results["meta"]["scenarios_failed"][key] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        results.setdefault(key, {})["seconds"] = round(time.perf_counter() - t, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = configure(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or REPO / "bench" / "results" / "runs" / stamp).absolute()
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    world = World(
        out=out,
        ranges=ranges(cfg, only),
        workers=cfg.workers,
        pool_max=cfg.pool_max,
    )
    ctx = Context(world, cfg)
    results: dict[str, Any] = ctx.results
    results["meta"] = {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [".venv/bin/python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
        ),
        "config": asdict(cfg),
        "machine": machine_facts(),
        "shipped_workers": shipped_workers(),
        "scenarios_failed": {},
    }
    try:
        ctx.log(f"run {cfg.name}: output in {out}")
        world.start_db()
        ctx.log(f"PostgreSQL {world.facts['pg_version']} ({world.facts['pg_bindir']}) migrated")
        world.seed()
        ctx.log(f"seeded (db {world.facts['seed_s']} s, tokens {world.facts['tokens_s']} s)")
        world.start_shim()
        ctx.log(f"shim on port {world.procs['shim'].port} ({cfg.workers} worker(s))")
        run_scenarios(ctx, only)
    finally:
        results["meta"]["facts"] = world.facts
        results["meta"]["tools"] = drivers.tool_versions(world.facts.get("pg_bindir", ""))
        results["meta"]["duration_s"] = round(time.perf_counter() - ctx.started, 1)
        # peak memory (ru_maxrss: KiB on Linux): this process; its largest waited child
        # (a load generator, pgbench or a stopped shim)
        results["meta"]["facts"]["peak_rss_mib"] = {
            "bench": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "largest child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        }
        world.stop()
        if not args.keep_work:
            world.clean(keep_logs=bool(results["meta"]["scenarios_failed"]))
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report.write(out, results)
    ctx.log(f"report: {out / 'report.md'}")
    return 1 if results["meta"]["scenarios_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
