"""``results.json`` -> ``report.md`` + PNG charts. Re-run alone with
``python -m bench.report DIR`` (it reads DIR/results.json).

Every figure is taken from the run's own measurements; ratios are between figures of
the same run. Nothing here is hard-coded but the targets (``TARGETS``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS = {
    "ceiling_ratio": 0.5,
    "strict_ratio": 0.5,  # issue #19: the shim's pings at 64 connections / the strict form
    "old_ratio": 5.0,
    "storm_p99_ms": 250.0,
    "storm_big_p99_ms": 1000.0,  # issue #19: the 25,000 storm
    "iso_q_p99_ms": 50.0,  # issue #19: Q's heartbeats during S's storm
    "steady_viewers": 500_000,  # issue #19, from a pool of 600,000
    "steady_p99_ms": 100.0,
    "poll_calls_per_interval": 1.0,
}
# workers within this share of the best measured rate count as "as good" (shared machine)
WORKERS_NOISE = 0.05


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return a / b


def _yes(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def _cpu(split: dict[str, float] | None) -> str:
    """Cores used per component, largest first ("other" = processes not the bench's)."""
    if not split:
        return "-"
    short = {"load generator": "gen", "other (not the bench's)": "other"}
    parts = sorted(split.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{short.get(k, k)} {v:.2f}" for k, v in parts if v >= 0.01)


def cpu_ms(split: dict[str, float] | None, rate: float | None, *names: str) -> float | None:
    """CPU milliseconds per request of the named components (cores / rate)."""
    if not split or not rate:
        return None
    return sum(split.get(n, 0.0) for n in names) / rate * 1000


def _server_names(target: str) -> tuple[str, ...]:
    return ("shim",) if target == "shim" else ("old-app", "old-proxy")


def _statuses(s: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in s.items()) or "-"


# -- figures ----------------------------------------------------------------------------


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a run, computed from its results (None when not run)."""
    f: dict[str, Any] = {}
    ceiling = r.get("ceiling", {})
    best = ceiling.get("best", {})
    f["ceiling_ping"] = best.get("ping", {}).get("tps")
    f["ceiling_track"] = best.get("track", {}).get("tps")
    f["strict_ping"] = ceiling.get("best_strict", {}).get("ping", {}).get("tps")
    shim = r.get("closed_shim", {}).get("runs", [])
    old = r.get("closed_old", {}).get("runs", [])

    def top(
        runs: list[dict[str, Any]], call: str, target: str | None = None
    ) -> dict[str, Any] | None:
        mine = [x for x in runs if x["call"] == call and (target is None or x["target"] == target)]
        return max(mine, key=lambda x: x["rps"]) if mine else None

    for call in ("ping", "track"):
        f[f"shim_{call}"] = top(shim, call)
        at64 = [x for x in shim if x["call"] == call and x["connections"] == 64]
        f[f"shim_{call}_64"] = at64[0] if at64 else None
        # issue #19's ratio is at 64 connections; a run without them (--quick): its largest
        mine = [x for x in shim if x["call"] == call]
        f[f"shim_{call}_ratio_run"] = (
            at64[0] if at64 else max(mine, key=lambda x: x["connections"], default=None)
        )
        f[f"old_{call}"] = {}
        for target in sorted({x["target"] for x in old}):
            f[f"old_{call}"][target] = top(old, call, target)
    storm = r.get("storm", {}).get("runs", [])
    f["storm"] = storm
    f["steady"] = r.get("steady", {})
    f["pollers"] = r.get("pollers", {}).get("runs", [])
    return f


def storm_target_ms(s: dict[str, Any]) -> float:
    """A storm's p99 target: the larger storm has its own (issue #19)."""
    return TARGETS["storm_big_p99_ms"] if s.get("size") == "big" else TARGETS["storm_p99_ms"]


def _ceiling_run(r: dict[str, Any], mode_strict: bool) -> dict[str, Any] | None:
    """The ceiling run behind the pipeline/prepared (or the strict) ping ceiling."""
    ceiling = r.get("ceiling", {})
    best = ceiling.get("best_strict" if mode_strict else "best", {}).get("ping")
    if not best:
        return None
    return next(
        (
            x
            for x in ceiling.get("runs", [])
            if x["call"] == "ping" and x["mode"] == best["mode"] and x["tps"] == best["tps"]
        ),
        None,
    )


def workers_advice(r: dict[str, Any]) -> dict[str, Any] | None:
    """The ``--workers`` the workers scenario's figures recommend, here and on a 16-core
    host, beside ``eventlive serve``'s shipped default (None when the scenario did not run).

    Here: each count's score is its ping rate over the best ping rate plus its track rate
    over the best track rate (the two hot calls weighed alike); the fewest workers whose
    score is within ``WORKERS_NOISE`` of the best score (fewer processes, fewer
    connections). A 16-core host that also
    runs PostgreSQL: its cores split in proportion to the CPU per ping measured at one
    worker, shim / (shim + postgres), so that both saturate together; with PostgreSQL on
    a host of its own, one worker per core."""
    runs = r.get("workers", {}).get("runs", [])
    if not runs:
        return None
    best_ping = max(w["ping"]["rps"] for w in runs) or 1.0
    best_track = max(w["track"]["rps"] for w in runs) or 1.0
    score = {
        w["workers"]: w["ping"]["rps"] / best_ping + w["track"]["rps"] / best_track for w in runs
    }
    top = max(score.values())
    here = min(
        (w for w in runs if score[w["workers"]] >= (1 - WORKERS_NOISE) * top),
        key=lambda w: w["workers"],
    )
    one = next((w for w in runs if w["workers"] == 1), runs[0])
    shim_ms = cpu_ms(one["ping"].get("cpu_cores"), one["ping"]["rps"], "shim")
    pg_ms = cpu_ms(one["ping"].get("cpu_cores"), one["ping"]["rps"], "postgres")
    host = 16
    shared = max(1, round(host * shim_ms / (shim_ms + pg_ms))) if shim_ms and pg_ms else None
    default = r["meta"].get("shipped_workers")
    text = (
        f"Recommended `--workers` on this machine: **{here['workers']}** (the fewest within "
        f"{WORKERS_NOISE:.0%} of the best score, score = pings/s ÷ the best pings/s + "
        "tracks/s ÷ the best tracks/s: "
        + ", ".join(
            f"{w['workers']}: {_fmt(w['ping']['rps'], 0)} pings/s, {_fmt(w['track']['rps'], 0)} "
            f"tracks/s, score {score[w['workers']]:.2f}"
            for w in runs
        )
        + "). On a 16-core host that also runs PostgreSQL: "
        + (
            f"**{shared}** (16 x shim / (shim + postgres) CPU per ping at one worker, "
            f"{_fmt(shim_ms, 3)} / ({_fmt(shim_ms, 3)} + {_fmt(pg_ms, 3)}) ms: both saturate "
            "together)"
            if shared
            else "- (no CPU split measured)"
        )
        + f"; with PostgreSQL on its own host, one per core: **{host}**. Shipped default "
        f"(`eventlive serve --workers`, read from its parser): **{default}**"
        + (
            " = the figure for this machine."
            if default == here["workers"]
            else f", not the {here['workers']} measured best here."
        )
    )
    return {
        "here": here["workers"],
        "host16_shared": shared,
        "host16_own_db": host,
        "default": default,
        "text": text,
    }


def _limit(
    split: dict[str, float] | None,
    cores: int,
    *,
    single: bool = True,
    saturation: dict[str, Any] | None = None,
) -> str:
    """A figure's CPU split (cores per component: shim, postgres, gen, other, ...) and, from
    it, what limited the figure. ``single``: the shim is one process (one core at most).
    ``saturation`` (``CpuMeter.saturation``): a run whose average leaves cores idle may
    still have saturated them for seconds (a storm, then its drain): said, with the split
    of those seconds, instead of "not CPU-bound"."""
    if not split:
        return "-"
    total = sum(split.values())
    busy = saturation.get("seconds", 0) if saturation else 0
    if total < 0.85 * cores and saturation and busy >= 2:
        return (
            f"{_cpu(split)}; cores saturated {busy:g} of {saturation['window_s']:g} s, "
            f"in those seconds {_cpu(saturation['cores'])}"
        )
    one = {"load generator", "old-app", "old-proxy"} | ({"shim"} if single else set())
    capped = sorted((k for k, v in split.items() if k in one and v >= 0.85), key=split.get)
    near = sorted((k for k, v in split.items() if k in one and v >= 0.7), key=split.get)
    short = {"load generator": "the generator"}
    if capped:
        verdict = f"{short.get(capped[-1], capped[-1])} at ~1 core (one process)"
    elif total >= 0.85 * cores:
        largest = max(split, key=lambda k: split[k])
        verdict = f"cores saturated ({_cpu({largest: split[largest]})} of them)"
    elif near:
        verdict = (
            f"{short.get(near[-1], near[-1])} near its one core, "
            f"{cores - total:.2f} of {cores} cores idle"
        )
    else:
        verdict = f"not CPU-bound ({cores - total:.2f} of {cores} cores idle: waits)"
    return f"{_cpu(split)}: {verdict}"


Row = tuple[str, str, str, str, str]


def headline(r: dict[str, Any]) -> list[Row]:
    """Rows: (figure, measured, target, met, CPU split and what limited it)."""
    f = figures(r)
    cores = int(r["meta"]["machine"].get("cores") or 2)
    single = int(r["meta"]["config"].get("workers") or 1) == 1

    def lim(x: dict[str, Any] | None, *, one: bool = single) -> str:
        if not x:
            return "-"
        return _limit(x.get("cpu_cores"), cores, single=one, saturation=x.get("cpu_saturation"))

    return [
        *_ceiling_rows(r, f, lim),
        *_storm_rows(f, lim, single),
        *_isolation_rows(r, lim),
        *_steady_rows(f, lim),
        *_poller_rows(f, int(r["meta"]["config"].get("workers") or 1)),
        *_deployment_rows(r, lim),
    ]


def _ceiling_rows(r: dict[str, Any], f: dict[str, Any], lim: Any) -> list[Row]:
    """Round trips, the shim against the ceilings and the old design, CPU per call."""
    rows: list[Row] = []
    sp = f["shim_ping"]
    if sp:
        stmts = sp.get("statements_per_call")
        olds = [o for o in f["old_ping"].values() if o]
        old_stmts = olds[0].get("statements_per_call") if olds else None
        rows.append((
            "Statements per presence_ping (pg_stat_statements)",
            f"shim {_fmt(stmts)} (one pipeline: 1 round trip); old design {_fmt(old_stmts)}",
            "1 round trip (old: 3-10 queries)",
            _yes(stmts is not None and stmts <= 2.05),
            "-",
        ))  # fmt: skip
        ratio = _ratio(sp["rps"], f["ceiling_ping"])
        rows.append((
            "Shim presence_ping / pgbench ceiling",
            f"{_fmt(ratio)} ({_fmt(sp['rps'], 0)} / {_fmt(f['ceiling_ping'], 0)} calls/s; "
            f"the shim's best, {sp['connections']} connections)",
            f"≥ {TARGETS['ceiling_ratio']}",
            _yes(ratio >= TARGETS["ceiling_ratio"]) if ratio else "-",
            f"shim run: {lim(sp)}",
        ))  # fmt: skip
    strict = _ceiling_run(r, mode_strict=True)
    if strict:
        checks = r["ceiling"].get("strict_checks") or {}
        pipe = _ceiling_run(r, mode_strict=False)
        rows.append((
            "Strict ceiling: one prepared autocommit statement per call (pgbench -M prepared)",
            f"{_fmt(strict['tps'], 0)} calls/s ({strict['clients']} clients); pipeline/prepared "
            f"ceiling {_fmt(f['ceiling_ping'], 0)} ({pipe['mode'] if pipe else '-'}); "
            f"strict / pipeline {_fmt(_ratio(strict['tps'], f['ceiling_ping']))}; same work as "
            f"the shim's exchange (checked): {_yes(checks.get('same_work'))}",
            "(reported: the denominator below)",
            "-",
            f"strict run: {lim(strict)}",
        ))  # fmt: skip
    s64 = f.get("shim_ping_ratio_run")
    if s64:
        for name, ceil, target in (
            ("strict ceiling", f["strict_ping"], f"≥ {TARGETS['strict_ratio']}"),
            ("pipeline/prepared ceiling", f["ceiling_ping"], "(reported)"),
        ):
            ratio = _ratio(s64["rps"], ceil)
            met = (
                _yes(ratio >= TARGETS["strict_ratio"])
                if ratio and name == "strict ceiling"
                else "-"
            )
            rows.append((
                f"Shim presence_ping at {s64['connections']} connections / {name}",
                f"{_fmt(ratio)} ({_fmt(s64['rps'], 0)} / {_fmt(ceil, 0)} calls/s, this run)",
                target,
                met,
                f"shim run: {lim(s64)}",
            ))  # fmt: skip
    if sp:
        for target, o in f["old_ping"].items():
            if not o:
                continue
            ratio = _ratio(sp["rps"], o["rps"])
            rows.append((
                f"Shim presence_ping / {target}",
                f"{_fmt(ratio)} ({_fmt(sp['rps'], 0)} / {_fmt(o['rps'], 0)} req/s)",
                f"≥ {TARGETS['old_ratio']:g}",
                _yes(ratio >= TARGETS["old_ratio"]) if ratio else "-",
                f"old design run: {lim(o)}",
            ))  # fmt: skip
        ceil_runs = [
            x
            for x in r.get("ceiling", {}).get("runs", [])
            if x["call"] == "ping" and x.get("cpu_cores")
        ]
        pg_ceiling = min(
            (v for x in ceil_runs if (v := cpu_ms(x["cpu_cores"], x["tps"], "postgres"))),
            default=None,
        )
        shim_ms = cpu_ms(sp.get("cpu_cores"), sp["rps"], "shim")
        pg_ms = cpu_ms(sp.get("cpu_cores"), sp["rps"], "postgres")
        olds = [o for o in f["old_ping"].values() if o]
        old_ms = min(
            (
                v
                for o in olds
                if (v := cpu_ms(o.get("cpu_cores"), o["rps"], "old-app", "old-proxy", "postgres"))
            ),
            default=None,
        )
        rows.append((
            "CPU per presence_ping (derived from the CPU split; robust to a busy machine)",
            f"shim {_fmt(shim_ms, 3)} ms + postgres {_fmt(pg_ms, 3)} ms per request; "
            f"pgbench ceiling: postgres {_fmt(pg_ceiling, 3)} ms per call; old design "
            f"(app + proxy + postgres) {_fmt(old_ms, 3)} ms",
            "(no target; says what limits the ratio)",
            "-",
            "-",
        ))  # fmt: skip
    st = f["shim_track"]
    if st:
        for label, run in (
            (f"best: {st['connections']} connections", st),
            ("64 connections", f.get("shim_track_64")),
        ):
            if not run or (label.startswith("64") and run is st):
                continue
            ratio = _ratio(run["rps"], f["ceiling_track"])
            rows.append((
                f"Shim track_access re-confirm / pgbench ceiling ({label})",
                f"{_fmt(ratio)} ({_fmt(run['rps'], 0)} / {_fmt(f['ceiling_track'], 0)} calls/s)",
                "(reported)",
                "-",
                lim(run),
            ))  # fmt: skip
    return rows


def _storm_rows(f: dict[str, Any], lim: Any, single: bool) -> list[Row]:
    """The join storms, each against its own target."""
    rows: list[Row] = []
    for s in f["storm"]:
        t = s["track"]
        target_ms = storm_target_ms(s)
        ok = (
            t["errors_5xx"] == 0 and t["errors_409"] == 0 and t["no_answer"] == 0
            and s["registrations"] == s["viewers"] and t["p99_ms"] < target_ms
        )  # fmt: skip
        rows.append((
            f"Join storm, {s['target']}: {s['viewers']:,} viewers in {s['window_s']:g} s, "
            f"{s['doubles']:,} twice",
            f"5xx {t['errors_5xx']}, 409 {t['errors_409']}, no answer {t['no_answer']}, "
            f"registrations {s['registrations']:,}, p99 {_fmt(t['p99_ms'], 1)} ms",
            f"0 5xx, 0 409, {s['viewers']:,} registrations, p99 < {target_ms:,g} ms",
            _yes(ok),
            lim(s, one=single and s["target"] == "shim"),
        ))  # fmt: skip
    return rows


def _steady_rows(f: dict[str, Any], lim: Any) -> list[Row]:
    """The steady state's largest audience, and the probe that limited it."""
    rows: list[Row] = []
    steady = f["steady"]
    if steady.get("probes"):
        v = steady["best_viewers"]
        note = " (pool size reached: more not tried)" if steady.get("limited_by_pool") else ""
        share = _ratio(steady["best_rps"], f["ceiling_ping"])
        per_viewer = steady.get("per_viewer_rps") or 1 / 120 + 1 / 300
        failed = [p for p in steady["probes"] if not p["passed"]]
        passed = [p for p in steady["probes"] if p["passed"]]
        limiting = (
            min(failed, key=lambda p: p["viewers"])
            if failed
            else max(passed, key=lambda p: p["viewers"], default=None)
        )
        rows.append((
            f"Steady state: largest V with p99 < {TARGETS['steady_p99_ms']:g} ms, from a pool "
            f"of {steady['pool']:,}",
            f"{v:,} viewers ({_fmt(steady['best_rps'], 0)} calls/s = {_fmt(share)} of the "
            f"ping ceiling){note}",
            f"≥ {TARGETS['steady_viewers']:,} (≈ {TARGETS['steady_viewers'] * per_viewer:,.0f} "
            "calls/s)",
            _yes(v >= TARGETS["steady_viewers"]),
            (f"V = {limiting['viewers']:,}: " + lim(limiting)) if limiting else "-",
        ))  # fmt: skip
    return rows


def _poller_rows(f: dict[str, Any], workers: int) -> list[Row]:
    """Shared answers: access_stats database calls per interval, at most one per process
    (each worker has its own shared cache)."""
    rows: list[Row] = []
    bound = TARGETS["poll_calls_per_interval"] * workers
    for p in f["pollers"]:
        rows.append((
            f"Pollers: {p['admins']} admin(s) every 5 s",
            f"{_fmt(p['db_calls_per_interval'])} access_stats calls / interval "
            f"({workers} worker(s)), poll p99 {_fmt(p['stats']['p99_ms'], 1)} ms",
            f"≤ 1 call / interval per process (≤ {_fmt(bound)})",
            _yes(p["db_calls_per_interval"] <= bound),
            "-",
        ))  # fmt: skip
    return rows


def _isolation_rows(r: dict[str, Any], lim: Any) -> list[Row]:
    """Tenant isolation (issue #19): Q during S's storm, and S's own outcome."""
    iso = r.get("isolation", {})
    if "during" not in iso:
        return []
    q, alone, s = iso["during"], iso["alone"], iso["s"]
    t = s["track"]
    q_ok = q["p99_ms"] < TARGETS["iso_q_p99_ms"] and q["errors"] == 0
    s_ok = s["registrations"] == s["viewers"] and t["errors_5xx"] == 0
    return [
        (
            f"Tenant isolation: webinar Q ({iso['q_viewers']:,} viewers, {iso['q_rate']:g} "
            f"heartbeats/s, a re-track every {iso['track_every']}th) during S's "
            f"{s['viewers']:,} first entries in {s['window_s']:g} s",
            f"Q during: p50 {_fmt(q['p50_ms'])} / p99 {_fmt(q['p99_ms'])} ms, errors "
            f"{q['errors']:,}; alone: p50 {_fmt(alone['p50_ms'])} / p99 "
            f"{_fmt(alone['p99_ms'])} ms, errors {alone['errors']:,}",
            f"Q p99 < {TARGETS['iso_q_p99_ms']:g} ms, 0 errors during",
            _yes(q_ok),
            f"during: {lim(q)}",
        ),
        (
            f"Tenant isolation: webinar S's {s['viewers']:,} first entries",
            f"registrations {s['registrations']:,}; 5xx {t['errors_5xx']}, 409 "
            f"{t['errors_409']}, no answer {t['no_answer']}; p99 {_fmt(t['p99_ms'], 1)} ms",
            f"all {s['viewers']:,} stored, 0 5xx",
            _yes(s_ok),
            f"during: {lim(s)}",
        ),
    ]


def _deployment_rows(r: dict[str, Any], lim: Any) -> list[Row]:
    """Issue #20: the pooler's ratio and the workers' figures with the advice they give."""
    rows: list[Row] = []
    pooler = r.get("pooler", {})
    if pooler.get("skipped"):
        rows.append((
            "Pings/s through PgBouncer (transaction mode) / direct",
            f"not measured: {pooler['skipped']}", "(reported)", "-", "-",
        ))  # fmt: skip
    elif "pgbouncer" in pooler and "direct" in pooler:
        a, b = pooler["pgbouncer"], pooler["direct"]
        rows.append((
            "Pings/s through PgBouncer (transaction mode) / direct",
            f"{_fmt(pooler.get('ratio'))} ({_fmt(a['rps'], 0)} / {_fmt(b['rps'], 0)} req/s, "
            f"{b['connections']} connections, this run)",
            "(reported)",
            "-",
            f"through PgBouncer: {lim(a)}",
        ))  # fmt: skip
    advice = workers_advice(r)
    if advice:
        runs = r["workers"]["runs"]
        one = runs[0]
        rows.append((
            "Workers 1 / 2 / 4: closed-loop pings/s (and tracks/s), "
            f"{one['ping']['connections']} connections",
            "; ".join(
                f"{w['workers']}: {_fmt(w['ping']['rps'], 0)} ({_fmt(w['track']['rps'], 0)}), "
                f"x {_fmt(_ratio(w['ping']['rps'], one['ping']['rps']))}"
                for w in runs
            ),
            "(reported: decides `--workers`)",
            "-",
            "; ".join(
                f"{w['workers']}: {lim(w['ping'], one=w['workers'] == 1)}" for w in runs
            ),
        ))  # fmt: skip
        rows.append((
            "Recommended `--workers` (from the figures above)",
            f"this machine {advice['here']}; 16 cores with PostgreSQL "
            f"{_fmt(advice['host16_shared'])}, without {advice['host16_own_db']}; shipped "
            f"default {advice['default']}",
            "(derived)",
            "-",
            "-",
        ))  # fmt: skip
    return rows


def _saturation(
    split: dict[str, float] | None, cores: int, run: dict[str, Any] | None = None
) -> str:
    """Who used the machine during a run, in words, from its CPU split (and the seconds
    that saturated it, ``run["cpu_saturation"]``, when the average leaves cores idle)."""
    if not split:
        return "no CPU figures"
    total = sum(split.values())
    parts = ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v >= 0.05
    )
    sat = (run or {}).get("cpu_saturation") or {}
    busy = (
        "the cores were saturated"
        if total >= 0.85 * cores
        else f"{cores - total:.2f} cores idle"
        + (
            f" on average, saturated {sat['seconds']:g} of {sat['window_s']:g} s"
            if sat.get("seconds", 0) >= 2
            else ""
        )
    )
    single = [
        k for k, v in split.items() if v >= 0.85 and k != "postgres" and not k.startswith("other")
    ]
    extra = f"; {', '.join(single)} at ~1 core (one Python process per server)" if single else ""
    return f"{parts} cores of {cores} ({busy}{extra})"


def limits(r: dict[str, Any]) -> list[str]:
    """One line per headline figure: what the machine was doing while it was measured."""
    cores = int(r["meta"]["machine"].get("cores") or 2)
    f = figures(r)
    out = []
    best = r.get("ceiling", {}).get("best", {}).get("ping")
    if best:
        run = next(
            (x for x in r["ceiling"]["runs"] if x["call"] == "ping" and x["tps"] == best["tps"]),
            None,
        )
        if run:
            out.append(f"pgbench ceiling (ping): {_saturation(run.get('cpu_cores'), cores, run)}.")
    if f["shim_ping"]:
        out.append(
            f"Shim, best ping run: {_saturation(f['shim_ping'].get('cpu_cores'), cores, f['shim_ping'])}."
        )
    for target, o in f["old_ping"].items():
        if o:
            out.append(f"{target}, best ping run: {_saturation(o.get('cpu_cores'), cores, o)}.")
    for s in f["storm"]:
        out.append(f"Join storm, {s['target']}: {_saturation(s.get('cpu_cores'), cores, s)}.")
    probes = f["steady"].get("probes", [])
    failed = [p for p in probes if not p["passed"]]
    if failed:
        p = min(failed, key=lambda p: p["viewers"])
        why = []
        if p["p99_ms"] >= 100:
            why.append(f"p99 {p['p99_ms']:,.0f} ms")
        if p["rps"] < 0.95 * p["offered_rps"]:
            why.append(f"{p['rps']:,.0f} of {p['offered_rps']:,.0f}/s answered")
        bad = {k: v for k, v in p["statuses"].items() if not k.startswith("2")}
        if bad:
            why.append(f"statuses {bad}")
        if p.get("gen_lag_p99_ms", 0) > 10:
            why.append(f"generator lag p99 {p['gen_lag_p99_ms']:,.0f} ms")
        out.append(
            f"Steady state, smallest failing V = {p['viewers']:,} ({', '.join(why)}): "
            f"{_saturation(p.get('cpu_cores'), cores, p)}."
        )
    return out


# -- charts --------------------------------------------------------------------------------


def charts(out: Path, r: dict[str, Any]) -> dict[str, str]:
    """Write the PNGs; returns {name: file} (empty when matplotlib is missing)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: the bench extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return {}
    made: dict[str, str] = {}
    for name, draw in CHARTS.items():
        fig = draw(plt, r)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        made[name] = f"{name}.png"
    return made


def _log_axes(ax: Any, xlabel: str, ylabel: str, *, legend: bool = True) -> None:
    """The house style of a latency chart: log y, grid, labels, small legend."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    if legend:
        ax.legend(fontsize=8)


def _throughput(plt: Any, r: dict[str, Any]) -> Any:
    """Calls per second against concurrency: pgbench, the shim, the old design."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, call in zip(axes, ("ping", "track"), strict=True):
        for mode in ("prepared", "pipeline"):
            pts = [
                (x["clients"], x["tps"])
                for x in r.get("ceiling", {}).get("runs", [])
                if x["call"] == call and x["mode"] == mode
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"pgbench {mode}")
        groups: dict[str, list[tuple[int, float]]] = {}
        for key in ("closed_shim", "closed_old"):
            for x in r.get(key, {}).get("runs", []):
                if x["call"] == call:
                    groups.setdefault(x["target"], []).append((x["connections"], x["rps"]))
        for target, pts in groups.items():
            ax.plot(*zip(*sorted(pts), strict=True), marker="s", label=target)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients / connections")
        ax.set_ylabel("calls per second")
        ax.set_title("presence_ping" if call == "ping" else "track_access (re-track)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def _latency(plt: Any, r: dict[str, Any]) -> Any:
    """Latency against offered load (open model)."""
    runs = r.get("open", {}).get("runs", [])
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for target in dict.fromkeys(x["target"] for x in runs):
        pts = sorted((x["offered_rps"], x) for x in runs if x["target"] == target)
        xs = [p[0] for p in pts]
        for q, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
            ax.plot(xs, [p[1][q] for p in pts], style, marker="o", label=f"{target} {q[:3]}")
    _log_axes(
        ax,
        "offered presence_ping rate (requests/s, open model)",
        "latency (ms, from scheduled send)",
    )
    return fig


def _storm(plt: Any, r: dict[str, Any]) -> Any:
    """The join storm: track_access p99 per second."""
    storms = r.get("storm", {}).get("runs", [])
    if not storms:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for s in storms:
        tl = s["timeline"]
        ax.plot([p["second"] for p in tl], [p["p99_ms"] for p in tl], marker=".", label=s["target"])
    for target in sorted({storm_target_ms(s) for s in storms}):
        ax.axhline(target, color="red", lw=0.8, ls="--", label=f"target p99 {target:,g} ms")
    _log_axes(ax, "second of the storm (by scheduled entry)", "track_access p99 (ms)")
    return fig


def _isolation(plt: Any, r: dict[str, Any]) -> Any:
    """Tenant isolation: Q's p99 per second alone and during S's storm; S's entries."""
    iso = r.get("isolation", {})
    if "during" not in iso:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, series in (
        ("Q alone (all calls)", iso["alone"]["timeline"]),
        ("Q during S's storm (all calls)", iso["during"]["timeline"]),
        ("S's first entries (track_access)", iso["s"]["timeline"]),
    ):
        ax.plot(
            [p["second"] for p in series], [p["p99_ms"] for p in series], marker=".", label=label
        )
    ax.axhline(TARGETS["iso_q_p99_ms"], color="red", lw=0.8, ls="--", label="Q's target p99")
    _log_axes(ax, "second of the run (by scheduled send)", "p99 (ms)")
    return fig


def _steady(plt: Any, r: dict[str, Any]) -> Any:
    """The steady-state search: p99 per number of viewers."""
    probes = r.get("steady", {}).get("probes", [])
    if not probes:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    pts = sorted((p["viewers"], p["p99_ms"], p["passed"]) for p in probes)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], color="grey", lw=0.8)
    for v, p99, ok in pts:
        ax.plot(v, p99, "o", color="green" if ok else "red")
    ax.axhline(TARGETS["steady_p99_ms"], color="red", lw=0.8, ls="--", label="p99 100 ms")
    _log_axes(ax, "simulated concurrent viewers V (rate = V/120 + V/300 per s)", "p99 (ms)")
    return fig


