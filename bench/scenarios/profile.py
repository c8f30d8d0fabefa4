"""Where the shim's CPU goes under load: py-spy samples the shim process while wrk (or
the Python generator) drives presence_ping closed-loop. Summaries: the functions with
the most samples on-CPU at the top of the stack (self), and the share of samples whose
stack passes through each area (inclusive). Needs py-spy and ptrace rights (root or
CAP_SYS_PTRACE); skipped, with the reason, otherwise."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench import drivers
from bench.env import W_CEIL

# area -> substrings of a frame ("function (path:line)"); a sample belongs to the area of
# its innermost frame that matches one (so the shares add up to 100 %).
AREAS = {
    "JWT verification (shim.http.auth, PyJWT, hmac)": ("shim/http/auth.py", "jwt/", "hmac"),
    "database exchange (shim.http.exchange, coalesce; libpq calls, psycopg, psycopg_pool)": (
        "shim/http/exchange.py",
        "shim/http/coalesce.py",
        "psycopg/",
        "psycopg_pool/",
    ),
    "argument binding, catalog, JSON (shim.http.bind, catalog)": (
        "shim/http/bind.py",
        "shim/http/catalog.py",
        "json/",
    ),
    "metrics (shim.http.metrics, prometheus_client)": ("shim/http/metrics.py", "prometheus_client"),
    "access log drain (shim.http.accesslog)": ("shim/http/accesslog.py",),
    "logging": ("logging/",),
    "shim request handling (shim.http.lean, pipeline, database, respond, ...)": ("shim/",),
    "Starlette (routing, requests, responses)": ("starlette/",),
    "uvicorn HTTP protocol (parsing, writing answers)": ("uvicorn/",),
    "asyncio / event loop (uvloop: sockets, callbacks)": ("asyncio/", "uvloop"),
}


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, marks in AREAS.items():
            if any(m in frame for m in marks):
                return area
    return "other"


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        total += count
        self_time[frames[-1]] += count
        areas[_area(frames)] += count
    if not total:
        return {"samples": 0, "self": [], "areas": {}}
    return {
        "samples": total,
        "self": [{"frame": f, "share": round(n / total, 3)} for f, n in self_time.most_common(top)],
        "areas": {a: round(n / total, 3) for a, n in areas.most_common()},
    }


def run(ctx: Any) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    if not cfg.profile:
        return {"skipped": "not requested (--profile; on by default in the full run)"}
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    shim = world.procs["shim"]
    pids = shim.pids()
    target = pids[-1] if len(pids) > 1 else shim.popen.pid  # a worker when there are several
    raw = world.out / "work" / "shim-profile.txt"
    seconds = cfg.profile_seconds
    argv = [
        pyspy, "record", "--pid", str(target), "--format", "raw", "--rate", "200",
        "--duration", str(int(seconds)), "--nonblocking", "--output", str(raw),
    ]  # fmt: skip
    result: dict[str, Any] = {}

    def load() -> None:
        if cfg.use_wrk:
            result["load"] = drivers.run_wrk(
                shim.port, f"/api/webinars/{W_CEIL}/presence/ping", world.files["ceiling"],
                connections=max(cfg.closed_connections), duration=seconds + 1,
            )  # fmt: skip
        else:
            result["load"] = drivers.python_closed(
                shim.port, "ping", world.files["ceiling"], W_CEIL,
                connections=max(cfg.closed_connections), duration=seconds + 1,
                work=world.out / "work", name="profile",
            )  # fmt: skip

    world.settle()
    loader = threading.Thread(target=load)
    loader.start()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    loader.join(timeout=seconds + 90)
    if proc.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed: {(proc.stderr or proc.stdout).strip()[:300]}"}
    summary = summarize(raw)
    summary["command"] = " ".join(argv[:-2]) + " --output shim-profile.txt"
    summary["pid_role"] = "uvicorn worker" if len(pids) > 1 else "uvicorn (single process)"
    load_res = result.get("load", {})
    summary["load_rps"] = load_res.get("rps")
    summary["load_statuses"] = load_res.get("statuses")
    top = ", ".join(f"{a} {s:.0%}" for a, s in list(summary["areas"].items())[:4])
    ctx.log(f"profile: {summary['samples']} samples; {top}")
    return summary
