"""Smoke test of the benchmark: ``python -m bench --quick`` produces a report that is
complete and internally consistent. It asserts nothing about how high the numbers are
(the targets are judged in bench/results, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow  # about two minutes: run with --slow (CI does)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    return out, results, (out / "report.md").read_text()


def _summaries(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for key in ("closed_shim", "closed_old", "open"):
        found += results[key]["runs"]
    for s in results["storm"]["runs"]:
        found += [s["track"], s["ping"]]
    for p in results["steady"]["probes"]:
        found += [p, p["ping"], p["track"]]
    for p in results["pollers"]["runs"]:
        found += [p["stats"], p["ping"]]
    for w in results["workers"]["runs"]:
        found += [w["ping"], w["track"], w["storm"]["track"], w["storm"]["ping"]]
    iso = results["isolation"]
    for q in (iso["alone"], iso["during"], iso["during_entries"]):
        found += [q, q["ping"], q["track"]]
    found += [iso["s"]["track"], iso["s"]["ping"]]
    return found


@pytest.mark.timeout(300)
def test_quick_run_reports_every_scenario(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    out, results, text = quick_run
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "charts not drawn: matplotlib is not installed" in text
    assert results["meta"]["scenarios_failed"] == {}
    for key in (
        "ceiling", "closed_shim", "closed_old", "open", "storm", "isolation", "steady",
        "pollers", "workers", "pooler",
    ):  # fmt: skip
        assert key in results, key
    for heading in ("## Headline", "## Machine and tools", "## Exact commands", "## 1. Ceiling",
                    "## 4. Join storm", "## 4b. Tenant isolation", "## 5. Steady state",
                    "## 6. Pollers",
                    "## 7. Workers: one, two and four processes",
                    "## 8. Behind a transaction pooler"):  # fmt: skip
        assert heading in text, heading
    # the machine and tool versions are stated
    assert results["meta"]["machine"]["cores"]
    assert results["meta"]["facts"]["pg_version"] in text
    assert "pgbench" in results["meta"]["tools"]
    # the load generator used for closed loops is named (wrk, or the stated fallback)
    assert results["meta"]["config"]["loadgen"] in text
    # no token files or specs are left behind
    assert not (out / "work").exists()


@pytest.mark.timeout(300)
def test_charts_are_pngs_and_linked(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    out, _results, text = quick_run
    pytest.importorskip("matplotlib", reason="charts need the bench extra (matplotlib)")
    for name in ("throughput.png", "latency_vs_load.png", "storm.png", "isolation.png",
                 "steady.png", "pollers.png"):  # fmt: skip
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in text, name


@pytest.mark.timeout(300)
def test_summaries_add_up(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _out, results, _text = quick_run
    for s in _summaries(results):
        assert sum(s["statuses"].values()) == s["requests"]
        assert s["answered"] == s["requests"] - s["statuses"].get("0", 0)
        assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["errors_5xx"] == sum(n for k, n in s["statuses"].items() if k.startswith("5"))


@pytest.mark.timeout(300)
def test_ratios_are_taken_from_the_same_run(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _out, results, text = quick_run
    best = results["ceiling"]["best"]
    for call in ("ping", "track"):  # the strict form is reported apart (its own test)
        runs = [
            r for r in results["ceiling"]["runs"] if r["call"] == call and r["mode"] != "strict"
        ]
        assert best[call]["tps"] == max(r["tps"] for r in runs)
    shim = max(
        (r for r in results["closed_shim"]["runs"] if r["call"] == "ping"), key=lambda r: r["rps"]
    )
    ratio = shim["rps"] / best["ping"]["tps"]
    rows = {row[0]: row for row in report.headline(results)}
    assert rows["Shim presence_ping / pgbench ceiling"][1].startswith(f"{ratio:,.2f} ")
    for figure in rows:
        assert figure in text


@pytest.mark.timeout(300)
def test_storm_and_pollers_are_accounted(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _out, results, _text = quick_run
    cfg = results["meta"]["config"]
    for s in results["storm"]["runs"]:
        assert s["viewers"] in (cfg["storm_viewers"], cfg.get("storm_big"))
        # every viewer entered once, the doubles twice
        assert s["track"]["requests"] == s["viewers"] + s["doubles"]
        assert 0 <= s["registrations"] <= s["viewers"]
    assert [p["admins"] for p in results["pollers"]["runs"]] == cfg["poller_counts"]
    for p in results["pollers"]["runs"]:
        assert p["db_calls"] >= 0
        assert p["db_calls_per_interval"] == round(p["db_calls"] / p["intervals"], 2)
    steady = results["steady"]
    assert steady["best_viewers"] in [0] + [p["viewers"] for p in steady["probes"] if p["passed"]]


@pytest.mark.timeout(300)
def test_workers_are_compared_in_the_same_run(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    """One, two and four workers, each with its closed loops and its own storm, side by side;
    the pooler scenario's ratio from the same run (or its reason to skip)."""
    _out, results, text = quick_run
    runs = results["workers"]["runs"]
    assert [w["workers"] for w in runs] == [1, 2, 4]
    cfg = results["meta"]["config"]
    for w in runs:
        assert (
            w["ping"]["connections"] == w["track"]["connections"] == max(cfg["closed_connections"])
        )
        storm = w["storm"]
        assert storm["viewers"] == cfg["storm_viewers"]
        assert storm["track"]["requests"] == storm["viewers"] + storm["doubles"]
        assert 0 <= storm["registrations"] <= storm["viewers"]
    assert "2 workers / 1: ping " in text
    assert "4 workers / 1: ping " in text
    pooler = results["pooler"]
    if "skipped" not in pooler:
        assert pooler["ratio"] == round(pooler["pgbouncer"]["rps"] / pooler["direct"]["rps"], 3)
        assert "Pings/s through PgBouncer / direct: **" in text


