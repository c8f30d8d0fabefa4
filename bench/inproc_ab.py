"""``python -m bench.inproc_ab --before /tmp/before``: the shim's own CPU per request, two
source trees side by side in one run.

Each tree's app runs in its own process (``bench/inproc_side.py`` with that tree on
``PYTHONPATH``), driven through ASGI directly, without sockets or uvicorn, so the figure
is the shim's work per request (the pipeline, the coalescer, the libpq exchange, the
event loop) and nothing else; ``getrusage`` of that process around each block makes it
immune to other load on a shared machine (within cache and clock effects). Both sides
use one throwaway PostgreSQL (``bench.env.World``, migrated by this tree, ``--viewers``
pre-entered viewers of the bench's ceiling webinar, one token each) and take turns:
for every round and call the two sides run back to back, the order alternating, each
block after ``World.present_again`` as the bench's closed loop does. Unless ``--no-pin``,
the sides run on the last core and PostgreSQL on the others (less of one in the other's
caches; on this 2-core VM blocks still vary by 10-20 %: compare medians of several turns).

Calls: ``ping`` and ``track`` are the bench's closed-loop routes (legacy
``presence/ping``, ``access/track`` re-confirmations), ``rpc_ping`` / ``rpc_track`` the
same on ``/rpc``; ``null`` is the harness's own client loop against an empty app (the
part of every figure that is not the shim's). Prints user+sys CPU per request of every
block, and per call the medians and after / before. ``--callgrind`` runs each side under
valgrind's callgrind (a dump at every ``getrusage``) and adds the block's instructions
per request, exact where CPU time on a shared machine is not.

A tree is a checkout, e.g. ``git worktree add --detach /tmp/before <commit>``; ``--after``
defaults to this tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from bench.env import REPO, SECRET, W_CEIL, Ranges, World, cpu_snapshot

SIDE = Path(__file__).resolve().with_name("inproc_side.py")
CALLS = ("null", "ping", "rpc_ping", "track", "rpc_track")


class Side:
    """One tree's app in its own process (``bench/inproc_side.py``); with ``dumps`` (a
    directory) under callgrind, each block's instructions counted."""

    def __init__(
        self, name: str, tree: Path, world: World, log: Path, *, cpu: int | None, dumps: Path | None
    ) -> None:
        self.name = name
        env = {
            **os.environ,
            **({"INPROC_CPU": str(cpu)} if cpu is not None else {}),
            "PYTHONPATH": str(tree),
            "DATABASE_URL": world.auth_dsn(),
            "JWT_SECRET": SECRET,
        }
        argv = [sys.executable, "-P", str(SIDE)]
        self.dumps = dumps
        if dumps is not None:
            # A dump at every getrusage: the ones after a block's first are the block.
            env.update(INPROC_FREEZE="1", PYTHONHASHSEED="0")
            argv = [
                "valgrind", "--tool=callgrind", "--dump-before=getrusage",
                f"--callgrind-out-file={dumps}/{name}.%p", *argv,
            ]  # fmt: skip
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            argv, cwd=tree, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )  # fmt: skip
        self.log = log
        self._ask({"viewers": str(world.files["ceiling"]), "webinar": W_CEIL})
        self._instructions()

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin: IO[str] | None = self.popen.stdin
        stdout: IO[str] | None = self.popen.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} side exited; see {self.log}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def block(self, call: str, rounds: int, concurrency: int) -> dict[str, Any]:
        answer = self._ask({"call": call, "rounds": rounds, "concurrency": concurrency})
        if self.dumps is not None:
            answer["instr"] = self._instructions() / answer["n"]
        return answer

    def _instructions(self) -> int:
        """The instructions of the dumps since the last call but the first (the time
        between blocks, up to the block's first getrusage); the dumps are removed."""
        if self.dumps is None:
            return 0
        found = sorted(
            (int(p.suffix[1:]), p)
            for p in self.dumps.glob(f"{self.name}.*.*")
            if p.suffix[1:].isdigit()
        )
        total = 0
        for i, (_, path) in enumerate(found):
            match = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.M)
            if i > 0 and match:
                total += int(match.group(1))
            path.unlink()
        return total

    def stop(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inproc_ab", description=__doc__)
    p.add_argument("--before", type=Path, required=True, help="the tree to compare against")
    p.add_argument("--after", type=Path, default=REPO, help="default: this tree")
    p.add_argument("--viewers", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=100, help="requests per client per block")
    p.add_argument("--turns", type=int, default=6, help="blocks per side and call")
    p.add_argument("--calls", default="null,ping,rpc_ping,track", help=f"of {','.join(CALLS)}")
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="run the sides under valgrind's callgrind and count instructions per request "
        "(exact where CPU time is noisy; ~50 times slower: try --viewers 256 --rounds 20)",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not give the sides the last core and PostgreSQL the others",
    )
    return p.parse_args(argv)


