"""The two entrances of the one pipeline answer alike: every behaviour case of the hot
routes (RPC, legacy, errors, bad input) runs through the lean entrance
(``shim.http.lean``, in front of Starlette) and through Starlette's routes alone
(``ShimApp.starlette``), and must give the same status, body and headers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import NO_HUB, bearer, settings_for, token

from shim.realtime import HubSettings
from shim.serve import demo
from shim.serve.app import ShimApp, create_app

SECRET = "entrances-tests-secret-of-at-least-32-bytes!"
WEBINAR = demo.DEMO_WEBINAR
ENTRANCES = ("lean", "starlette")


@contextlib.asynccontextmanager
async def _client(app: ShimApp, entrance: str) -> AsyncIterator[httpx.AsyncClient]:
    asgi = app if entrance == "lean" else app.starlette
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
        yield client


@pytest.fixture
def api_db(eventlive_db: Any) -> Any:
    demo.prepare(eventlive_db.admin_dsn, SECRET)
    return eventlive_db


def _user(admin_dsn: str) -> str:
    user = str(uuid.uuid4())
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (user,))
    return user


def _auth(user: str, **claims: Any) -> dict[str, str]:
    return bearer(token({"sub": user, **claims}, key=SECRET))


Case = tuple[str, str, str, dict[str, str], Any]  # name, method, path, headers, json body


def _cases(user: str, stranger: str) -> Callable[[dict[str, Any]], list[Case]]:
    """The cases in order; ``state`` carries the session the first entry made."""
    me, other = _auth(user), _auth(stranger)
    legacy = f"/api/webinars/{WEBINAR}"

    def cases(state: dict[str, Any]) -> list[Case]:
        s = state.get("session", "00000000-0000-4000-8000-000000000000")
        return [
            ("enter", "POST", "/rpc/track_access", me, {"webinar_id": WEBINAR}),
            (
                "re-confirm",
                "POST",
                "/rest/v1/rpc/track_access",
                me,
                {"webinar_id": WEBINAR, "session_id": s},
            ),
            ("ping", "POST", "/rpc/presence_ping", me, {"webinar_id": WEBINAR, "session_id": s}),
            ("legacy ping", "POST", f"{legacy}/presence/ping", me, {"session_id": s}),
            ("legacy track", "POST", f"{legacy}/access/track", me, {"session_id": s}),
            (
                "not registered",
                "POST",
                "/rpc/presence_ping",
                other,
                {"webinar_id": WEBINAR, "session_id": s},
            ),
            (
                "unknown webinar",
                "POST",
                "/rpc/presence_ping",
                me,
                {"webinar_id": 999, "session_id": s},
            ),
            ("bad json", "POST", "/rpc/presence_ping", me, b"{nope"),
            ("not an object", "POST", "/rpc/track_access", me, b"[1]"),
            ("unknown argument", "POST", "/rpc/presence_ping", me, {"webinar_id": WEBINAR, "x": 1}),
            (
                "wrong type",
                "POST",
                "/rpc/presence_ping",
                me,
                {"webinar_id": "ten", "session_id": s},
            ),
            (
                "bad uuid",
                "POST",
                "/rpc/presence_ping",
                me,
                {"webinar_id": WEBINAR, "session_id": "x"},
            ),
            (
                "legacy unknown field",
                "POST",
                f"{legacy}/presence/ping",
                me,
                {"session_id": s, "x": 1},
            ),
            ("legacy bad id", "POST", "/api/webinars/0/presence/ping", me, {"session_id": s}),
            (
                "expired token",
                "POST",
                "/rpc/presence_ping",
                bearer(token({"sub": user}, key=SECRET, ttl=-60)),
                {},
            ),
            (
                "bad signature",
                "POST",
                "/rpc/presence_ping",
                bearer(token({"sub": user}, key="x" * 40)),
                {},
            ),
            ("empty bearer", "POST", "/rpc/presence_ping", {"Authorization": "Bearer "}, {}),
            ("unknown function", "POST", "/rpc/presence_pong", me, {}),
            ("leave", "POST", f"{legacy}/presence/leave", me, {"session_id": s}),
            (
                "superseded",
                "POST",
                "/rpc/presence_ping",
                me,
                {"webinar_id": WEBINAR, "session_id": s},
            ),
            (
                "request id",
                "POST",
                "/rpc/presence_ping",
                {**me, "X-Request-Id": "abc-1"},
                {"webinar_id": WEBINAR, "session_id": s},
            ),
        ]

    return cases


_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|request_id=\w+"
)


def _seen(r: httpx.Response) -> tuple[Any, ...]:
    """What must be equal across entrances: status, body (ids and numbers that differ by
    user or draw left out), the headers that carry meaning."""
    body: Any = r.text
    if r.headers.get("content-type", "").startswith("application/json") and r.content:
        data = r.json()
        if isinstance(data, dict) and "session_id" in data:  # track_access: its keys
            data = sorted(data)
        body = _VOLATILE.sub("<id>", str(data))
    wanted = ("content-type", "www-authenticate", "retry-after")
    headers = tuple((h, r.headers.get(h)) for h in wanted)
    rid = r.headers.get("x-request-id")
    timing = r.headers.get("server-timing", "")
    return r.status_code, body, headers, rid == "abc-1" or bool(rid), timing.startswith("auth;dur=")


async def _run(
    client: httpx.AsyncClient, cases: Callable[[dict[str, Any]], list[Case]]
) -> list[tuple[str, Any]]:
    state: dict[str, Any] = {}
    seen = []
    for index in range(len(cases(state))):
        name, method, path, headers, body = cases(state)[index]
        kwargs: dict[str, Any] = (
            {"content": body, "headers": {**headers, "Content-Type": "application/json"}}
            if isinstance(body, bytes)
            else {"json": body}
        )
        kwargs.setdefault("headers", headers)
        r = await client.request(method, path, **kwargs)
        if name == "enter":
            state["session"] = r.json()["session_id"]
        if name == "leave":  # the next ping's session is gone: re-enter, then use the old one
            await client.post("/rpc/track_access", headers=headers, json={"webinar_id": WEBINAR})
        seen.append((name, _seen(r)))
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize("entry_batch", [True, False], ids=["entries batched", "entries single"])
async def test_every_case_answers_the_same_through_both_entrances(
    api_db: Any, anyio_backend: str, entry_batch: bool
) -> None:
    settings = settings_for(
        api_db.dsn, schemas=("api",), jwt_secret=SECRET, entry_batch=entry_batch
    )
    app = create_app(settings, NO_HUB)
    assert isinstance(app, ShimApp)
    answers = {}
    async with app.router.lifespan_context(app):
        for entrance in ENTRANCES:
            before = app.lean.taken
            cases = _cases(_user(api_db.admin_dsn), _user(api_db.admin_dsn))
            async with _client(app, entrance) as client:
                answers[entrance] = await _run(client, cases)
            taken = app.lean.taken - before
            # The lean entrance took every case but the empty bearer (sent as "Bearer", no
            # token: not a request it parses); Starlette alone, none.
            assert taken == (len(answers[entrance]) - 1 if entrance == "lean" else 0)
        database = app.state.service.database
        # Batched: the three track_access cases of each entrance and the re-entry after
        # leave went through the batchers (first entries' and re-confirmations').
        sent = [b.entries for b in (database.entries, database.reconfirms) if b is not None]
        assert (sum(sent) if entry_batch else sent) == (8 if entry_batch else [])
    assert answers["lean"] == answers["starlette"]
    statuses = {name: seen[0] for name, seen in answers["lean"]}
    assert statuses == {
        "enter": 200,
        "re-confirm": 200,
        "ping": 204,
        "legacy ping": 204,
        "legacy track": 200,
        "not registered": 403,
        "unknown webinar": 404,
        "bad json": 400,
        "not an object": 400,
        "unknown argument": 400,
        "wrong type": 400,
        "bad uuid": 400,
        "legacy unknown field": 400,
        "legacy bad id": 400,
        "expired token": 401,
        "bad signature": 401,
        "empty bearer": 401,
        "unknown function": 404,
        "leave": 204,
        "superseded": 409,
        "request id": 409,
    }


@pytest.fixture(params=ENTRANCES)
def entrance(request: pytest.FixtureRequest) -> str:
    """Run a test once through each entrance."""
    return str(request.param)


async def _stalled(asgi: Any, app: ShimApp, path: str, token_value: str) -> list[dict[str, Any]]:
    """POST ``path`` to ``asgi`` with a body that never arrives; the messages sent back."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(30)  # the body never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {token_value}".encode()),
            (b"content-type", b"application/json"),
        ],
    }
    async with app.router.lifespan_context(app):
        await asgi(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_a_stalled_body_gets_408_on_either_entrance(
    api_db: Any, entrance: str, anyio_backend: str
) -> None:
    settings = settings_for(api_db.dsn, schemas=("api",), jwt_secret=SECRET, body_timeout=0.3)
    app = create_app(settings, NO_HUB)
    assert isinstance(app, ShimApp)
    viewer = token({"sub": str(uuid.uuid4())}, key=SECRET)
    sent = await _stalled(
        app if entrance == "lean" else app.starlette, app, "/rpc/presence_ping", viewer
    )
    assert sent[0]["status"] == 408
    assert b"body_timeout" in sent[1]["body"]


# Every route that reads a body, with a body that never arrives (the ticket route reads
# none: it answers from the token alone).
BODY_ROUTES = (
    "/rpc/track_access",
    "/rest/v1/rpc/echo",
    f"/api/webinars/{WEBINAR}/access/track",
    f"/api/webinars/{WEBINAR}/presence/leave",
    "/realtime/v1/api/broadcast",
    "/realtime/v1/api/broadcast/webinar:1:chat/events/hello",
    "/status",
)


@pytest.mark.anyio
@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_a_stalled_body_gets_408_on_every_body_reading_route(
    api_db: Any, path: str, anyio_backend: str
) -> None:
    settings = settings_for(api_db.dsn, schemas=("api",), jwt_secret=SECRET, body_timeout=0.3)
    app = create_app(settings, HubSettings())
    assert isinstance(app, ShimApp)
    service_role = token({"role": "service_role", "sub": None}, key=SECRET)
    sent = await _stalled(app, app, path, service_role)
    assert sent[0]["status"] == 408, sent
    if path != "/status":  # the sign-in page answers with its form, in HTML
        assert b"body_timeout" in b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.anyio
async def test_one_listen_connection_per_process_for_catalog_room_clock_and_hub(
    api_db: Any, anyio_backend: str
) -> None:
    """Catalog reloads, the room clock and the hub's wake-ups share one LISTEN."""

    app = create_app(settings_for(api_db.dsn, schemas=("api",), jwt_secret=SECRET), HubSettings())
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.listener.listening.wait(), 10)
        with psycopg.connect(api_db.admin_dsn) as conn:
            rows = conn.execute(
                "select query from pg_stat_activity"
                " where datname = current_database() and query ilike 'listen %%'"
            ).fetchall()
    # One backend whose last statement was a LISTEN (each connection shows its last one).
    assert len(rows) == 1, rows
    assert app.state.listener.connections == 1
