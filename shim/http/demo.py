"""A newcomer's first minute, on the embedded default only (never with DATABASE_URL):
a demo webinar, a demo user who is its host, a development token, and curl lines.

``dev_secret(path)`` reads or creates the development HS256 secret (mode 0600, in the
project's ``.eventlive`` directory next to the embedded data). ``prepare(admin_dsn,
secret)`` creates the demo objects idempotently through the API functions, as
service_role, and returns what ``instructions`` prints.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
import psycopg

DEMO_WEBINAR = 149402  # the webinar of the incident report
DEMO_USER = "00000000-0000-4000-8000-00000000d3e0"
DEMO_EMAIL = "demo@eventlive.invalid"
TOKEN_DAYS = 7


@dataclass(frozen=True)
class Demo:
    """What the walk-through needs: the webinar, the user, a token and a session id."""

    webinar_id: int
    user_id: str
    token: str
    session_id: str


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
    now = int(time.time())
    claims = {
        "sub": user_id,
        "role": "authenticated",
        "aud": "authenticated",
        "email": DEMO_EMAIL,
        "iat": now,
        "exp": now + days * 86400,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def prepare(admin_dsn: str, secret: str) -> Demo:
    """Create the demo user, webinar (live, automatic entry) and staff row; idempotent."""
    service_claims = json.dumps({"role": "service_role"})
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id, email) values (%s, %s) on conflict (id) do nothing",
            (DEMO_USER, DEMO_EMAIL),
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
    return Demo(DEMO_WEBINAR, DEMO_USER, dev_token(secret), str(uuid.uuid4()))


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
        f"eventlive demo: webinar {demo.webinar_id}, user {demo.user_id} (its host).",
        f"Development token (HS256, {TOKEN_DAYS} days; secret in {secret_path}):",
        "",
        *curl_lines(base_url, demo),
        "",
    ]
    return "\n".join(lines)
