"""``python -m bench.faults [--quick] [--only ...]``: run the scenarios, print the table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any

from bench.faults.harness import Database
from bench.faults.results import FaultResult, fmt
from bench.faults.scenarios import (
    pool_exhausted,
    postgres_frozen,
    postgres_restart,
    shim_killed,
    stalled_clients,
)
from shim.pg.throwaway import TemporaryServer

# -- the command --------------------------------------------------------------------------

SCENARIOS = ("restart", "freeze", "exhaust", "stall", "kill")


@dataclass(frozen=True)
class Sizes:
    """Counts and durations of one run (``--quick`` is what the tests use)."""

    restart_viewers: int
    restart_rate: float
    freeze_viewers: int
    freeze_rate: float
    freeze_seconds: float
    db_timeout: float
    exhaust_viewers: int
    exhaust_rate: float
    slow_seconds: float
    stall_viewers: int
    stalled: int
    body_timeout: float | None
    storm_viewers: int


QUICK = Sizes(
    restart_viewers=600,
    restart_rate=150,
    freeze_viewers=600,
    freeze_rate=100,
    freeze_seconds=3,
    db_timeout=1.5,
    exhaust_viewers=500,
    exhaust_rate=150,
    slow_seconds=2,
    stall_viewers=200,
    stalled=20,
    body_timeout=1.0,
    storm_viewers=1500,
)
FULL = Sizes(
    restart_viewers=6000,
    restart_rate=300,
    freeze_viewers=6000,
    freeze_rate=150,
    freeze_seconds=30,
    db_timeout=10,  # the default
    exhaust_viewers=4000,
    exhaust_rate=300,
    slow_seconds=4,  # under the default statement_timeout (5 s): they finish, with 200
    stall_viewers=2000,
    stalled=200,
    body_timeout=None,  # the default
    storm_viewers=10_000,
)


async def run(sizes: Sizes, only: tuple[str, ...], out: Any = sys.stdout) -> list[FaultResult]:
    """Every chosen scenario on one throwaway server; one summary line each as it ends."""
    results: list[FaultResult] = []
    with TemporaryServer() as server:
        db = Database.create(server)
        s = sizes
        plan: list[tuple[str, Any]] = [
            (
                "restart",
                lambda: postgres_restart(
                    server, db, webinar=1, viewers=s.restart_viewers, rate=s.restart_rate,
                    mode="immediate",
                ),
            ),
            (
                "restart",
                lambda: postgres_restart(
                    server, db, webinar=2, viewers=s.restart_viewers, rate=s.restart_rate,
                    mode="fast",
                ),
            ),
            (
                "freeze",
                lambda: postgres_frozen(
                    server, db, webinar=3, viewers=s.freeze_viewers, rate=s.freeze_rate,
                    freeze=s.freeze_seconds, db_timeout=s.db_timeout,
                ),
            ),
            (
                "exhaust",
                lambda: pool_exhausted(
                    db, webinar=4, viewers=s.exhaust_viewers, rate=s.exhaust_rate, pool_max=4,
                    slow_calls=8, slow_seconds=s.slow_seconds,
                ),
            ),
            (
                "stall",
                lambda: stalled_clients(
                    db, webinar=5, viewers=s.stall_viewers, rate=s.exhaust_rate,
                    stalled=s.stalled, bound=(s.body_timeout or 10.0) + 5, body_timeout=s.body_timeout,
                ),
            ),
            ("kill", lambda: shim_killed(db, webinar=6, viewers=s.storm_viewers)),
        ]  # fmt: skip
        for name, scenario in plan:
            if name in only:
                result = await scenario()
                results.append(result)
                print(result.line(), file=out, flush=True)
    return results


def table(results: list[FaultResult]) -> str:
    """A Markdown table of the figures."""
    head = (
        "| fault | viewers | acknowledged | stored | lost | committed, unacknowledged "
        "| attempts by outcome | max error latency | fault | recovery | notes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r.name} | {r.viewers} | {r.acknowledged} | {r.stored} | {r.lost} | "
        f"{r.committed_unacknowledged} | "
        + " ".join(f"{k}:{v}" for k, v in sorted(r.outcomes.items()))
        + f" | {r.max_error_latency:.3f} s (shim {r.max_error_server:.3f} s;"
        + f" {r.errors_over_1s} over 1 s)"
        + f" | {r.fault_seconds:.2f} s | "
        + ("-" if r.recovery_seconds is None else f"{r.recovery_seconds:.2f} s")
        + " | "
        + ", ".join(f"{k}={fmt(v)}" for k, v in r.extra.items())
        + " |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description="Faults: acknowledged vs stored registrations under five faults.",
    )
    parser.add_argument("--quick", action="store_true", help="the tests' sizes (about a minute)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}"
    )
    args = parser.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results = asyncio.run(run(QUICK if args.quick else FULL, only))
    print()
    print(table(results))
    failed = [r.name for r in results if r.lost or r.duplicates or r.bad_503s]
    if failed:
        print(f"\nFAILED (lost, duplicated or 503 without Retry-After): {', '.join(failed)}")
    return 1 if failed else 0
