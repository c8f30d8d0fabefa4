"""Summaries of load-generator rows: rate, percentiles, statuses."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(rows: list[list[Any]], elapsed: float, kind: str | None = None) -> dict[str, Any]:
    """rows: [kind, scheduled_offset_s, latency_ms, status, lag_ms]; only ``kind`` when
    given. ``gen_lag_p99_ms``: how late the generator itself started requests (its own
    saturation; large values mean the figure measures the generator too).

    ``rps`` counts answered requests (any status but 0) per second of ``elapsed``.
    """
    picked = [r for r in rows if kind is None or r[0] == kind]
    lat = sorted(float(r[2]) for r in picked)
    statuses = Counter(str(int(r[3])) for r in picked)
    answered = sum(n for s, n in statuses.items() if s != "0")
    return {
        "requests": len(picked),
        "answered": answered,
        "elapsed_s": round(elapsed, 3),
        "rps": round(answered / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 2),
        "p95_ms": round(percentile(lat, 95), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else 0.0,
        "statuses": dict(sorted(statuses.items())),
        "errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "errors_409": statuses.get("409", 0),
        "no_answer": statuses.get("0", 0),
        "gen_lag_p99_ms": round(
            percentile(sorted(float(r[4]) for r in picked if len(r) > 4), 99), 2
        ),
    }


def ok_fraction(summary: dict[str, Any]) -> float:
    """Share of requests answered 2xx."""
    total = summary["requests"]
    good = sum(n for s, n in summary["statuses"].items() if s.startswith("2"))
    return good / total if total else 0.0


def over_bounds(
    before: dict[float, float], after: dict[float, float], bounds: tuple[float, ...]
) -> dict[str, Any]:
    """What a cumulative histogram (``World.shim_buckets``) counted between two scrapes:
    the samples, and the share of them above each of ``bounds`` (seconds; each must be a
    bucket bound). Empty when either scrape failed."""
    if not before or not after:
        return {}
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    out: dict[str, Any] = {"samples": int(total)}
    for bound in bounds:
        below = after.get(bound, 0.0) - before.get(bound, 0.0)
        out[f"over_{bound * 1000:g}ms"] = round(1 - below / total, 3) if total else 0.0
    return out
