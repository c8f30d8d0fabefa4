"""The composition root: ``create_app(settings)`` builds the ASGI app from the parts.

- the PostgREST shim (``shim.http``): its function routes (``full``), with the lean
  entrance of the hot routes (``lean``) in front of Starlette's whole stack, and its
  operations routes (``ops``);
- the live room (``shim.realtime``), unless ``hub_settings.enabled`` is off, its pushed
  admin stats read through the shim's GET cache (``_stats_source``);
- the status page and the client module (``shim.console``);
- the process's one NOTIFY listener (``shim.serve.listener``): catalog reloads, the room
  clock and the hub's wake-ups;
- housekeeping (``shim.serve.housekeeping``) when its interval is above zero.

Long-lived parts open in the lifespan; nothing opens at import or construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import multiprocess
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shim import realtime
from shim.console import Console
from shim.http import full, ops, reads
from shim.http.auth import Identity
from shim.http.catalog import RELOAD_CHANNEL
from shim.http.database import transaction_pooled
from shim.http.errors import ApiError
from shim.http.lean import LeanEntrance
from shim.http.service import Service
from shim.http.settings import Settings
from shim.realtime.hub import ROOM_CHANNEL
from shim.realtime.socket import Verify
from shim.serve.housekeeping import Housekeeper
from shim.serve.listener import Listener

log = logging.getLogger("eventlive.shim")


class ShimApp(Starlette):
    """Starlette with the lean entrance (``shim.http.lean``) in front of its whole
    middleware stack: a ping or track taken there skips Starlette's error middleware and
    its wrapped ``send`` (3 % of the shim's CPU per ping, py-spy)."""

    def __init__(self, service: Service, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lean = LeanEntrance(self.starlette, service)

    async def starlette(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app without the lean entrance: every request through Starlette."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.lean(scope, receive, send)


def create_app(settings: Settings, hub_settings: realtime.HubSettings | None = None) -> Starlette:
    """The ASGI app for ``settings`` (module doc)."""
    service = Service(settings)
    hub_settings = hub_settings or realtime.HubSettings()
    live = realtime.Realtime(
        hub_settings,
        settings.database_url,
        _verifier(service),
        body_timeout=settings.body_timeout,
        stats=_stats_source(service),
    )
    console = Console(service)
    listener = _listener(service, live if hub_settings.enabled else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        chores = [*await _probe_pooler(service), *_housekeeping(service), *_publish(service)]
        if hub_settings.enabled:
            await live.start()
        listener.start()
        try:
            yield
        finally:
            for task in chores:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await listener.stop()
            if hub_settings.enabled:
                await live.stop()
            await console.stop()
            await service.stop()
            if service.metrics.multiprocess_dir is not None:  # this worker's live gauges go
                multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                    os.getpid(), service.metrics.multiprocess_dir
                )

    routes = [
        *full.routes(service),
        *ops.routes(service),
        *(live.routes() if hub_settings.enabled else []),
        *console.routes(),
    ]
    app = ShimApp(
        service,
        routes=routes,
        lifespan=lifespan,
        middleware=_middleware(settings),
        exception_handlers={HTTPException: _http_error},
    )
    app.state.service = service
    app.state.realtime = live
    app.state.console = console
    app.state.listener = listener
    return app


def _verifier(service: Service) -> Verify:
    async def verify_token(token: str | None) -> realtime.Principal:
        # The hub verifies tokens with the shim's authenticator (same keys, same cache).
        try:
            identity = await service.auth.identify(token)
        except ApiError as exc:
            raise realtime.TokenRejectedError(exc.message) from None
        return realtime.Principal(identity.role, identity.claims, identity.expires)

    return verify_token


STATS_SCHEMA, STATS_FUNCTION = "api", "access_stats"
_SERVICE_ROLE = Identity("service_role", json.dumps({"role": "service_role"}))


def _stats_source(service: Service) -> realtime.StatsSource | None:
    """The hub's pushed admin stats as the GET ``/rpc/access_stats?webinar_id=N`` is
    answered (``shim.http.reads.read_as``, as service_role): the shared answer the
    staff's GETs are served, so the pushes and the pollers of a webinar cost one database
    call per cache interval in this process, and a push is never older than that interval.
    None when the shim does not expose ``api`` (the hub then calls it itself)."""
    if STATS_SCHEMA not in service.settings.schemas:
        return None

    async def stats(webinar_id: int) -> str | None:
        try:
            return await reads.read_as(
                service,
                _SERVICE_ROLE,
                STATS_SCHEMA,
                STATS_FUNCTION,
                {"webinar_id": str(webinar_id)},
            )
        except ApiError as err:
            log.warning("realtime stats for webinar %s: %s %s", webinar_id, err.status, err.message)
            return None

    return stats


def _listener(service: Service, live: realtime.Realtime | None) -> Listener:
    """The one listener: catalog reloads, then the room clock, then the hub (in that
    order, so a cached answer is stale before the hub delivers the event)."""
    settings = service.settings
    listener = Listener(settings.listen_url or settings.database_url or "")
    first = [True]

    async def caught_up() -> None:
        service.rooms.moved_all()
        # Notifications may have been missed while disconnected (not before the first
        # connect, when the catalog was just loaded at start).
        if not first[0] or not service.catalog.loaded:
            await service.safe_reload()
        first[0] = False

    def room(payload: str) -> None:
        with contextlib.suppress(ValueError):
            service.rooms.changed(int(payload))

    listener.subscribe(RELOAD_CHANNEL, lambda _payload: service.safe_reload())
    listener.subscribe(ROOM_CHANNEL, room)
    listener.on_connect(caught_up)
    if live is not None:
        listener.subscribe(ROOM_CHANNEL, live.hub.heard)
        listener.on_connect(live.hub.resync)
    return listener


LOST_NOTIFICATIONS = (
    "DATABASE_URL goes through a transaction-mode pooler and EVENTLIVE_LISTEN_URL is not "
    "set: LISTEN there loses its notifications (catalog reloads after a migration, the "
    "live room's chat, questions and stats wait for the hub's safety reads). Set "
    "EVENTLIVE_LISTEN_URL to a direct or session-mode connection string (docs/deployment.md)."
)
LISTEN_POOLED = (
    "EVENTLIVE_LISTEN_URL goes through a transaction-mode pooler: LISTEN there loses its "
    "notifications; give it a direct or session-mode connection string (docs/deployment.md)."
)


async def _probe_pooler(service: Service) -> list[asyncio.Task[None]]:
    """Whether DATABASE_URL (and a separate LISTEN URL) is a transaction pooler, probed
    before the first request (at most ``shim.http.database.POOLER_PROBE_SECONDS``), and
    in the background while the database cannot be reached (statements stay unprepared
    until a probe answers). A warning line when LISTEN would go through one."""
    settings = service.settings

    async def probe() -> bool:
        pooled = await service.database.detect()
        if pooled is None:
            return False
        if pooled and settings.listen_url in (None, settings.database_url):
            log.warning(LOST_NOTIFICATIONS)
        elif settings.listen_url not in (None, settings.database_url) and await transaction_pooled(
            settings.listen_url or ""
        ):
            log.warning(LISTEN_POOLED)
        return True

    async def until_probed() -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            if await probe():
                return
            delay = min(delay * 2, 30.0)

    if await probe():
        return []
    return [asyncio.create_task(until_probed(), name="eventlive-pooler-probe")]


PUBLISH_SECONDS = 1.0


def _publish(service: Service) -> list[asyncio.Task[None]]:
    """With several workers, each publishes its pool, token cache and window figures to
    the node's metrics every second (``shim.http.metrics``, module doc)."""
    if service.metrics.multiprocess_dir is None:
        return []

    async def run() -> None:
        while True:
            service.metrics.publish()
            await asyncio.sleep(PUBLISH_SECONDS)

    return [asyncio.create_task(run(), name="eventlive-metrics-publish")]


def _housekeeping(service: Service) -> list[asyncio.Task[None]]:
    if service.settings.housekeeping_interval <= 0:
        return []
    runner = Housekeeper(service.database.connections, service.settings)
    return [asyncio.create_task(runner.run_forever(), name="eventlive-housekeeping")]


def _middleware(settings: Settings) -> list[Middleware]:
    if not settings.cors_origins:
        return []
    # supabase-js in a browser on another origin: preflights and exposed headers.
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=[
                "authorization",
                "apikey",
                "content-type",
                "prefer",
                "accept-profile",
                "content-profile",
                "x-client-info",
                "x-request-id",
                "if-none-match",
            ],
            expose_headers=["etag", "server-timing", "x-request-id", "retry-after"],
            max_age=3600,
        )
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods on fixed routes: PostgREST-shaped too."""
    assert isinstance(exc, HTTPException)
    code = {404: "PGRST125", 405: "PGRST101"}.get(exc.status_code, "PGRST000")
    return ApiError(
        exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
    ).response()


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (each worker reads the environment)."""
    return create_app(Settings.from_env(), realtime.HubSettings.from_env())
