"""The status page's HTML, rendered on the server from a ``Snapshot``: ``page`` (the
whole document, with its CSS and a few lines of JavaScript that swap in ``live`` every
interval), ``live`` (the part that changes) and ``sign_in`` (the 401 page).

The header's dot is the page's one-glance answer: green only when the database is
reachable and every check is OK, red otherwise (amber while the page cannot refresh);
the sign-in page knows nothing yet, so its dot is grey."""

from __future__ import annotations

import datetime as dt
from html import escape
from importlib import resources

from shim.console.sampler import TREND_MINUTES, FunctionStats, Snapshot
from shim.console.verdicts import OK

_ASSETS = resources.files("shim.console") / "assets"


def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


def _doc(title: str, body: str, script: str = "") -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_asset('status.css')}</style></head>"
        f"<body>{body}{script}</body></html>\n"
    )


def page(snap: Snapshot, interval: float) -> str:
    """The whole status page."""
    body = (
        f'<header><h1><span class="logo {_health(snap)}" id=health>●</span> eventlive status</h1>'
        f"<span class=meta>refreshes every {interval:g} s · <span id=updated>{_clock(snap.taken_at)}</span></span>"
        '<form method=post action="/status/logout"><button>Sign out</button></form></header>'
        f'<main id=live data-interval="{interval:g}">{live(snap)}</main>'
    )
    return _doc("eventlive status", body, f"<script type=module>{_asset('status.js')}</script>")


def live(snap: Snapshot) -> str:
    """The part of the page that changes: lights, webinars, functions, database."""
    return (
        f'<div class=grid data-taken="{snap.taken_at:.3f}" data-health="{_health(snap)}">'
        f"{_checks(snap)}{_database(snap)}</div>"
        f"{_webinars(snap)}{_errors(snap)}{_functions(snap)}"
    )


def _health(snap: Snapshot) -> str:
    ok = snap.database_ok and all(v.status == OK for v in snap.verdicts)
    return "ok" if ok else "fail"


def sign_in(message: str = "") -> str:
    """The page an anonymous visitor gets (status 401): a form for the service key."""
    note = f"<p class=error role=alert>{escape(message)}</p>" if message else ""
    body = (
        '<main class=signin><h1><span class="logo unknown">●</span> eventlive status</h1>'
        "<p>Operators only. Paste the <b>service_role</b> key (or a service_role JWT) to sign in; "
        "it is kept in an HttpOnly cookie for this page only, never in the URL.</p>"
        f"{note}"
        '<form method=post action="/status"><label for=key>service_role key</label>'
        "<input id=key name=key type=password autocomplete=off required>"
        "<button type=submit>Sign in</button></form></main>"
    )
    return _doc("eventlive status: sign in", body)


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S UTC")


def _light(ok: bool | None, label: str) -> str:
    cls = "unknown" if ok is None else ("ok" if ok else "fail")
    return f'<span class="light {cls}" title="{escape(label)}"></span>'


def _checks(snap: Snapshot) -> str:
    rows = "".join(
        f'<li data-check="{escape(v.check)}" data-status="{escape(v.status)}">{_light(v.status == OK, v.status)}'
        f"<b class=name>{escape(v.title)}</b> <span class=tag>{escape(v.check)}</span>"
        f"<small>{escape(v.summary)}</small></li>"
        for v in snap.verdicts
    )
    return f"<section class=card><h2>Checks <small>last 5 minutes</small></h2><ul class=checks>{rows}</ul></section>"


def _database(snap: Snapshot) -> str:
    p = snap.pool
    share = min(100, int(100 * p.get("in_use", 0) / max(1, p.get("max", 1))))
    state = "reachable" if snap.database_ok else f"unreachable: {snap.database_error}"
    return (
        "<section class=card><h2>Database &amp; pool</h2>"
        f'<p class=db data-ok="{str(snap.database_ok).lower()}">{_light(snap.database_ok, state)} database {escape(state)}</p>'
        f"<p class=bar-label id=pool-label>pool: {p.get('in_use', 0)} of {p.get('max', 0)} connections in use ({share} %)"
        f"{' · ' + str(p.get('waiting')) + ' waiting' if p.get('waiting') else ''}</p>"
        f'<div class=bar role=meter aria-labelledby=pool-label aria-valuemin=0 aria-valuemax="{p.get("max", 0)}"'
        f' aria-valuenow="{p.get("in_use", 0)}"><span style="width:{share}%"></span></div>'
        f"<dl><dt>in use</dt><dd id=pool-in-use>{p.get('in_use', 0)}</dd><dt>open</dt><dd>{p.get('size', 0)}</dd>"
        f"<dt>max</dt><dd>{p.get('max', 0)}</dd><dt>waiting</dt>"
        f'<dd class="{"warn" if p.get("waiting") else ""}">{p.get("waiting", 0)}</dd>'
        f"<dt>up</dt><dd>{_duration(snap.uptime)}</dd></dl></section>"
    )


