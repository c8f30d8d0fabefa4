"""The old multi-query API (pre-incident flow), as a Starlette app.

Environment: ``OLD_DATABASE_URL`` (login role ``authenticator``), ``JWT_SECRET``,
``OLD_AUTH_DELAY_MS`` (simulated ``/auth/v1/user`` call per request; default 30),
``OLD_POOL_MAX`` (default 10, the shim's default). Routes, as the old front end called
them: ``POST /api/webinars/{id}/access/track`` and ``POST .../presence/ping``.

Queries per call (each a separate transaction: BEGIN, role + claims, query, COMMIT —
what one PostgREST request costs — with its own pool checkout):

- track: webinar, registration lookup, [INSERT registration: 23505 -> 409 to the
  client], session lookup, [end the other session], [INSERT session], presence upsert,
  [access log] -> 3..7 queries (a re-track of a known session: 4).
- ping: webinar, registration lookup, [INSERT registration: pings did register],
  session lookup, [INSERT session], session last_seen update, presence lookup, presence
  update or insert, [access log] -> 4..10 queries (a registered viewer's ping: 6).

Not reproduced (each would make the old design slower): the ``registrations.id`` 400,
one HTTP request to PostgREST per query, the serverless cold starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_SETTINGS = (
    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)"
)


class OldApi:
    def __init__(self) -> None:
        self.dsn = os.environ["OLD_DATABASE_URL"]
        self.secret = os.environ["JWT_SECRET"]
        self.auth_delay = float(os.environ.get("OLD_AUTH_DELAY_MS", "30")) / 1000
        self.pool = AsyncConnectionPool(
            self.dsn,
            min_size=2,
            max_size=int(os.environ.get("OLD_POOL_MAX", "10")),
            timeout=30.0,  # no fail-fast: the old code waited
            open=False,
            kwargs={"autocommit": True},
        )

    async def user(self, request: Request) -> tuple[str, str]:
        """The auth-server round trip (simulated delay) that returns the user."""
        header = request.headers.get("authorization", "")
        token = header.partition(" ")[2]
        if self.auth_delay:
            await asyncio.sleep(self.auth_delay)
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], audience="authenticated")
        except jwt.PyJWTError:
            raise _HttpError(401, "invalid token") from None
        return str(claims["sub"]), json.dumps(claims)

    async def q(self, claims: str, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One PostgREST-style request: its own transaction with role and claims."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_SETTINGS, (claims,))
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def track(
        self, webinar: int, uid: str, claims: str, session: str | None
    ) -> dict[str, Any]:
        rows = await self.q(claims, "select status from legacy.webinars where id = %s", (webinar,))
        if not rows:
            raise _HttpError(404, "webinar not found")
        reg = await self.q(
            claims,
            "select created_at from legacy.registrations where webinar_id = %s and user_id = %s",
            (webinar, uid),
        )
        auto = False
        if not reg:
            await self.q(
                claims,
                "insert into legacy.registrations (webinar_id, user_id) values (%s, %s)",
                (webinar, uid),
            )  # collides under concurrency: 23505 -> 409
            auto = True
        active = await self.q(
            claims,
            "select id from legacy.sessions where webinar_id = %s and user_id = %s and ended_at is null",
            (webinar, uid),
        )
        known = {str(r[0]) for r in active}
        superseded = None
        new = session is None or session not in known
        if new:
            session = str(uuid.uuid4()) if session is None else session
            others = sorted(known - {session})
            if others:
                superseded = others[0]
                await self.q(
                    claims,
                    "update legacy.sessions set ended_at = now() where id = any(%s::uuid[])",
                    (others,),
                )
            await self.q(
                claims,
                "insert into legacy.sessions (id, webinar_id, user_id) values (%s, %s, %s)",
                (session, webinar, uid),
            )
        await self.q(
            claims,
            "insert into legacy.presence (webinar_id, user_id, session_id) values (%s, %s, %s) "
            "on conflict (webinar_id, user_id) do update "
            "set session_id = excluded.session_id, last_seen_at = now()",
            (webinar, uid, session),
        )
        if new:
            await self.q(
                claims,
                "insert into legacy.access_logs (webinar_id, user_id, session_id, kind) "
                "values (%s, %s, %s, 'enter')",
                (webinar, uid, session),
            )
        return {
            "session_id": session,
            "registered": True,
            "auto_registered": auto,
            "superseded_session_id": superseded,
            "heartbeat_seconds": 120,
            "track_seconds": 300,
            # the old client pinged every 120 s +- 10 s from entry
            "first_ping_in": 120,
        }

    async def ping(self, webinar: int, uid: str, claims: str, session: str) -> None:
        rows = await self.q(claims, "select status from legacy.webinars where id = %s", (webinar,))
        if not rows:
            raise _HttpError(404, "webinar not found")
        reg = await self.q(
            claims,
            "select created_at from legacy.registrations where webinar_id = %s and user_id = %s",
            (webinar, uid),
        )
        if not reg:  # the old ping registered too
            await self.q(
                claims,
                "insert into legacy.registrations (webinar_id, user_id) values (%s, %s)",
                (webinar, uid),
            )
        found = await self.q(
            claims,
            "select id from legacy.sessions where id = %s and ended_at is null",
            (session,),
        )
        if not found:
            await self.q(
                claims,
                "insert into legacy.sessions (id, webinar_id, user_id) values (%s, %s, %s) "
                "on conflict (id) do nothing",
                (session, webinar, uid),
            )
        await self.q(
            claims, "update legacy.sessions set last_seen_at = now() where id = %s", (session,)
        )
        pres = await self.q(
            claims,
            "select session_id from legacy.presence where webinar_id = %s and user_id = %s",
            (webinar, uid),
        )
        if pres:
            await self.q(
                claims,
                "update legacy.presence set last_seen_at = now(), session_id = %s "
                "where webinar_id = %s and user_id = %s",
                (session, webinar, uid),
            )
        else:
            await self.q(
                claims,
                "insert into legacy.presence (webinar_id, user_id, session_id) values (%s, %s, %s)",
                (webinar, uid, session),
            )
            await self.q(
                claims,
                "insert into legacy.access_logs (webinar_id, user_id, session_id, kind) "
                "values (%s, %s, %s, 'ping')",
                (webinar, uid, session),
            )


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app() -> Starlette:
    api = OldApi()

    async def handle(request: Request, call: str) -> Response:  # noqa: PLR0911 - one per outcome
        try:
            webinar = int(request.path_params["webinar_id"])
            uid, claims = await api.user(request)
            raw = await request.body()
            body = json.loads(raw) if raw.strip() else {}
            session = body.get("session_id")
            if call == "track":
                return JSONResponse(await api.track(webinar, uid, claims, session))
            if not session:
                return JSONResponse({"message": "session_id required"}, status_code=400)
            await api.ping(webinar, uid, claims, session)
            return Response(status_code=204)
        except _HttpError as err:
            return JSONResponse({"message": str(err)}, status_code=err.status)
        except pg_errors.UniqueViolation as err:
            # passed through, as PostgREST answered it: the 409 storms of the incident
            return JSONResponse({"code": "23505", "message": str(err)}, status_code=409)
        except PoolTimeout:
            return JSONResponse({"message": "pool timeout"}, status_code=503)
        except psycopg.Error as err:
            return JSONResponse({"message": type(err).__name__}, status_code=500)
        except ValueError:
            return JSONResponse({"message": "bad request"}, status_code=400)

    async def track(request: Request) -> Response:
        return await handle(request, "track")

    async def ping(request: Request) -> Response:
        return await handle(request, "ping")

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await api.pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            await api.pool.close()

    return Starlette(
        routes=[
            Route("/api/webinars/{webinar_id}/access/track", track, methods=["POST"]),
            Route("/api/webinars/{webinar_id}/presence/ping", ping, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
