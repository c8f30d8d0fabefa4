"""DoD-4: the functional flows, for real, in a throwaway webinar.

``run_flows(base, admin_dsn, secret)`` creates three users in ``auth.users`` (the admin
DSN), a live webinar with automatic entry through ``POST /rpc/upsert_webinar`` as
service_role, registers one user and makes another staff (as service_role), then walks:

- a registrant enters (``track_access``), pings (204), sends a chat message and asks a
  question, and reads them back (``chat_since``, ``questions``);
- an admin reads ``access_stats`` (current participants, timeline) and receives the
  pushed stats on ``webinar:{id}:admin`` over ``/realtime/v1/websocket``;
- a non-registrant enters, is registered automatically, and pings 204 (not 403).

Each step records its HTTP status and latency. A function or endpoint this deployment
does not have is "n/a" (not available), not a failure. The webinar and the users are
deleted at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import psycopg

OK, FAIL, NA = "OK", "FAIL", "n/a"
# High and random: never one of the platform's real webinar ids.
_WEBINAR_BASE = 8_000_000_000_000
PUSH_TIMEOUT = 12.0


class SetupError(Exception):
    """The flows could not start (credentials, database rights): verify exits 2."""


@dataclass
class Step:
    """One flow step: who did what, the outcome, HTTP status and latency."""

    flow: str
    step: str
    status: str
    http: int | None = None
    ms: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "step": self.step,
            "status": self.status,
            "http": self.http,
            "ms": None if self.ms is None else round(self.ms, 1),
            "note": self.note,
        }


@dataclass
class FlowRun:
    """The steps, the webinar used, and whether it was removed."""

    webinar_id: int
    steps: list[Step] = field(default_factory=list)
    cleaned: bool = False


def token(secret: str, role: str, sub: str | None = None, minutes: int = 10) -> str:
    """A short-lived HS256 token as Supabase issues them."""
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now, "exp": now + minutes * 60}
    if sub is not None:
        claims |= {"sub": sub, "aud": "authenticated"}
    return jwt.encode(claims, secret, algorithm="HS256")


class _Api:
    """POST/GET /rpc/{fn} with one token; every call returns (status, body, ms)."""

    def __init__(self, client: httpx.Client, bearer: str) -> None:
        self._c = client
        self.bearer = bearer
        self._h = {"Authorization": f"Bearer {bearer}"}

    def post(self, fn: str, args: dict[str, Any]) -> tuple[int, Any, float]:
        t0 = time.perf_counter()
        r = self._c.post(f"/rpc/{fn}", json=args, headers=self._h)
        return r.status_code, _body(r), (time.perf_counter() - t0) * 1000

    def get(self, fn: str, args: dict[str, Any]) -> tuple[int, Any, float]:
        t0 = time.perf_counter()
        r = self._c.get(f"/rpc/{fn}", params=args, headers=self._h)
        return r.status_code, _body(r), (time.perf_counter() - t0) * 1000


def _body(r: httpx.Response) -> Any:
    if not r.content:
        return None
    try:
        return r.json()
    except ValueError:
        return r.text[:200]


def _missing(status: int, body: Any) -> bool:
    """The shim's answer for a function this deployment does not have."""
    return status == 404 and isinstance(body, dict) and body.get("code") == "PGRST202"


def _why(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("details") or body.get("message") or body.get("code"))
    return str(body)[:120]


def run_flows(
    base: str,
    admin_dsn: str,
    secret: str,
    *,
    timeout: float = 10.0,
    push_timeout: float = PUSH_TIMEOUT,
) -> FlowRun:
    """The DoD-4 flows against ``base`` (see the module doc)."""
    webinar = _WEBINAR_BASE + secrets.randbelow(10**9)
    run = FlowRun(webinar)
    users = {who: str(uuid.uuid4()) for who in ("registrant", "admin", "stranger")}
    try:
        conn = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise SetupError(f"cannot connect to the database: {str(exc).strip()}") from None
    with conn, httpx.Client(base_url=base, timeout=timeout) as client:
        try:
            _create_users(conn, users)
            try:
                _walk(run, client, secret, users, push_timeout=push_timeout)
            finally:
                run.cleaned = _cleanup(conn, webinar, users)
        except psycopg.Error as exc:
            raise SetupError(f"cannot create the test users: {str(exc).strip()}") from None
        except httpx.HTTPError as exc:
            raise SetupError(
                f"node {base} stopped answering during the flows: {type(exc).__name__}: {exc}"
            ) from None
    return run


def _create_users(conn: psycopg.Connection[Any], users: dict[str, str]) -> None:
    for who, uid in users.items():
        conn.execute(
            "insert into auth.users (id, email) values (%s, %s)",
            (uid, f"verify-{who}-{uid[:8]}@eventlive.invalid"),
        )


