"""A newcomer's first minute, on the embedded default only (never with DATABASE_URL):
a demo webinar, its host (staff), a registered viewer, development tokens for them and
for service_role, and curl lines.

``dev_secret(path)`` reads or creates the development HS256 secret (mode 0600, in the
project's ``.eventlive`` directory next to the embedded data); ``mint`` (from
``shim.serve.devtoken``, ``eventlive token``) signs tokens with it. ``prepare(admin_dsn, secret)`` creates the demo objects idempotently through the API
functions, as service_role, and returns what ``instructions`` prints.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from shim.serve.devtoken import TOKEN_DAYS, mint

DEMO_WEBINAR = 149402  # the webinar of the incident report
DEMO_USER = "00000000-0000-4000-8000-00000000d3e0"
DEMO_EMAIL = "demo@eventlive.invalid"
DEMO_VIEWER = "00000000-0000-4000-8000-00000000d3e1"  # registered, not staff
VIEWER_EMAIL = "viewer@eventlive.invalid"


@dataclass(frozen=True)
class Demo:
    """What the walk-through needs: the webinar, its host and the host's token, a session
    id, and the registered viewer's and service_role's tokens."""

    webinar_id: int
    user_id: str
    token: str
    session_id: str
    viewer_id: str
    viewer_token: str
    service_token: str


def dev_secret(path: Path) -> str:
    """The development JWT secret at ``path``, created (0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def dev_token(secret: str, user_id: str = DEMO_USER, days: int = TOKEN_DAYS) -> str:
    """An HS256 token for ``user_id`` as Supabase issues user tokens (role, aud)."""
    return mint(secret, sub=user_id, seconds=days * 86400, email=DEMO_EMAIL)


def prepare(admin_dsn: str, secret: str) -> Demo:
    """Create the demo users, webinar (live, automatic entry), the host's staff row and
    the viewer's registration; idempotent."""
    service_claims = json.dumps({"role": "service_role"})
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for user_id, email in ((DEMO_USER, DEMO_EMAIL), (DEMO_VIEWER, VIEWER_EMAIL)):
            conn.execute(
                "insert into auth.users (id, email) values (%s, %s) on conflict (id) do nothing",
                (user_id, email),
            )
        with conn.transaction():
            conn.execute(
                "select set_config('role', 'service_role', true),"
                " set_config('request.jwt.claims', %s, true)",
                (service_claims,),
            )
            conn.execute(
                "select api.upsert_webinar(webinar_id => %s, title => %s)",
                (DEMO_WEBINAR, "Demo webinar"),
            )
            conn.execute(
                "select api.set_staff(webinar_id => %s, user_id => %s)",
                (DEMO_WEBINAR, DEMO_USER),
            )
            conn.execute(
                "select api.register(webinar_id => %s, user_id => %s)",
                (DEMO_WEBINAR, DEMO_VIEWER),
            )
    return Demo(
        DEMO_WEBINAR,
        DEMO_USER,
        dev_token(secret),
        str(uuid.uuid4()),
        DEMO_VIEWER,
        mint(secret, sub=DEMO_VIEWER, email=VIEWER_EMAIL),
        mint(secret, role="service_role"),
    )


def curl_lines(base_url: str, demo: Demo) -> list[str]:
    """Ready-to-paste commands: enter (track_access), heartbeat (presence_ping), stats."""
    auth = '-H "Authorization: Bearer $TOKEN"'
    w = demo.webinar_id
    json_h = "-H 'Content-Type: application/json'"
    return [
        f"export TOKEN={demo.token}",
        f"curl -sS -X POST {base_url}/api/webinars/{w}/access/track {auth} {json_h} "
        f'-d \'{{"session_id": "{demo.session_id}"}}\'',
        f"curl -sS -i -X POST {base_url}/rpc/presence_ping {auth} {json_h} "
        f'-d \'{{"webinar_id": {w}, "session_id": "{demo.session_id}"}}\'',
        f"curl -sS '{base_url}/rest/v1/rpc/access_stats?webinar_id={w}' {auth}",
    ]


def instructions(base_url: str, demo: Demo, secret_path: Path) -> str:
    """The text ``eventlive serve`` prints on the embedded default."""
    lines = [
        "",
        f"eventlive demo: webinar {demo.webinar_id}; host {demo.user_id} (staff: moderates,"
        f" exempt from chat limits); viewer {demo.viewer_id} (registered: chats at once).",
        f"Development tokens (HS256, {TOKEN_DAYS} days; secret in {secret_path};"
        " more with `eventlive token --help`):",
        "  the viewer:",
        f"    export VIEWER_TOKEN={demo.viewer_token}",
        "  service_role (the /status page's sign-in, management functions):",
        f"    export SERVICE_TOKEN={demo.service_token}",
        "  the host, with curl lines to try:",
        "",
        *curl_lines(base_url, demo),
        "",
    ]
    return "\n".join(lines)
