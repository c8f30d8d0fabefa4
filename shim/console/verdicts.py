"""The post-deploy checklist's DoD-1..3 as rules over the shim's own metrics, shared by
``eventlive verify`` (which scrapes ``/metrics`` of every node) and ``/status`` (which
reads its own registry): both hand in Prometheus metric families, so the rules are one.

- DoD-1 fails when any call ended in SQLSTATE 42703 / 42P01 / 42883 (a column, table or
  function that does not exist) in the window.
- DoD-2 fails when 409s *explode*: for some function and reason, more than
  ``EXPLODING_PER_MINUTE`` per minute over the window **and** more than
  ``EXPLODING_SHARE`` of that function's answers (a big webinar may see a few
  ``session_superseded`` a minute; a storm is both frequent and a share of the traffic).
- DoD-3: the shim calls no auth server per request (tokens are verified in-process; the
  only auth traffic is JWKS fetches, counted). It fails when rejected tokens explode by
  the same rule (each 401 sends a client to the auth server for a new token).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shim.http.metrics import WINDOWS

UNKNOWN_OBJECT = {
    "42703": "undefined column",
    "42P01": "undefined table",
    "42883": "undefined function",
}
EXPLODING_PER_MINUTE = 30.0
EXPLODING_SHARE = 0.01

OK, FAIL = "OK", "FAIL"


@dataclass
class Counts:
    """Counts over one span (seconds), summed over nodes."""

    seconds: float = 0.0
    window: str = "since start"
    errors: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)
    token_hits: float = 0.0
    token_misses: float = 0.0
    jwks_fetches: float = 0.0

    def add(self, other: Counts) -> None:
        """Sum ``other`` (another node) into this one; the span is the longest."""
        self.seconds = max(self.seconds, other.seconds)
        for key, n in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + n
        for fn, n in other.requests.items():
            self.requests[fn] = self.requests.get(fn, 0) + n
        self.token_hits += other.token_hits
        self.token_misses += other.token_misses
        self.jwks_fetches += other.jwks_fetches


def counts_from(families: Iterable[Any], window: str | None, now: float | None = None) -> Counts:
    """``Counts`` from one node's metric families: totals since its start when ``window``
    is None, else the ``eventlive_window_*`` series of that window (``1m`` .. ``60m``)."""
    now = time.time() if now is None else now
    c = Counts(window=window or "since start")
    started = now
    span = None
    for fam in families:
        for s in fam.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "eventlive_process_start_time_seconds":
                started = value
            elif window is None and name == "eventlive_errors_total":
                key = (labels["function"], labels["status"], labels["sqlstate"], labels["reason"])
                c.errors[key] = c.errors.get(key, 0) + value
            elif window is None and name == "eventlive_requests_total":
                fn = labels["function"]
                c.requests[fn] = c.requests.get(fn, 0) + value
            elif window is not None and labels.get("window") == window:
                if name == "eventlive_window_errors":
                    key = (
                        labels["function"],
                        labels["status"],
                        labels["sqlstate"],
                        labels["reason"],
                    )
                    c.errors[key] = c.errors.get(key, 0) + value
                elif name == "eventlive_window_requests":
                    c.requests[labels["function"]] = c.requests.get(labels["function"], 0) + value
            elif name == "eventlive_token_cache_total":
                setattr(c, "token_hits" if labels["result"] == "hit" else "token_misses", value)
            elif name == "eventlive_jwks_fetches_total":
                c.jwks_fetches = value
    if window is not None:
        span = WINDOWS[window]
    c.seconds = max(0.0, now - started) if span is None else min(span, max(0.0, now - started))
    return c


@dataclass
class Verdict:
    """One checklist line: its id (``DoD-n``, the checklist's number, shown as a tag), its
    plain name (what a new operator reads), OK/FAIL, a one-line summary and the rows
    behind it."""

    check: str
    title: str
    status: str
    summary: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "rows": self.rows,
        }


def per_minute(n: float, seconds: float) -> float:
    """``n`` as a rate per minute over ``seconds`` (at least one minute, so a burst in a
    node's first seconds is not multiplied up)."""
    return n * 60.0 / max(seconds, 60.0)


def exploding(n: float, total: float, seconds: float) -> bool:
    """The README's rule: over ``EXPLODING_PER_MINUTE``/min and ``EXPLODING_SHARE`` of calls."""
    return per_minute(n, seconds) > EXPLODING_PER_MINUTE and n > EXPLODING_SHARE * max(total, n)


def _label(fn: str) -> str:
    return fn or "(before a function was known)"


def dod1(c: Counts) -> Verdict:
    """Errors from unknown columns, tables, functions, by function."""
    found = [
        (int(n), _label(fn), code)
        for (fn, _status, code, _reason), n in sorted(c.errors.items())
        if code in UNKNOWN_OBJECT and n > 0
    ]
    rows: list[dict[str, Any]] = [
        {"function": fn, "sqlstate": code, "what": UNKNOWN_OBJECT[code], "count": n}
        for n, fn, code in found
    ]
    total = sum(n for n, _fn, _code in found)
    if total:
        n, fn, code = max(found)
        summary = f"{total} error(s) from missing objects; most: {fn} {code} ({n})"
    else:
        summary = "0 errors from missing columns, tables or functions (42703, 42P01, 42883)"
    return Verdict(
        "DoD-1",
        "Missing columns, tables or functions",
        FAIL if total else OK,
        f"{summary} [{c.window}]",
        rows,
    )


def dod2(c: Counts) -> Verdict:
    """409s by function and reason, with their rate and the exploding rule."""
    by: dict[tuple[str, str], float] = {}
    for (fn, status, _code, reason), n in c.errors.items():
        if status == "409" and n > 0:
            by[(fn, reason)] = by.get((fn, reason), 0) + n
    rows: list[dict[str, Any]] = []
    for (fn, reason), n in sorted(by.items(), key=lambda kv: -kv[1]):
        calls = c.requests.get(fn, 0)
        rows.append(
            {
                "function": _label(fn),
                "reason": reason,
                "count": int(n),
                "per_minute": round(per_minute(n, c.seconds), 2),
                "share": round(n / calls, 4) if calls else None,
                "exploding": exploding(n, calls, c.seconds),
            }
        )
    bad = [r for r in rows if r["exploding"]]
    total = int(sum(by.values()))
    if bad:
        b = bad[0]
        summary = f"409 exploding: {b['function']} {b['reason']} at {b['per_minute']}/min"
    else:
        top = (
            f"; most {rows[0]['function']} {rows[0]['reason']} {rows[0]['per_minute']}/min"
            if rows
            else ""
        )
        summary = f"{total} x 409, none exploding (> {EXPLODING_PER_MINUTE:g}/min and > {EXPLODING_SHARE:.0%} of calls){top}"
    return Verdict(
        "DoD-2", "Conflict storms (409)", FAIL if bad else OK, f"{summary} [{c.window}]", rows
    )


def dod3(c: Counts) -> Verdict:
    """Auth-server calls (none per request, by design), token cache, rejected tokens."""
    rejected: dict[str, float] = {}
    for (_fn, status, code, reason), n in c.errors.items():
        if status == "401" and code == "PGRST301" and n > 0:
            rejected[reason] = rejected.get(reason, 0) + n
    calls = sum(c.requests.values())
    rows: list[dict[str, Any]] = [
        {
            "what": "auth-server calls per request",
            "value": 0,
            "note": "by design: tokens verified in-process",
        },
        {
            "what": "JWKS fetches since start",
            "value": int(c.jwks_fetches),
            "note": "the only auth-server traffic",
        },
    ]
    lookups = c.token_hits + c.token_misses
    hit_rate = c.token_hits / lookups if lookups else None
    rows.append(
        {
            "what": "token cache hit rate since start",
            "value": None if hit_rate is None else round(hit_rate, 4),
            "note": f"{int(c.token_hits)} hits, {int(c.token_misses)} misses",
        }
    )
    bad = []
    for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1]):
        boom = exploding(n, calls, c.seconds)
        rows.append(
            {
                "what": f"rejected tokens: {reason}",
                "value": int(n),
                "note": f"{per_minute(n, c.seconds):.2f}/min" + (" EXPLODING" if boom else ""),
            }
        )
        if boom:
            bad.append(reason)
    rate = "n/a" if hit_rate is None else f"{hit_rate:.1%}"
    summary = (
        f"0 auth-server calls per request (by design); {int(c.jwks_fetches)} JWKS fetches; "
        f"token cache hit rate {rate}; {int(sum(rejected.values()))} rejected tokens"
    )
    if bad:
        summary = f"rejected tokens exploding ({', '.join(bad)}): clients will storm the auth server; {summary}"
    return Verdict(
        "DoD-3", "Load on the auth server", FAIL if bad else OK, f"{summary} [{c.window}]", rows
    )


def evaluate(c: Counts) -> list[Verdict]:
    """DoD-1, DoD-2 and DoD-3 over ``c``."""
    return [dod1(c), dod2(c), dod3(c)]
