"""The report's judgements come from the figures it is given: the met column of issue
#19's ratio and the ``--workers`` advice change when the measurements do (no database:
results dicts shaped like a run's)."""

from __future__ import annotations

from typing import Any

from bench import report


def _run(ping_64: float, strict: float, workers: list[tuple[int, float, float]]) -> dict[str, Any]:
    split = {"shim": 0.9, "postgres": 0.4, "load generator": 0.3}
    return {
        "meta": {"machine": {"cores": 2}, "config": {"workers": 1}, "shipped_workers": 1},
        "ceiling": {
            "runs": [
                {"call": "ping", "mode": "pipeline", "clients": 2, "tps": 10_000.0},
                {"call": "ping", "mode": "strict", "clients": 8, "tps": strict},
            ],
            "best": {"ping": {"tps": 10_000.0, "mode": "pipeline", "clients": 2}},
            "best_strict": {"ping": {"tps": strict, "mode": "strict", "clients": 8}},
            "strict_checks": {"same_work": True},
        },
        "closed_shim": {
            "runs": [
                {
                    "target": "shim",
                    "call": "ping",
                    "connections": 64,
                    "rps": ping_64,
                    "cpu_cores": split,
                },
            ]
        },
        "workers": {
            "runs": [
                {
                    "workers": n,
                    "ping": {"rps": ping, "connections": 64, "cpu_cores": split},
                    "track": {"rps": track},
                }
                for n, ping, track in workers
            ]
        },
    }


def _row(results: dict[str, Any], start: str) -> tuple[str, ...]:
    return next(row for row in report.headline(results) if row[0].startswith(start))


def test_the_strict_ratio_is_met_or_not_by_the_measurement() -> None:
    even = [(1, 5_000.0, 2_000.0)]
    met = _row(_run(10_000.0, 18_000.0, even), "Shim presence_ping at 64 connections / strict")
    assert met[1].startswith("0.56 (10,000 / 18,000 calls/s")
    assert met[3] == "yes"
    missed = _row(_run(8_000.0, 18_000.0, even), "Shim presence_ping at 64 connections / strict")
    assert missed[1].startswith("0.44 ")
    assert missed[3] == "**no**"
    assert "shim 0.90" in missed[4]


def test_workers_advice_follows_the_figures() -> None:
    """The fewest workers within 5 % of the best score (pings and tracks, each against its
    best); a 16-core host split by CPU per ping."""
    close = report.workers_advice(
        _run(1.0, 1.0, [(1, 9_800.0, 4_000.0), (2, 10_000.0, 4_100.0), (4, 7_000.0, 3_000.0)])
    )
    assert close is not None
    assert close["here"] == 1
    # CPU per ping at one worker: shim 0.9 / rps, postgres 0.4 / rps -> 16 * 0.9 / 1.3
    assert close["host16_shared"] == round(16 * 0.9 / 1.3)
    assert close["default"] == 1
    assert "= the figure for this machine" in close["text"]
    apart = report.workers_advice(
        _run(1.0, 1.0, [(1, 5_000.0, 2_000.0), (2, 9_000.0, 3_900.0), (4, 9_200.0, 4_000.0)])
    )
    assert apart is not None
    assert apart["here"] == 2
    assert "not the 2 measured best here" in apart["text"]
    # the best pings with fewer tracks: the sum decides (1.0 + 0.8 < 0.9 + 1.0)
    mixed = report.workers_advice(
        _run(1.0, 1.0, [(1, 4_000.0, 2_000.0), (2, 10_000.0, 3_200.0), (4, 9_000.0, 4_000.0)])
    )
    assert mixed is not None
    assert mixed["here"] == 4


def test_a_run_that_saturated_the_cores_for_seconds_is_not_called_idle() -> None:
    """A storm averages 1.4 of 2 cores over its run but saturated them for 11 s: the
    verdict says so, with the split of those seconds, instead of "not CPU-bound"."""
    average = {"shim": 0.6, "postgres": 0.55, "load generator": 0.25}
    busy = {"shim": 1.0, "postgres": 0.8, "load generator": 0.15}
    saturated = {"seconds": 11.0, "window_s": 24.0, "cores": busy}
    verdict = report._limit(average, 2, single=False, saturation=saturated)
    assert "cores saturated 11 of 24 s" in verdict
    assert "shim 1.00" in verdict
    assert "not CPU-bound" not in verdict
    calm = {"seconds": 0.0, "window_s": 24.0, "cores": {}}
    assert "not CPU-bound" in report._limit(average, 2, single=False, saturation=calm)