def _cleanup(conn: psycopg.Connection[Any], webinar: int, users: dict[str, str]) -> bool:
    """Delete the webinar (cascades to registrations, presence, chat ...) and the users."""
    try:
        conn.execute("delete from eventlive.webinars where id = %s", (webinar,))
        conn.execute("delete from auth.users where id = any(%s::uuid[])", (list(users.values()),))
    except psycopg.Error:
        return False
    return True


def _walk(
    run: FlowRun, client: httpx.Client, secret: str, users: dict[str, str], *, push_timeout: float
) -> None:
    w = run.webinar_id
    base = str(client.base_url).rstrip("/")
    service = _Api(client, token(secret, "service_role"))
    status, body, _ms = service.post(
        "upsert_webinar", {"webinar_id": w, "title": "eventlive verify (throwaway)"}
    )
    if status == 401:
        raise SetupError(f"service_role token refused by {base} ({_why(body)}): wrong JWT secret?")
    if status != 200:
        raise SetupError(f"cannot create the throwaway webinar on {base}: {status} {_why(body)}")
    for fn, args in (
        ("register", {"webinar_id": w, "user_id": users["registrant"]}),
        ("set_staff", {"webinar_id": w, "user_id": users["admin"]}),
    ):
        status, body, _ms = service.post(fn, args)
        if status not in (200, 204):
            raise SetupError(f"setup {fn} as service_role: {status} {_why(body)}")

    steps = run.steps
    viewer = _Api(client, token(secret, "authenticated", users["registrant"]))
    add = _recorder(steps, "registrant")
    status, body, ms = viewer.post("track_access", {"webinar_id": w})
    session = body.get("session_id") if isinstance(body, dict) else None
    add(
        "enters (track_access)",
        status == 200 and bool(session) and body.get("registered") is True,
        status,
        ms,
        body,
    )
    status, body, ms = viewer.post("presence_ping", {"webinar_id": w, "session_id": session})
    add("pings (presence_ping) → 204", status == 204, status, ms, body)
    viewer_token = viewer.bearer
    _chat(add, steps, viewer, w, (base, viewer_token, push_timeout))
    _question(add, viewer, w)

    admin = _Api(client, token(secret, "authenticated", users["admin"]))
    add = _recorder(steps, "admin")
    status, body, ms = admin.get("access_stats", {"webinar_id": w})
    good = (
        status == 200
        and isinstance(body, dict)
        and isinstance(body.get("timeline"), list)
        and (body.get("current_participants") or 0) >= 1
    )
    note = (
        f"current_participants={body.get('current_participants')}, timeline {len(body.get('timeline') or [])} point(s)"
        if isinstance(body, dict) and status == 200
        else None
    )
    add("reads access_stats (participants, timeline)", good, status, ms, body, note)
    steps.append(
        _pushed_stats(base, token(secret, "authenticated", users["admin"]), w, push_timeout)
    )

    stranger = _Api(client, token(secret, "authenticated", users["stranger"]))
    add = _recorder(steps, "non-registrant")
    status, body, ms = stranger.post("track_access", {"webinar_id": w})
    session = body.get("session_id") if isinstance(body, dict) else None
    auto = isinstance(body, dict) and body.get("auto_registered") is True
    add("enters, registered automatically", status == 200 and auto, status, ms, body)
    status, body, ms = stranger.post("presence_ping", {"webinar_id": w, "session_id": session})
    add("pings → 204 (not 403)", status == 204, status, ms, body)


Add = Callable[..., None]


def _recorder(steps: list[Step], flow: str) -> Add:
    def add(  # noqa: PLR0917 - one call per step, read as a row
        step: str, good: bool, status: int, ms: float, body: Any, note: str | None = None
    ) -> None:
        if _missing(status, body):
            steps.append(Step(flow, step, NA, status, ms, "not available on this deployment"))
            return
        steps.append(
            Step(flow, step, OK if good else FAIL, status, ms, note or ("" if good else _why(body)))
        )

    return add


