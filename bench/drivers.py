"""Load generators: wrk (closed loop, C), the Python generator (``bench.loadgen``:
closed, open model, storm, pollers) and pgbench. Each returns a summary dict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import stats
from bench.env import REPO

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_viewers.lua"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def tool_versions(pg_bindir: str) -> dict[str, str]:
    """Versions of the load tools found on this machine."""
    out: dict[str, str] = {"python": sys.version.split()[0]}
    wrk = wrk_path()
    if wrk:
        text = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (text.stdout + text.stderr).splitlines()[0].split()
        out["wrk"] = first[1] if len(first) > 1 else "?"
    pgbench = pgbench_path(pg_bindir)
    if pgbench:
        text = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=False)
        out["pgbench"] = text.stdout.strip().removeprefix("pgbench (PostgreSQL) ")
    return out


def pgbench_path(pg_bindir: str) -> str | None:
    """The server's own pgbench, else /usr/bin/pgbench (any recent one speaks to it)."""
    own = Path(pg_bindir) / "pgbench"
    if own.exists():
        return str(own)
    return shutil.which("pgbench")


def run_wrk(
    port: int, path: str, viewers: Path, *, connections: int, duration: float, threads: int = 2
) -> dict[str, Any]:
    """Closed loop with wrk; statuses and percentiles from the Lua script's done()."""
    wrk = wrk_path()
    assert wrk is not None
    argv = [
        wrk, "-t", str(min(threads, connections)), "-c", str(connections),
        "-d", f"{max(1, round(duration))}s", "--timeout", "30s", "-s", str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}", "--", str(viewers), path,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = raw["duration_us"] / 1e6
    statuses = dict(sorted(raw["statuses"].items()))
    sock = raw["socket_errors"]
    no_answer = sock["connect"] + sock["read"] + sock["timeout"]
    if no_answer:
        statuses["0"] = no_answer
    answered = sum(raw["statuses"].values())
    return {
        "tool": "wrk",
        "command": " ".join(argv),
        "requests": answered + no_answer,
        "answered": answered,
        "elapsed_s": round(elapsed, 3),
        "rps": round(answered / elapsed, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "statuses": statuses,
        "errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "errors_409": statuses.get("409", 0),
        "no_answer": no_answer,
    }


def run_python(spec: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    """Run ``bench.loadgen`` in its own process; returns its raw result (rows, elapsed)."""
    return run_python_together([(spec, name)], work)[0]


def run_python_together(runs: list[tuple[dict[str, Any], str]], work: Path) -> list[dict[str, Any]]:
    """Several ``bench.loadgen`` processes at once (each its own process and event loop;
    give them one ``start_at`` to start their clocks together); their raw results in order.
    A generator that fails or outlives its bound fails the call, the others are stopped."""
    started = []
    for spec, name in runs:
        spec_path = work / f"{name}.spec.json"
        out_path = work / f"{name}.out.json"
        spec_path.write_text(json.dumps(spec))
        bound = spec.get("duration", 0) + spec.get("window", 0) + 240
        argv = [sys.executable, "-m", "bench.loadgen", str(spec_path), str(out_path)]
        started.append((subprocess.Popen(argv, cwd=REPO), out_path, bound, argv))
    try:
        for popen, _out, bound, argv in started:
            code = popen.wait(timeout=bound)
            if code != 0:
                raise subprocess.CalledProcessError(code, argv)
    finally:
        for popen, *_rest in started:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
    results = []
    for _popen, out_path, _bound, _argv in started:
        results.append(json.loads(out_path.read_text()))
        out_path.unlink()
    return results


def python_closed(
    port: int, call: str, viewers: Path, webinar: int, *, connections: int, duration: float,
    work: Path, name: str,
) -> dict[str, Any]:  # fmt: skip
    spec = {
        "mode": "closed", "host": "127.0.0.1", "port": port, "call": call,
        "viewers": str(viewers), "webinar": webinar, "connections": connections,
        "duration": duration,
    }  # fmt: skip
    raw = run_python(spec, work, name)
    summary = stats.summarize(raw["rows"], raw["elapsed"])
    summary["tool"] = "python (bench.loadgen, closed loop)"
    summary["command"] = f"python -m bench.loadgen (closed, {connections} connections)"
    return summary


_TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")
_LAT = re.compile(r"latency average = ([\d.]+) ms")
_FAILED = re.compile(r"number of failed transactions: (\d+)")
_DONE = re.compile(r"number of transactions actually processed: (\d+)")
_ABORTED = re.compile(r"client (\d+) aborted")


def run_pgbench(
    pgbench: str, dsn: str, script: Path, *, mode: str, clients: int, duration: float,
    variables: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    argv = [
        pgbench, "-n", "-M", mode, "-c", str(clients), "-j", str(min(2, clients)),
        "-T", str(max(1, round(duration))), "-f", str(script),
    ]  # fmt: skip
    for key, value in variables.items():
        argv += ["-D", f"{key}={value}"]
    argv.append(dsn)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 60)
    tps = _TPS.search(proc.stdout)
    if tps is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lat = _LAT.search(proc.stdout)
    failed = _FAILED.search(proc.stdout)
    done = _DONE.search(proc.stdout)
    return {
        "tool": "pgbench",
        "command": " ".join(argv[:-1])
        + f" postgresql://{urlsplit(dsn).username}@127.0.0.1:PORT/eventlive",
        "tps": float(tps.group(1)),
        "latency_avg_ms": float(lat.group(1)) if lat else None,
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else 0,
        # pgbench stops a client at its first error (a 409 of an expired session, say):
        # the run then measured fewer clients, for less than -T; never a ceiling
        "aborted_clients": len(set(_ABORTED.findall(proc.stderr))),
        "errors": [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()][:3],
    }