def _pin(world: World) -> int | None:
    """The last core for the sides; PostgreSQL (its postmaster and every process it has
    forked, and so every backend it will fork) on the others. None on one core."""
    cores = sorted(os.sched_getaffinity(0))
    postmaster = world.postmaster()
    if len(cores) < 2 or postmaster is None:
        return None
    for pid, (_comm, _pgrp, ppid, _ticks) in cpu_snapshot()[1].items():
        if postmaster in (pid, ppid):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, cores[:-1])
    return cores[-1]


def _per_batch(block: dict[str, Any]) -> str:
    """Requests per batched statement of the block ('-' when none was sent)."""
    return f"{block['n'] / block['batches']:.1f}" if block.get("batches") else "-"


def _cpu(block: dict[str, Any]) -> float:
    return float(block["user_us"] + block["sys_us"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    calls = [c for c in args.calls.split(",") if c]
    unknown = set(calls) - set(CALLS)
    if unknown:
        raise SystemExit(f"unknown calls: {', '.join(sorted(unknown))}")
    out = Path(tempfile.mkdtemp(prefix="inproc-ab-"))
    world = World(out, Ranges(ceiling=args.viewers, storm=0, steady=0, admins=0), 1, 10)
    sides: dict[str, Side] = {}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        world.start_db()
        world.seed()
        cpu = None if args.no_pin else _pin(world)
        dumps = out if args.callgrind else None
        for name, tree in (("before", args.before), ("after", args.after)):
            sides[name] = Side(
                name, tree.resolve(), world, out / f"{name}.log", cpu=cpu, dumps=dumps
            )
        print(f"{'turn':>4} {'call':<9} {'side':<6} {'user us':>8} {'sys us':>7} "
              f"{'cpu us':>7} {'req/s':>7} {'/batch':>6} {'instr':>8}  statuses")  # fmt: skip
        for turn in range(args.turns):
            order = ("before", "after") if turn % 2 == 0 else ("after", "before")
            for call in calls:
                for name in order:
                    world.present_again(W_CEIL, world.ranges.ceiling_start, args.viewers)
                    b = sides[name].block(call, args.rounds, args.concurrency)
                    results.setdefault((call, name), []).append(b)
                    print(
                        f"{turn:>4} {call:<9} {name:<6} {b['user_us']:8.1f} {b['sys_us']:7.1f} "
                        f"{_cpu(b):7.1f} {b['n'] / b['wall_s']:7.0f} {_per_batch(b):>6} "
                        f"{b.get('instr', 0):8.0f}  {b['statuses']}",
                        flush=True,
                    )
        _summary(calls, results)
    finally:
        for side in sides.values():
            side.stop()
        world.stop()
        world.clean(keep_logs=False)
    return 0


def _summary(calls: list[str], results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Per call: median user and user+sys CPU per request of each side, the median of the
    turns' after / before ratios, and the same less the null call (the harness's own)."""
    null = {
        name: statistics.median(_cpu(b) for b in results[("null", name)])
        for name in ("before", "after")
        if ("null", name) in results
    }
    print("\nmedian CPU per request (us): user | user+sys | user+sys less the harness's")
    print(f"{'call':<9} {'before':>24} {'after':>24} {'after/before':>13} {'net':>6}")
    for call in calls:
        before, after = results[(call, "before")], results[(call, "after")]
        cells = []
        for blocks, name in ((before, "before"), (after, "after")):
            user = statistics.median(b["user_us"] for b in blocks)
            cpu = statistics.median(_cpu(b) for b in blocks)
            cells.append((user, cpu, cpu - null.get(name, 0.0)))
        ratio = statistics.median(_cpu(a) / _cpu(b) for a, b in zip(after, before, strict=True))
        net = cells[1][2] / cells[0][2] if call != "null" and cells[0][2] > 0 else float("nan")
        print(
            f"{call:<9} {cells[0][0]:7.1f} {cells[0][1]:7.1f} {cells[0][2]:7.1f}  "
            f"{cells[1][0]:7.1f} {cells[1][1]:7.1f} {cells[1][2]:7.1f}  {ratio:12.3f} {net:6.3f}"
        )
    if all("instr" in b for blocks in results.values() for b in blocks):
        print("\nmedian instructions per request (callgrind)")
        print(f"{'call':<9} {'before':>9} {'after':>9} {'after/before':>13}")
        for call in calls:
            before = statistics.median(b["instr"] for b in results[(call, "before")])
            after = statistics.median(b["instr"] for b in results[(call, "after")])
            print(f"{call:<9} {before:9.0f} {after:9.0f} {after / before:13.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
