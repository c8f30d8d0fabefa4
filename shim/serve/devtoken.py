"""Development tokens: ``mint`` signs an HS256 token as Supabase issues them, and
``eventlive token`` prints one signed with the embedded default's secret.

The command refuses (exit ``REFUSED``) unless that secret is the configured one: with
``JWT_SECRET`` set to another secret, or ``DATABASE_URL`` set without ``JWT_SECRET``, this
is a deployment, whose tokens come from its auth server. It never creates the secret
(``eventlive serve`` does): a fresh one here would sign tokens no running shim accepts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import os
import re
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt

TOKEN_DAYS = 7
ROLES = ("authenticated", "service_role", "anon")  # the roles a development token may claim
REFUSED = 2
REFUSED_MEANS = (
    "refused: the configured JWT secret is not the development one (or there is none yet)"
)


def mint(
    secret: str,
    *,
    role: str = "authenticated",
    sub: str | None = None,
    seconds: int = TOKEN_DAYS * 86400,
    email: str | None = None,
) -> str:
    """An HS256 token as Supabase issues them: a user token (``authenticated``: ``sub``,
    ``aud`` authenticated) or a key (``service_role``, ``anon``: no ``aud``, ``sub`` only
    when given), valid ``seconds`` from now."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "authenticated" and not sub:
        raise ValueError("an authenticated token needs a sub (the user id)")
    if seconds <= 0:
        raise ValueError("a token's lifetime must be positive")
    now = int(time.time())
    claims: dict[str, object] = {"role": role, "iat": now, "exp": now + seconds}
    if sub:
        claims["sub"] = sub
    if role == "authenticated":
        claims["aud"] = "authenticated"
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm="HS256")


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    epilog: str,
    *,
    secret_path: Callable[[], Path],
    default_sub: str,
) -> None:
    """``eventlive token``: ``secret_path()`` names the development secret's file,
    ``default_sub`` is the user of an authenticated token without ``--sub``."""
    token = commands.add_parser(
        "token",
        help="print a development token signed with the embedded default's secret",
        description=textwrap.fill(
            "Print an HS256 token signed with the embedded default's development secret "
            "(.eventlive/dev-jwt-secret, created by `eventlive serve` without DATABASE_URL in "
            "this directory), shaped as Supabase issues them: a user token (authenticated: "
            "sub, aud) or a key (service_role, anon). The token alone goes to stdout "
            "(TOKEN=$(eventlive token)), what it is to stderr. Refused when JWT_SECRET is set "
            "to another secret, or DATABASE_URL is set without it: tokens of a real "
            "deployment come from its auth server, never from here.",
            88,
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument(
        "--role", choices=ROLES, default="authenticated", help="(default: %(default)s)"
    )
    token.add_argument(
        "--sub",
        type=_user_id,
        metavar="UUID",
        help=f"the user id (default for authenticated: the demo viewer {default_sub}, "
        "registered to webinar 149402 by eventlive serve; none for the other roles)",
    )
    token.add_argument(
        "--exp",
        type=_lifetime,
        default="7d",
        metavar="LIFETIME",
        help="how long it is valid: seconds, or a number with s, m, h or d (default: %(default)s)",
    )
    token.set_defaults(run=lambda args: _token(args, secret_path(), default_sub))


def _user_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _lifetime(text: str) -> int:
    found = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if found is None or int(found[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"not a lifetime: {text!r} (e.g. 3600, 30m, 12h, 7d; more than 0)"
        )
    return int(found[1]) * _UNITS[found[2]]


def development_secret(path: Path) -> tuple[str | None, str]:
    """(the secret at ``path``, ``path``) when it is the configured JWT secret, else
    (None, why not)."""
    dev = path.read_text().strip() if path.exists() else None
    configured = os.environ.get("JWT_SECRET")
    if configured and (dev is None or not hmac.compare_digest(configured, dev)):
        return None, (
            f"JWT_SECRET is set and is not the development secret ({path}): eventlive token "
            "signs development tokens only; a deployment's tokens come from its auth server"
        )
    if not configured and os.environ.get("DATABASE_URL"):
        return None, (
            "DATABASE_URL is set and JWT_SECRET is not: this is not the embedded default, "
            "and a shim configured so accepts no HS256 token"
        )
    if dev is None:
        return None, (
            f"no development secret at {path}: `eventlive serve` without DATABASE_URL "
            "creates it; run this command in the directory serve runs in"
        )
    return dev, str(path)


def _token(args: argparse.Namespace, path: Path, default_sub: str) -> int:
    secret, where = development_secret(path)
    if secret is None:
        print(f"error: refused: {where}", file=sys.stderr, flush=True)
        return REFUSED
    sub = args.sub or (default_sub if args.role == "authenticated" else None)
    token = mint(secret, role=args.role, sub=sub, seconds=args.exp)
    until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=args.exp)
    whom = f" for sub {sub}" if sub else ""
    print(
        f"eventlive: {args.role} token{whom}, valid until {until.isoformat()} "
        f"(HS256, development secret {where})",
        file=sys.stderr,
        flush=True,
    )
    print(token, flush=True)
    return 0