def _chat(
    add: Add, steps: list[Step], viewer: _Api, w: int, live: tuple[str, str, float] | None
) -> None:
    """Send, receive it live on ``webinar:{w}:chat`` (when the room exists), read it back."""
    text = f"verify {secrets.token_hex(4)}"
    args = {"webinar_id": w, "body": text, "client_msg_id": str(uuid.uuid4())}

    def send() -> tuple[int, Any, float]:
        return viewer.post("chat_send", args)

    pushed: Step | None = None
    if live is None:
        status, body, ms = send()
    else:
        base, bearer, timeout = live
        t0 = time.perf_counter()
        try:
            got, note, sent = asyncio.run(
                _on_topic(
                    base, bearer, f"webinar:{w}:chat", action=send, needle=text, timeout=timeout
                )
            )
            pushed = Step("registrant", "receives it live (realtime chat)", OK if got else FAIL,
                          101, (time.perf_counter() - t0) * 1000, note)  # fmt: skip
        except _UnavailableError as exc:
            got, sent = False, None
            pushed = Step("registrant", "receives it live (realtime chat)", NA, exc.status,
                          None, "not available on this deployment")  # fmt: skip
        status, body, ms = sent if sent is not None else send()
    sent_ok = status == 200 and isinstance(body, dict) and body.get("id") is not None
    add("sends a chat message (chat_send)", sent_ok, status, ms, body)
    if _missing(status, body) or not sent_ok:
        return
    if pushed is not None:
        steps.append(pushed)
    status, page, ms = viewer.get("chat_since", {"webinar_id": w})
    seen = status == 200 and text in json.dumps(page, ensure_ascii=False)
    add(
        "sees it come back (chat_since)",
        seen,
        status,
        ms,
        page,
        None if seen else "message not returned",
    )


def _question(add: Add, viewer: _Api, w: int) -> None:
    text = f"verify question {secrets.token_hex(4)}?"
    status, body, ms = viewer.post(
        "question_ask", {"webinar_id": w, "body": text, "client_msg_id": str(uuid.uuid4())}
    )
    asked = status == 200 and isinstance(body, dict) and body.get("id") is not None
    add("asks a question (question_ask)", asked, status, ms, body)
    if _missing(status, body) or not asked:
        return
    status, page, ms = viewer.get("questions", {"webinar_id": w})
    seen = status == 200 and text in json.dumps(page, ensure_ascii=False)
    add(
        "sees it come back (questions)",
        seen,
        status,
        ms,
        page,
        None if seen else "question not returned",
    )


def _pushed_stats(base: str, bearer: str, w: int, timeout: float) -> Step:
    """Join ``webinar:{w}:admin`` as a private channel and wait for pushed stats."""
    t0 = time.perf_counter()
    topic = f"webinar:{w}:admin"
    try:
        good, note, _ = asyncio.run(
            _on_topic(
                base, bearer, topic, action=None, needle="current_participants", timeout=timeout
            )
        )
    except _UnavailableError as exc:
        return Step("admin", "receives pushed stats (realtime)", NA, exc.status, None,
                    "not available on this deployment")  # fmt: skip
    ms = (time.perf_counter() - t0) * 1000
    return Step("admin", "receives pushed stats (realtime)", OK if good else FAIL, 101, ms, note)


class _UnavailableError(Exception):
    def __init__(self, status: int | None) -> None:
        self.status = status


async def _on_topic(
    base: str,
    bearer: str,
    topic: str,
    *,
    action: Callable[[], Any] | None,
    needle: str,
    timeout: float,
) -> tuple[bool, str, Any]:
    """Join ``topic`` (private) over ``/realtime/v1/websocket``, then run ``action`` (a
    blocking call, in a thread) and wait for a pushed message containing ``needle``.
    Returns (received, note, the action's result); ``_UnavailableError`` when the
    deployment has no such endpoint."""
    import websockets  # noqa: PLC0415 - only the realtime steps need it
    from websockets.exceptions import InvalidStatus  # noqa: PLC0415

    url = (
        base.replace("http", "ws", 1).rstrip("/")
        + f"/realtime/v1/websocket?apikey={bearer}&vsn=1.0.0"
    )
    wire = f"realtime:{topic}"
    try:
        ws = await websockets.connect(url, open_timeout=5)
    except InvalidStatus as exc:
        raise _UnavailableError(exc.response.status_code) from None
    except OSError:
        raise _UnavailableError(None) from None
    result: Any = None
    async with ws:
        join = {
            "topic": wire,
            "event": "phx_join",
            "payload": {
                "config": {"broadcast": {"self": False}, "presence": {"key": ""}, "private": True},
                "access_token": bearer,
            },
            "ref": "1",
            "join_ref": "1",
        }
        await ws.send(json.dumps(join))
        deadline = time.monotonic() + timeout
        joined = False
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                msg = json.loads(raw)
                if msg.get("event") == "phx_reply" and msg.get("ref") == "1":
                    if msg.get("payload", {}).get("status") != "ok":
                        why = json.dumps(msg.get("payload"), ensure_ascii=False)[:160]
                        return False, f"join of {topic} refused: {why}", result
                    joined = True
                    if action is not None:
                        result = await asyncio.to_thread(action)
                elif joined and needle in json.dumps(msg.get("payload"), ensure_ascii=False):
                    return True, f"pushed on {topic}", result
        state = "joined" if joined else "no join reply"
        return False, f"{state} {topic}, nothing within {timeout:g}s", result