def _pollers(plt: Any, r: dict[str, Any]) -> Any:
    """Pollers: access_stats database calls per interval."""
    polls = r.get("pollers", {}).get("runs", [])
    if not polls:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    labels = [str(p["admins"]) for p in polls]
    ax.bar(labels, [p["db_calls_per_interval"] for p in polls], color="tab:blue")
    ax.axhline(1.0, color="red", lw=0.8, ls="--", label="target ≤ 1")
    ax.set_xlabel("admins polling every 5 s")
    ax.set_ylabel("access_stats database calls per 5 s")
    ax.legend(fontsize=8)
    return fig


# name of the PNG -> its drawing (None when the run has no data for it)
CHARTS = {
    "throughput": _throughput,
    "latency_vs_load": _latency,
    "storm": _storm,
    "isolation": _isolation,
    "steady": _steady,
    "pollers": _pollers,
}


# -- markdown ------------------------------------------------------------------------------


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _intro(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """The title, the headline, what limited it, the machine and the exact commands."""
    lines: list[str] = []
    meta = r["meta"]
    cfg = meta["config"]
    facts = meta.get("facts", {})
    tools = meta.get("tools", {})
    machine = meta["machine"]
    lines += [
        "# eventlive-rpc benchmark report",
        "",
        f"Run `{cfg['name']}` started {meta['started_utc']}, took {_fmt(meta.get('duration_s'), 0)} s.",
        "All figures below were measured in this run; ratios compare figures of this run only.",
        "",
        "## Headline (against the targets)",
        "",
        "The last column: the CPU cores each component used while the figure was measured "
        "(shim, postgres, gen = the load generator, other = processes not the bench's), and "
        "what that says limited it.",
        "",
        *_table(
            ["figure", "measured", "target", "met", "CPU cores: what limited it"],
            [list(x) for x in headline(r)],
        ),
        "",
    ]
    lim = limits(r)
    if lim:
        lines += ["### What the machine was doing (CPU cores per component, from /proc)", ""]
        lines += [f"- {x}" for x in lim]
        lines.append("")
    if not made:
        lines += [
            "(charts not drawn: matplotlib is not installed; `pip install -e '.[bench]'`)",
            "",
        ]
    failed = meta.get("scenarios_failed") or {}
    if failed:
        lines += ["**Scenarios that failed in this run:**", ""]
        lines += [f"- `{k}`: {v}" for k, v in failed.items()]
        lines.append("")
    lines += [
        "## Machine and tools",
        "",
        f"- {machine['cores']} cores ({machine['cpu']}), {machine['memory']}, {machine['os']}",
        f"- PostgreSQL {facts.get('pg_version', '?')} ({facts.get('pg_bindir', '?')}), "
        "throwaway server from `shim.pg.throwaway` (fsync off, full_page_writes off; "
        "synchronous_commit at its default)",
        "- " + ", ".join(f"{k} {v}" for k, v in tools.items()),
        f"- Shim: `eventlive serve` as shipped, {cfg['workers']} worker(s) (its default: "
        f"{meta.get('shipped_workers', '?')}): access log on, "
        "metrics, token cache, coalescing and pool at their defaults. Old design: API app "
        "and proxy hop, "
        f"{cfg['workers']} worker(s) each, the same pool max.",
        f"- Seeding: database {_fmt(facts.get('seed_s'))} s (set-based; "
        f"{_fmt(facts.get('viewers', {}).get('steady'))} steady-state viewers entered among "
        "them), "
        f"{_fmt(facts.get('tokens'))} tokens minted in {_fmt(facts.get('tokens_s'))} s; peak "
        "memory (MiB): "
        + (", ".join(f"{k} {v:,}" for k, v in facts.get("peak_rss_mib", {}).items()) or "-")
        + ".",
        f"- Closed-loop generator: {cfg['loadgen']}. Open-model, storm, steady-state and poller "
        "runs use the Python generator (`bench.loadgen`, asyncio + uvloop, own process).",
        "- **Everything shares the same cores**: load generator, shim (and old design), "
        "PostgreSQL. The generator's CPU is taken from the servers it measures. \"CPU cores "
        "used\" columns split the machine's time per component during each run (from /proc "
        "and getrusage): shim / old-app / old-proxy / postgres / gen (load generator) / other "
        '(processes that are not the bench\'s: a shared machine). "Cores saturated N of M s": '
        "the seconds of a run under 10 % idle, sampled every second, with the split of those "
        "seconds (an average over a storm and its drain hides them).",
        "- **Between scenarios** the bench waits until no request of the servers is active "
        "and pays the database's vacuum debt (`VACUUM (ANALYZE)`: the dead rows of the "
        "scenarios before are not autovacuumed in the middle of the next one; what a "
        "scenario's own writes make autovacuum do still happens during it).",
        "",
        "## Exact commands",
        "",
        f"- Whole run: `{meta['command']}`",
    ]
    ceiling = r.get("ceiling", {})
    seen = set()
    for x in ceiling.get("runs", []):
        if x["mode"] in seen:
            continue
        seen.add(x["mode"])
        lines.append(
            f"- pgbench ({x['mode']}), e.g.: `{x['command']}`, script `{x['script_name']}`:"
        )
        lines += ["", "```", x["script"].rstrip(), "```", ""]
    shim_runs = r.get("closed_shim", {}).get("runs", [])
    if shim_runs:
        lines.append(f"- closed loop, e.g.: `{shim_runs[0]['command']}`")
    lines.append("")
    return lines


def _ceiling_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """1. The ceiling: pgbench on the same SQL functions."""
    lines: list[str] = []
    cfg = r["meta"]["config"]
    ceiling = r.get("ceiling", {})
    lines += ["## 1. Ceiling: pgbench on the same SQL functions", ""]
    if ceiling.get("skipped"):
        lines.append(f"Skipped: {ceiling['skipped']}")
    for note in ceiling.get("notes", []):
        lines.append(f"Note: {note}")
    runs = ceiling.get("runs", [])
    if runs:
        lines += [
            "pgbench logs in as the shim does (`authenticator`) and switches to "
            "`authenticated` with the viewer's claims, transaction-locally. `pipeline`: the SQL "
            "side's scripts (`bench/pgbench_presence_ping.sql`, `bench/pgbench_track_access.sql`): "
            "begin, role, claims, call, commit in one pipeline -- one round trip, the shim's "
            "exchange -- with `-M extended` (pgbench prepares a pipeline's statements up front "
            "as the login role, which may not use schema `api`). `prepared`: `-M prepared`, the "
            "same statements one after another (five round trips, parsed once per connection). "
            "track_access is a re-confirmation with the viewer's session id. Viewers drawn at "
            f"random from {cfg['ceiling_pool']:,} pre-entered ones of a webinar with a 15 s "
            "heartbeat (3.75 s ping throttle), so most pings write.",
            "",
            "`strict` (presence_ping; issue #19): the cheapest form in which PostgreSQL takes "
            "one call, `bench/pgbench_presence_ping_strict.sql` with `-M prepared`: one "
            "prepared statement per autocommit transaction, `select set_config('role', "
            "'authenticated', true), set_config('request.jwt.claims', <claims>, true), "
            "api.presence_ping(<webinar>, <session>)`. PostgreSQL checks USAGE on schema `api` "
            "and EXECUTE on the function as the login role, when it parses and starts the "
            "statement, before the statement's own role switch runs; `authenticator` "
            "(NOINHERIT) has those rights only after switching, so this form logs in as "
            "`bench_caller`, a bench-only member of `authenticated` that inherits: exactly "
            "authenticated's rights. The same function then runs with the same claims "
            "(security definer: `auth.uid()` from the claims; the role switch is the "
            "statement's own). Not reported as the pipeline/prepared ceiling, which stays "
            "as it was.",
            "",
        ]
        lines += _strict_checks(ceiling.get("strict_checks"))
        lines += _table(
            ["call", "mode", "clients", "calls/s", "avg latency ms", "failed",
             "CPU ms/call: postgres, pgbench", "CPU cores used"],
            [
                [x["call"], x["mode"], str(x["clients"]), _fmt(x["tps"], 0),
                 _fmt(x["latency_avg_ms"], 3),
                 str(x["failed"]) + (f" ({x['aborted_clients']} clients aborted: not a "
                                     "ceiling)" if x.get("aborted_clients") else ""),
                 f"{_fmt(cpu_ms(x.get('cpu_cores'), x['tps'], 'postgres'), 3)}, "
                 f"{_fmt(cpu_ms(x.get('cpu_cores'), x['tps'], 'load generator'), 3)}",
                 _cpu(x.get("cpu_cores"))]
                for x in runs
            ],
        )  # fmt: skip
        lines.append("")
        for call, b in ceiling.get("best", {}).items():
            lines.append(
                f"Ceiling {call}: **{_fmt(b['tps'], 0)} calls/s** ({b['mode']}, {b['clients']} clients)."
            )
        for call, b in ceiling.get("best_strict", {}).items():
            lines.append(
                f"Strict ceiling {call}: **{_fmt(b['tps'], 0)} calls/s** ({b['clients']} clients)."
            )
        lines.append("")
    return lines


def _strict_checks(checks: dict[str, Any] | None) -> list[str]:
    """What the strict statement was shown to do on the server before it was measured."""
    if not checks:
        return []
    wrong, piped = checks.get("wrong_session") or [], checks.get("wrong_session_pipeline") or []
    return [
        "Checked on the server before the runs, the statement run as pgbench runs it "
        f"(prepared, as `{checks['login_role']}`): the call runs as "
        f"`{checks['runs_as']}` with `auth.uid()` = the viewer of the claims "
        f"({_yes(checks['uid'] is not None)}); after it the session is "
        f"`{checks['role_after']}` again (the switch was transaction-local); the heartbeat "
        f"was written: {_yes(checks['wrote'])}; the viewer's claims with another viewer's "
        f"session: `{' / '.join(str(x) for x in wrong)}`, through the shim's pipeline form "
        f"`{' / '.join(str(x) for x in piped)}`. Same work: **{_yes(checks['same_work'])}**.",
        "",
    ]


def _closed_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """2-3. The shim and the old design, closed loop; the profile; the open model."""
    lines: list[str] = []
    f = figures(r)
    lines += ["## 2-3. Shim and old design, closed loop (maximum)", ""]
    closed_runs = r.get("closed_shim", {}).get("runs", []) + r.get("closed_old", {}).get("runs", [])
    if closed_runs:
        lines += [
            "Each request as its own viewer (pre-minted HS256 JWT, its session id), on the "
            "legacy routes both designs serve (`/api/webinars/{id}/presence/ping`, "
            "`.../access/track` with the session id: a re-track). The old design: per call "
            "a simulated auth-server lookup (the delay given; realistic default 30 ms; the "
            "incident saw ~2 s, which would make any ratio absurd), then separate queries, "
            "each its own PostgREST-style transaction, through a proxy hop.",
            "",
        ]
        rows = []
        for x in closed_runs:
            ceil = f.get(f"ceiling_{x['call']}")
            sp = f.get(f"shim_{x['call']}")
            rows.append([
                x["target"], x["call"], str(x["connections"]), _fmt(x["rps"], 0),
                _fmt(x["p50_ms"]), _fmt(x["p95_ms"]), _fmt(x["p99_ms"]), _fmt(x["max_ms"]),
                _statuses(x["statuses"]), _fmt(x.get("statements_per_call")),
                _fmt(_ratio(x["rps"], ceil)),
                _fmt(_ratio(sp["rps"], x["rps"])) if sp and x["target"] != "shim" else "-",
                f"{_fmt(cpu_ms(x.get('cpu_cores'), x['rps'], *_server_names(x['target'])), 3)}, "
                f"{_fmt(cpu_ms(x.get('cpu_cores'), x['rps'], 'postgres'), 3)}",
                _cpu(x.get("cpu_cores")),
            ])  # fmt: skip
        lines += _table(
            ["target", "call", "conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
             "statuses", "stmts/call", "/ ceiling", "shim best / this",
             "CPU ms/req: server, postgres", "CPU cores used"],
            rows,
        )  # fmt: skip
        lines.append("")
    if "throughput" in made:
        lines += [f"![throughput against concurrency]({made['throughput']})", ""]

    prof = r.get("profile", {})
    if prof.get("skipped"):
        lines += ["### Profile of the shim under load", "", f"Skipped: {prof['skipped']}", ""]
    elif prof.get("samples"):
        lines += [
            "### Profile of the shim under load (py-spy)",
            "",
            f"`{prof['command']}` on the {prof['pid_role']} while presence_ping runs closed-loop "
            f"({_fmt(prof.get('load_rps'), 0)} req/s, {_statuses(prof.get('load_statuses') or {})}); "
            f"{prof['samples']:,} samples of the process on CPU.",
            "",
        ]
        lines += _table(
            ["area (innermost matching frame)", "share of samples"],
            [[a, f"{s:.0%}"] for a, s in prof["areas"].items()],
        )
        lines += [""]
        lines += _table(
            ["top of stack (self)", "share"],
            [[f"`{x['frame']}`", f"{x['share']:.1%}"] for x in prof["self"]],
        )
        lines.append("")
    opened = r.get("open", {}).get("runs", [])
    if opened:
        lines += [
            "### Open model: latency against offered load (presence_ping)",
            "",
            "Requests scheduled at a fixed rate whatever the answers (up to 256 keep-alive "
            "connections); latency from the scheduled moment, so overload shows as latency. "
            '"gen lag": how late the generator itself started requests (its own saturation '
            "on the shared cores; it is part of the latency).",
            "",
        ]
        lines += _table(
            ["target", "offered/s", "of closed max", "answered/s", "p50 ms", "p95 ms", "p99 ms",
             "max ms", "statuses", "gen lag p99 ms"],
            [
                [x["target"], _fmt(x["offered_rps"], 0), _fmt(x["fraction_of_closed_max"]),
                 _fmt(x["rps"], 0), _fmt(x["p50_ms"]), _fmt(x["p95_ms"]), _fmt(x["p99_ms"]),
                 _fmt(x["max_ms"]), _statuses(x["statuses"]), _fmt(x.get("gen_lag_p99_ms"))]
                for x in opened
            ],
        )  # fmt: skip
        lines.append("")
    if "latency_vs_load" in made:
        lines += [f"![latency against offered load]({made['latency_vs_load']})", ""]
    return lines


def _storm_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """4. The join storm."""
    lines: list[str] = []
    storms = r.get("storm", {}).get("runs", [])
    if storms:
        s0 = storms[0]
        lines += [
            "## 4. Join storm",
            "",
            f"{s0['viewers']:,} never-registered viewers call track_access (no session id) at "
            f"uniform random moments within {s0['window_s']:g} s; {s0['doubles']:,} of them "
            "twice at the same moment (two tabs). Each then pings once at the "
            f"first_ping_in its answer gave, divided by {s0['compress']:g} (time compression: "
            "the 120 s heartbeat spread plays out in "
            f"{120 / s0['compress']:.0f} s). A viewer with two tabs pings with the session "
            "that superseded the other. The larger storm (same window) has viewers of its "
            "own, first-seen by the shim like the first storm's, and its own p99 target.",
            "",
        ]
        lines += _table(
            ["target", "viewers", "track calls", "track statuses", "track p50 / p99 / max ms",
             "p99 target ms", "registrations", "pings", "ping statuses", "ping p99 ms",
             "CPU cores used"],
            [
                [s["target"], _fmt(s["viewers"]), _fmt(s["track"]["requests"]),
                 _statuses(s["track"]["statuses"]),
                 f"{_fmt(s['track']['p50_ms'])} / {_fmt(s['track']['p99_ms'])} / {_fmt(s['track']['max_ms'])}",
                 _fmt(storm_target_ms(s), 0),
                 _fmt(s["registrations"]), _fmt(s["ping"]["requests"]),
                 _statuses(s["ping"]["statuses"]), _fmt(s["ping"]["p99_ms"]), _cpu(s.get("cpu_cores"))]
                for s in storms
            ],
        )  # fmt: skip
        pair = [storms[0], *[x for x in storms if x["target"] != "shim"][:1]]
        if len(pair) == 2 and storms[0]["track"]["p99_ms"]:
            a, b = pair
            lines += [
                "",
                f"track_access p99, {b['target']} / {a['target']}: "
                f"{_fmt(_ratio(b['track']['p99_ms'], a['track']['p99_ms']))}; 409s "
                f"{a['track']['errors_409']} vs {b['track']['errors_409']}; unanswered "
                f"{a['track']['no_answer']} vs {b['track']['no_answer']}.",
            ]
        lines.append("")
        if "storm" in made:
            lines += [f"![join storm]({made['storm']})", ""]
    return lines


def _steady_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """5. The steady state."""
    lines: list[str] = []
    steady = r.get("steady", {})
    if steady.get("probes"):
        lines += [
            "## 5. Steady state",
            "",
            "V viewers at their real intervals: a ping every 120 s and a re-track every "
            "300 s each, so V/120 + V/300 calls/s (71 % pings, 29 % tracks), open model. "
            "No time compression: the rate is the real one, and the viewers are visited in "
            f"a shuffled round robin over a pool of V pre-entered viewers (pool up to "
            f"{steady['pool']:,}), so each viewer's calls are ~86 s apart and every ping "
            "writes. A probe passes with p99 < 100 ms, only 2xx answers and the offered rate "
            "achieved; V doubles until a probe fails, then bisects.",
            "",
        ]
        warm = steady.get("warm_up")
        if warm and "token_cache" in warm:
            lines += [
                f"Before the search the first {warm['pings']:,} viewers of the pool pinged "
                f"once ({warm['seconds']} s, {_statuses(warm['statuses'])}): a steady audience "
                "has pinged before, so its tokens are in the shim's token cache (first-seen "
                "tokens are the join storm's subject). As many as the shim's token cache "
                f"holds ({warm['token_cache']:,} per worker, its setting as run), not the whole "
                "pool: it evicts the oldest first, so more would only push out the first "
                "viewers again, which every probe draws from. A probe with V above it meets "
                'misses ("token cache hits", from the shim\'s /metrics); a real audience that '
                "large, pinging in a cycle, would miss more often still. The generator runs "
                "without garbage collection while it measures.",
                "",
            ]
        lines += _table(
            ["V", "offered/s", "answered/s", "p50 ms", "p99 ms", "max ms", "statuses", "passed",
             "token cache hits", "gen lag p99 ms", "CPU cores used"],
            [
                [_fmt(p["viewers"]), _fmt(p["offered_rps"], 0), _fmt(p["rps"], 0), _fmt(p["p50_ms"]),
                 _fmt(p["p99_ms"]), _fmt(p["max_ms"]), _statuses(p["statuses"]), _yes(p["passed"]),
                 _hit_share(p.get("token_cache")), _fmt(p.get("gen_lag_p99_ms")),
                 _cpu(p.get("cpu_cores"))]
                for p in steady["probes"]
            ],
        )  # fmt: skip
        lines += ["", f"Largest V that passed: **{steady['best_viewers']:,}**.", ""]
        if "steady" in made:
            lines += [f"![steady state search]({made['steady']})", ""]
    return lines


def _hit_share(cache: dict[str, int | None] | None) -> str:
    """Token cache hits of a probe as a share of its lookups ("-" without figures)."""
    if not cache or cache.get("hits") is None or cache.get("misses") is None:
        return "-"
    hits, misses = cache["hits"] or 0, cache["misses"] or 0
    return f"{hits / (hits + misses):.0%}" if hits + misses else "-"


def _loop_lag(lag: dict[str, Any] | None) -> str:
    """The shares of the shim's loop-lag samples over 10 / 50 / 100 ms, as percentages."""
    if not lag:
        return "(as above)" if lag is None else "-"
    shares = [lag.get(f"over_{ms}ms") for ms in (10, 50, 100)]
    return " / ".join("-" if v is None else f"{v * 100:.0f} %" for v in shares) + (
        f" of {lag['samples']:,}"
    )


def _isolation_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """4b. Tenant isolation: webinar Q's heartbeats alone and during S's storm."""
    iso = r.get("isolation", {})
    if "during" not in iso:
        return []
    s = iso["s"]
    cores = int(r["meta"]["machine"].get("cores") or 2)
    lines = [
        "## 4b. Tenant isolation: webinar Q during webinar S's storm",
        "",
        f"Webinar Q: {iso['q_viewers']:,} entered viewers send {iso['q_rate']:g} calls/s "
        "(open model, fixed rate, latency from the scheduled send), every "
        f"{iso['track_every']}th a track_access re-confirmation with the viewer's session id, "
        "the rest heartbeats; Q's heartbeat is 15 s, so its pings write. First alone, then "
        f"while webinar S gets {s['viewers']:,} first entries (never-registered viewers, "
        f"track_access without a session id, uniform within {s['window_s']:g} s), each "
        f"then pinging at its first_ping_in divided by {s['compress']:g}, the join storm's "
        "generator. Q and S are two generator processes started together (clock skew "
        f"{_fmt(iso.get('start_skew_s'), 3)} s); Q runs for the whole storm (entries and "
        "their pings); \"entry window\": Q's calls within S's entry window only. Errors: "
        'every answer that is not 2xx, no answer included. "Shim loop late": the share '
        "of the shim's event-loop lag samples (a timer due every 0.1 s in each worker, "
        "`eventlive_loop_lag_seconds`) later than 10 / 50 / 100 ms over the run: what a "
        "heartbeat read by a worker waits for before its turn.",
        "",
    ]
    rows = []
    for name, q in (
        ("Q alone", iso["alone"]),
        ("Q during S's storm", iso["during"]),
        ("Q during S's entry window", iso["during_entries"]),
    ):
        rows.append([
            name, _fmt(q["requests"]), _statuses(q["statuses"]),
            f"{_fmt(q['p50_ms'])} / {_fmt(q['p99_ms'])} / {_fmt(q['max_ms'])}",
            f"{_fmt(q['ping']['p99_ms'])} / {_fmt(q['track']['p99_ms'])}",
            _fmt(q["errors"]), _fmt(q.get("gen_lag_p99_ms")), _loop_lag(q.get("loop_lag")),
            _limit(q["cpu_cores"], cores, saturation=q.get("cpu_saturation"))
            if "cpu_cores" in q
            else "(as above)",
        ])  # fmt: skip
    lines += _table(
        ["Q", "calls", "statuses", "p50 / p99 / max ms", "p99 ms: pings / re-tracks", "errors",
         "gen lag p99 ms", "shim loop late > 10 / 50 / 100 ms", "CPU cores: what limited it"],
        rows,
    )  # fmt: skip
    t, ping = s["track"], s["ping"]
    lines += [
        "",
        *_table(
            ["S", "entries", "statuses", "5xx", "409", "no answer", "registrations stored",
             "p50 / p99 / max ms", "pings", "ping statuses", "ping p99 ms"],
            [[
                "S's storm", _fmt(t["requests"]), _statuses(t["statuses"]), _fmt(t["errors_5xx"]),
                _fmt(t["errors_409"]), _fmt(t["no_answer"]), _fmt(s["registrations"]),
                f"{_fmt(t['p50_ms'])} / {_fmt(t['p99_ms'])} / {_fmt(t['max_ms'])}",
                _fmt(ping["requests"]), _statuses(ping["statuses"]), _fmt(ping["p99_ms"]),
            ]],
        ),
        "",
    ]  # fmt: skip
    if "isolation" in made:
        lines += [f"![tenant isolation]({made['isolation']})", ""]
    return lines


def _pollers_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """6. The pollers."""
    lines: list[str] = []
    pol = r.get("pollers", {})
    if pol.get("skipped"):
        lines += ["## 6. Pollers", "", f"Skipped: {pol['skipped']}", ""]
    elif pol.get("runs"):
        lines += [
            "## 6. Pollers",
            "",
            "Admins (webinar staff) GET `/api/webinars/{id}/stats/access` every 5 s, "
            f"staggered, while viewers heartbeat at {pol['viewer_rps']:g}/s. Database calls: "
            "pg_stat_statements `calls` of statements calling access_stats, reset before "
            "each run.",
            "",
        ]
        lines += _table(
            ["admins", "seconds", "access_stats db calls", "per 5 s", "polls", "poll statuses",
             "poll p99 ms", "ping p99 ms"],
            [
                [str(p["admins"]), _fmt(p["seconds"], 0), _fmt(p["db_calls"]),
                 _fmt(p["db_calls_per_interval"]), _fmt(p["stats"]["requests"]),
                 _statuses(p["stats"]["statuses"]), _fmt(p["stats"]["p99_ms"]), _fmt(p["ping"]["p99_ms"])]
                for p in pol["runs"]
            ],
        )  # fmt: skip
        lines.append("")
        if "pollers" in made:
            lines += [f"![pollers]({made['pollers']})", ""]
    return lines


def _workers_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """7. One, two and four shim processes, side by side."""
    runs = r.get("workers", {}).get("runs", [])
    if not runs:
        return []
    rows = []
    for w in runs:
        p, t, s = w["ping"], w["track"], w["storm"]
        rows.append([
            str(w["workers"]),
            f"{_fmt(p['rps'], 0)} / {_fmt(p['p99_ms'])}",
            f"{_fmt(cpu_ms(p.get('cpu_cores'), p['rps'], 'shim'), 3)}, "
            f"{_fmt(cpu_ms(p.get('cpu_cores'), p['rps'], 'postgres'), 3)}",
            _fmt(p.get("statements_per_call")),
            f"{_fmt(t['rps'], 0)} / {_fmt(t['p99_ms'])}",
            _statuses(s["track"]["statuses"]),
            f"{_fmt(s['track']['p50_ms'])} / {_fmt(s['track']['p99_ms'])}",
            _fmt(s["registrations"]),
            _cpu(s.get("cpu_cores")),
        ])  # fmt: skip
    lines = [
        "## 7. Workers: one, two and four processes",
        "",
        "`eventlive serve --workers N` with everything else as shipped, one after the other in "
        f"this run: closed-loop calls at {runs[0]['ping']['connections']} connections, then a "
        f"join storm of {runs[0]['storm']['viewers']:,} first-time viewers on a webinar of "
        "each run's own.",
        "",
    ]
    lines += _table(
        ["workers", "ping req/s / p99 ms", "ping CPU ms/req: shim, postgres", "stmts/ping",
         "track req/s / p99 ms", "storm track statuses", "storm track p50 / p99 ms",
         "registrations", "storm CPU cores used"],
        rows,
    )  # fmt: skip
    one = runs[0]
    for b in runs[1:]:
        lines += [
            "",
            f"{b['workers']} workers / {one['workers']}: ping "
            f"{_fmt(_ratio(b['ping']['rps'], one['ping']['rps']))} times, "
            f"track {_fmt(_ratio(b['track']['rps'], one['track']['rps']))} times, storm p99 "
            f"{_fmt(_ratio(b['storm']['track']['p99_ms'], one['storm']['track']['p99_ms']))} times.",
        ]
    advice = workers_advice(r)
    if advice:
        lines += ["", advice["text"]]
    return [*lines, ""]


def _pooler_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """8. Pings through PgBouncer (transaction mode) ÷ direct."""
    res = r.get("pooler", {})
    if res.get("skipped"):
        return ["## 8. Behind a transaction pooler", "", f"Skipped: {res['skipped']}.", ""]
    if "pgbouncer" not in res or "direct" not in res:
        return []
    rows = [
        [
            name,
            f"{_fmt(x['rps'], 0)} / {_fmt(x['p99_ms'])}",
            _statuses(x["statuses"]),
            f"{_fmt(cpu_ms(x.get('cpu_cores'), x['rps'], 'shim'), 3)}, "
            f"{_fmt(cpu_ms(x.get('cpu_cores'), x['rps'], 'postgres'), 3)}",
        ]
        for name, x in (("through PgBouncer", res["pgbouncer"]), ("direct", res["direct"]))
    ]
    lines = [
        "## 8. Behind a transaction pooler",
        "",
        "Closed-loop pings at "
        f"{res['direct']['connections']} connections, the shim's pool through PgBouncer "
        "(`pool_mode = transaction`, statements unprepared, LISTEN direct) and then direct, "
        "in this run.",
        "",
    ]
    lines += _table(["pool", "ping req/s / p99 ms", "statuses", "CPU ms/req: shim, postgres"], rows)
    lines += ["", f"Pings/s through PgBouncer / direct: **{_fmt(res.get('ratio'))}**.", ""]
    return lines


def _notes_section(r: dict[str, Any], made: dict[str, str]) -> list[str]:
    """Free-text notes of the run."""
    lines: list[str] = []
    notes = r.get("notes")
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return lines


SECTIONS = (
    _intro,
    _ceiling_section,
    _closed_section,
    _storm_section,
    _isolation_section,
    _steady_section,
    _pollers_section,
    _workers_section,
    _pooler_section,
    _notes_section,
)


def markdown(r: dict[str, Any], made: dict[str, str]) -> str:
    """The whole report: each section in turn."""
    return "\n".join(line for section in SECTIONS for line in section(r, made)) + "\n"


def write(out: Path, results: dict[str, Any]) -> Path:
    made = charts(out, results)
    path = out / "report.md"
    path.write_text(markdown(results, made))
    return path


def main() -> int:
    out = Path(sys.argv[1])
    write(out, json.loads((out / "results.json").read_text()))
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
