"""The status page's HTML, rendered on the server from a ``Snapshot``: ``page`` (the
whole document, with its CSS and a few lines of JavaScript that swap in ``live`` every
interval), ``live`` (the part that changes) and ``sign_in`` (the 401 page)."""

from __future__ import annotations

import datetime as dt
from html import escape
from importlib import resources

from shim.console.sampler import FunctionStats, Snapshot
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
        "<header><h1><span class=logo>●</span> eventlive status</h1>"
        f"<span class=meta>refreshes every {interval:g} s · <span id=updated>{_clock(snap.taken_at)}</span></span>"
        '<form method=post action="/status/logout"><button>Sign out</button></form></header>'
        f'<main id=live data-interval="{interval:g}">{live(snap)}</main>'
    )
    return _doc("eventlive status", body, f"<script type=module>{_asset('status.js')}</script>")


def live(snap: Snapshot) -> str:
    """The part of the page that changes: lights, webinars, functions, database."""
    return (
        f'<div class=grid data-taken="{snap.taken_at:.3f}">'
        f"{_checks(snap)}{_database(snap)}</div>"
        f"{_webinars(snap)}{_functions(snap)}"
    )


def sign_in(message: str = "") -> str:
    """The page an anonymous visitor gets (status 401): a form for the service key."""
    note = f"<p class=error role=alert>{escape(message)}</p>" if message else ""
    body = (
        "<main class=signin><h1><span class=logo>●</span> eventlive status</h1>"
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
        f"<b>{escape(v.check)}</b> {escape(v.title)}<small>{escape(v.summary)}</small></li>"
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
        f'<div class=bar><span style="width:{share}%"></span></div>'
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
        rows = "<tr><td colspan=6 class=empty>No calls yet.</td></tr>"
    else:
        rows = "".join(_function_row(f) for f in snap.functions)
    return (
        f"<section class=card><h2>Functions <small>last {_duration(snap.span)}</small></h2>"
        "<table><thead><tr><th>function</th><th class=num>req/s</th><th class=num>db p50</th>"
        "<th class=num>db p99</th><th>4xx by reason</th><th>5xx by reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
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
