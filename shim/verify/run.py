"""The orchestration of ``eventlive verify``: nodes and database first (DoD-1..3 and
readiness), then the flows (DoD-4), into one ``Report``."""

from __future__ import annotations

import datetime as dt
import time

from shim.console.verdicts import FAIL, OK, Counts, Verdict, evaluate
from shim.verify.flows import SetupError, run_flows
from shim.verify.nodes import CannotCheckError, database_stats, scrape
from shim.verify.report import Report


def verify(
    urls: list[str],
    dsn: str,
    secret: str | None,
    *,
    window: float | None = None,
    since: float | None = None,
    flows: bool = True,
    push_timeout: float = 12.0,
) -> Report:
    """The checklist against ``urls`` and ``dsn`` (see the module doc)."""
    t0 = time.monotonic()
    report = Report(dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat())
    try:
        _check(report, urls, dsn, secret, (window, since), flows=flows, push_timeout=push_timeout)
    except (CannotCheckError, SetupError) as exc:
        report.cannot_check = str(exc)
    report.seconds = time.monotonic() - t0
    return report


def _check(
    report: Report,
    urls: list[str],
    dsn: str,
    secret: str | None,
    span: tuple[float | None, float | None],
    *,
    flows: bool,
    push_timeout: float,
) -> None:
    window, since = span
    nodes = scrape(urls)
    report.database = database_stats(dsn)
    report.nodes = [
        {
            "url": n.url,
            "ready": n.ready_note,
            "started_at": dt.datetime.fromtimestamp(n.started, dt.UTC)
            .replace(microsecond=0)
            .isoformat(),
        }
        for n in nodes
    ]
    unready = [n for n in nodes if not n.ready]
    report.verdicts.append(
        Verdict(
            "NODES",
            "nodes ready",
            FAIL if unready else OK,
            f"{len(nodes) - len(unready)}/{len(nodes)} node(s) ready, database reachable",
            [{"url": n.url, "ready": n.ready_note} for n in unready],
        )
    )
    # DoD-1..3 are read before the flows run: the flows' own traffic is not evidence.
    total = Counts()
    windows = set()
    for n in nodes:
        c = n.counts(window, since)
        windows.add(c.window)
        total.add(c)
    total.window = ", ".join(sorted(windows))
    report.verdicts.extend(evaluate(total))
    if not flows:
        return
    if not secret:
        raise CannotCheckError(
            "no JWT secret for the flows' tokens: --jwt-secret-file, $JWT_SECRET or the "
            "embedded default's .eventlive/dev-jwt-secret (or --no-flows)"
        )
    run = run_flows(urls[0], dsn, secret, push_timeout=push_timeout)
    report.steps, report.webinar_id, report.cleaned = run.steps, run.webinar_id, run.cleaned
    failed = [s for s in run.steps if s.status == FAIL]
    na = [s for s in run.steps if s.status not in (OK, FAIL)]
    summary = f"{len(run.steps) - len(failed) - len(na)}/{len(run.steps)} steps OK"
    if na:
        summary += f", {len(na)} not available on this deployment"
    if failed:
        summary += "; failed: " + "; ".join(
            f"{s.flow} {s.step} ({s.http} {s.note})" for s in failed
        )
    if not run.cleaned:
        summary += f"; webinar {run.webinar_id} NOT removed"
    report.verdicts.append(
        Verdict("DoD-4", "functional flows", FAIL if failed else OK, summary + f" [on {urls[0]}]")
    )