def _webinars(snap: Snapshot) -> str:
    if not snap.webinars:
        rows = "<tr><td colspan=4 class=empty>No live webinar.</td></tr>"
    else:
        rows = "".join(
            f'<tr data-webinar="{wid}"><td class=num>{wid}</td><td>{escape(title)}</td>'
            f'<td class="num big viewers">{viewers:,}</td><td class=num>{entries:,}</td></tr>'
            for wid, title, viewers, entries in snap.webinars
        )
    return (
        "<section class=card><h2>Live webinars</h2><table><thead><tr><th>id</th><th>title</th>"
        "<th class=num>viewers now</th><th class=num>entries / min</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _functions(snap: Snapshot) -> str:
    if not snap.functions:
        rows = "<tr><td colspan=6 class=empty>No calls in the last minute.</td></tr>"
    else:
        rows = "".join(_function_row(f) for f in snap.functions)
    span = "last 1 min" if snap.span >= 45 else f"since start ({_duration(snap.span)})"
    return (
        f"<section class=card><h2>Functions <small id=functions-span>{span}; db latency "
        f"{snap.latency}</small></h2>"
        "<table><thead><tr><th>function</th><th class=num>req/s</th><th class=num>db p50</th>"
        "<th class=num>db p99</th><th>4xx by reason</th><th>5xx by reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


_W, _H = 300, 56  # the trend's drawing, in SVG units


def _errors(snap: Snapshot) -> str:
    """4xx and 5xx answers per minute: the current minute's and a line per class over the
    last ``TREND_MINUTES`` (inline SVG, oldest on the left)."""
    trend = snap.trend or [(0, 0)] * TREND_MINUTES
    n4, n5 = trend[-1]
    top = max(1, *(max(a, b) for a, b in trend))
    step = _W / max(1, len(trend) - 1)

    def line(series: int, cls: str) -> str:
        points = " ".join(
            f"{i * step:.1f},{_H - 2 - (_H - 4) * pair[series] / top:.1f}"
            for i, pair in enumerate(trend)
        )
        values = ",".join(str(pair[series]) for pair in trend)
        return (
            f'<polyline class="{cls}" data-series="{"4xx" if series == 0 else "5xx"}" '
            f'data-values="{values}" points="{points}"/>'
        )

    total4, total5 = sum(a for a, _ in trend), sum(b for _, b in trend)
    return (
        f"<section class=card><h2>Errors <small>per minute, last {len(trend)} min</small></h2>"
        "<div class=errors>"
        f'<p class=rate><span class="pill warn" id=errors-4xx>{n4} x 4xx</span> '
        f'<span class="pill bad" id=errors-5xx>{n5} x 5xx</span> <small>this minute</small></p>'
        f'<svg class=trend viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role=img '
        f'preserveAspectRatio=none aria-label="4xx and 5xx per minute over the last {len(trend)} '
        f'minutes: {total4} and {total5}"><title>4xx (amber) and 5xx (red) per minute, '
        f"peak {top}</title>"
        f'<line class=axis x1=0 y1="{_H - 1}" x2="{_W}" y2="{_H - 1}"/>'
        f"{line(0, 'warn')}{line(1, 'bad')}</svg>"
        f"<small class=totals>{total4} x 4xx, {total5} x 5xx in {len(trend)} min · "
        f"peak {top}/min</small></div></section>"
    )


def _function_row(f: FunctionStats) -> str:
    return (
        f'<tr data-function="{escape(f.name)}"><td><code>{escape(f.name)}</code></td>'
        f"<td class=num>{f.rps:.2f}</td><td class=num>{_ms(f.p50_ms)}</td>"
        f"<td class=num>{_ms(f.p99_ms)}</td><td>{_reasons(f.errors_4xx, 'warn')}</td>"
        f"<td>{_reasons(f.errors_5xx, 'bad')}</td></tr>"
    )


def _reasons(counts: dict[str, int], cls: str) -> str:
    if not counts:
        return "<span class=none>—</span>"
    return " ".join(
        f'<span class="pill {cls}">{escape(r)} {n}</span>'
        for r, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} ms"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"