def _rows(results: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    return {row[0]: row for row in report.headline(results)}


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


@pytest.mark.timeout(300)
def test_strict_ceiling_and_its_ratios(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    """The strict form ran the shim's work (checked on the server) and is kept apart from the
    pipeline/prepared ceiling; the shim's ratios to both come from this run, and the met
    column is the ratio against the target."""
    _out, results, text = quick_run
    ceiling = results["ceiling"]
    assert ceiling["strict_checks"]["same_work"] is True
    strict = [r for r in ceiling["runs"] if r["mode"] == "strict"]
    assert strict
    assert all(r["call"] == "ping" and "bench_caller@" in r["command"] for r in strict)
    assert ceiling["best_strict"]["ping"]["tps"] == max(r["tps"] for r in strict)
    others = [r for r in ceiling["runs"] if r["call"] == "ping" and r["mode"] != "strict"]
    assert ceiling["best"]["ping"]["tps"] == max(r["tps"] for r in others)
    assert "pgbench_presence_ping_strict.sql" in text
    shim = [r for r in results["closed_shim"]["runs"] if r["call"] == "ping"]
    run = max(shim, key=lambda r: r["connections"])  # 64 in the full run
    rows = _rows(results)
    for name, ceil in (
        ("strict ceiling", ceiling["best_strict"]["ping"]["tps"]),
        ("pipeline/prepared ceiling", ceiling["best"]["ping"]["tps"]),
    ):
        row = rows[f"Shim presence_ping at {run['connections']} connections / {name}"]
        ratio = run["rps"] / ceil
        assert row[1].startswith(f"{ratio:,.2f} ")
        if name == "strict ceiling":
            assert row[3] == _met(ratio >= report.TARGETS["strict_ratio"])
    for row in rows.values():
        assert len(row) == 5
        assert row[0] in text


@pytest.mark.timeout(300)
def test_isolation_is_accounted(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    """Q alone and during S's storm, S's first entries (no doubles) and what was stored;
    the two headline rows judged from those figures."""
    _out, results, _text = quick_run
    cfg = results["meta"]["config"]
    iso = results["isolation"]
    for q in (iso["alone"], iso["during"], iso["during_entries"]):
        good = sum(n for k, n in q["statuses"].items() if k.startswith("2"))
        assert q["errors"] == q["requests"] - good
    for q in (iso["alone"], iso["during"]):  # every 20th call of a run is a re-track
        assert q["track"]["requests"] == q["requests"] // iso["track_every"]
    assert iso["alone"]["requests"] == int(cfg["iso_rate"] * cfg["iso_alone_seconds"])
    assert iso["during_entries"]["requests"] <= iso["during"]["requests"]
    s = iso["s"]
    assert s["viewers"] == cfg["iso_storm"]
    assert s["doubles"] == 0
    assert s["track"]["requests"] == s["viewers"]
    assert 0 <= s["registrations"] <= s["viewers"]
    rows = [row for title, row in _rows(results).items() if title.startswith("Tenant isolation")]
    q_row, s_row = rows
    q = iso["during"]
    assert q_row[3] == _met(q["p99_ms"] < report.TARGETS["iso_q_p99_ms"] and q["errors"] == 0)
    assert s_row[3] == _met(s["registrations"] == s["viewers"] and s["track"]["errors_5xx"] == 0)


@pytest.mark.timeout(300)
def test_storm_sizes_steady_pool_and_deployment_rows(
    quick_run: tuple[Path, dict[str, Any], str],
) -> None:
    """Both storm sizes ran, each judged against its own target; the steady state's pool and
    warm-up; the pooler's and the workers' rows with the shipped default read from the CLI."""
    _out, results, text = quick_run
    cfg = results["meta"]["config"]
    storms = [s for s in results["storm"]["runs"] if s["target"] == "shim"]
    assert [s["viewers"] for s in storms] == [cfg["storm_viewers"], cfg["storm_big"]]
    assert [s.get("size") for s in storms] == [None, "big"]
    rows = _rows(results)
    for s in storms:
        row = next(
            r for t, r in rows.items() if t.startswith(f"Join storm, shim: {s['viewers']:,} ")
        )
        assert f"p99 < {report.storm_target_ms(s):,g} ms" in row[2]
    assert report.storm_target_ms(storms[1]) == report.TARGETS["storm_big_p99_ms"]
    steady = results["steady"]
    assert steady["pool"] == cfg["steady_pool"]
    warm = steady["warm_up"]
    assert warm["pings"] == min(steady["pool"], warm["token_cache"])
    facts = results["meta"]["facts"]
    assert facts["tokens"] > steady["pool"]
    assert facts["tokens_s"] >= 0
    assert "Pings/s through PgBouncer (transaction mode) / direct" in rows
    from bench.run import shipped_workers

    assert results["meta"]["shipped_workers"] == shipped_workers()
    advice = report.workers_advice(results)
    assert advice is not None
    assert advice["here"] in [w["workers"] for w in results["workers"]["runs"]]
    assert advice["default"] == shipped_workers()
    assert advice["text"] in text
