"""The Starlette application: ``create_app(settings)``.

Nothing opens at import or construction: the pool, the JWKS, the catalog and the
NOTIFY listener start in the lifespan and stop with it. Routes:
``/rpc/{fn}``, ``/rest/v1/rpc/{fn}`` (GET/HEAD/POST), the legacy ``/api/webinars/...``
routes (``shim.legacy``), ``/health``, ``/ready``, ``/metrics``, ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shim import catalog as cat
from shim import errors, legacy, openapi, rpc
from shim.auth import Authenticator, Identity, rejected
from shim.cache import SharedCache, etag_matches
from shim.errors import ApiError
from shim.housekeeping import Housekeeper
from shim.metrics import Metrics
from shim.settings import Settings

log = logging.getLogger("eventlive.shim")
access_log = logging.getLogger("eventlive.access")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_JSON = "application/json; charset=utf-8"


@dataclass(slots=True)
class RequestContext:
    """Per-request bookkeeping for Server-Timing, metrics and the access log."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    auth_ms: float = 0.0
    db_ms: float = 0.0
    function: str = ""
    role: str = ""
    cache: str = ""
    error: str = ""


class Service:
    """Everything a request needs; opened by ``start`` in the lifespan, closed by ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.cache = SharedCache(settings.cache_entries)
        self.catalog: cat.Catalog = cat.EMPTY
        self.pool: AsyncConnectionPool[Any] | None = None
        self.metrics = Metrics(self._pool_stats)
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        # Set while the NOTIFY listener holds its LISTEN (tests wait on it).
        self.listening = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def _pool_stats(self) -> dict[str, int]:
        return self.pool.get_stats() if self.pool is not None else {}

    async def start(self) -> None:
        """Open the pool (without waiting for the database), keys, catalog, listener."""
        s = self.settings
        if not s.database_url:
            raise RuntimeError("DATABASE_URL is not set (eventlive serve sets it)")
        self.pool = AsyncConnectionPool(
            s.database_url,
            min_size=s.pool_min,
            max_size=s.pool_max,
            timeout=s.pool_timeout,
            open=False,
            name="eventlive",
            kwargs={"autocommit": True},
            # Short: an outage must not push the next attempt minutes away.
            reconnect_timeout=5.0,
        )
        await self.pool.open(wait=False)
        await self.auth.load_keys()
        try:
            await self.reload()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("catalog not loaded at start (%s); the listener retries", exc)
        self._tasks.append(asyncio.create_task(self._listen()))
        if s.housekeeping_interval > 0:  # stopped with the other tasks in stop()
            self._tasks.append(asyncio.create_task(Housekeeper(self.pool, s).run_forever()))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: self._tasks.append(asyncio.create_task(self._safe_reload()))
            )

    async def stop(self) -> None:
        """Cancel background tasks and close the pool."""
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.pool is not None:
            await self.pool.close()

    async def reload(self) -> None:
        """Re-read the catalog and role settings; replace them whole."""
        assert self.pool is not None
        async with self._reload_lock, self.pool.connection(timeout=5.0) as conn:
            fresh = await cat.load(
                conn,
                self.settings.schemas,
                self.settings.jwt_roles,
                self.settings.statement_timeout,
            )
        self.catalog = fresh
        self.cache.clear()
        log.info("catalog loaded: %d functions", sum(len(v) for v in fresh.routines.values()))

    async def _safe_reload(self) -> None:
        try:
            await self.reload()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("catalog reload failed: %s", exc)

    async def _listen(self) -> None:
        """LISTEN on a dedicated connection; reload on each NOTIFY and after reconnecting."""
        assert self.settings.database_url is not None
        delay = 0.5
        missed = not self.catalog.loaded
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True
                ) as conn:
                    await conn.execute(f"listen {cat.RELOAD_CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    if missed:  # notifications may have been missed while disconnected
                        await self._safe_reload()
                    missed = True
                    async for _ in conn.notifies():
                        await self._safe_reload()
            except psycopg.Error as exc:
                log.debug("listener: %s; retrying in %.1fs", exc, delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- request path --------------------------------------------------------------------

    async def identify(self, request: Request, ctx: RequestContext) -> Identity:
        """Bearer token from Authorization, else the apikey header (Supabase clients)."""
        t0 = time.perf_counter()
        header = _header(request, b"authorization")
        token: str | None
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                self.metrics.rejected_tokens.labels("malformed").inc()
                raise rejected("malformed", "Authorization must be 'Bearer <token>'")
            token = token.strip()
        else:
            token = _header(request, b"apikey")
        try:
            identity = await self.auth.identify(token)
        except ApiError as err:
            self.metrics.rejected_tokens.labels(err.reason).inc()
            raise
        finally:
            ctx.auth_ms = (time.perf_counter() - t0) * 1000
        ctx.role = identity.role
        return identity

    def profile(self, request: Request) -> str:
        """The schema named by Accept-Profile (GET/HEAD) or Content-Profile (others)."""
        name = b"accept-profile" if request.method in ("GET", "HEAD") else b"content-profile"
        wanted = _header(request, name)
        if wanted is None:
            return self.settings.schemas[0]
        if wanted not in self.settings.schemas:
            raise ApiError(
                406,
                "PGRST106",
                f"The schema must be one of the following: {', '.join(self.settings.schemas)}",
                details="unknown_profile",
            )
        return wanted

    async def body(self, request: Request) -> bytes:
        """The request body, refused with 413 past ``max_body`` without reading it all,
        and with 408 when it has not all arrived within ``body_timeout``."""
        limit = self.settings.max_body
        length = _header(request, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            # A client that stalls mid-body would otherwise wait here forever: uvicorn
            # has no body timeout. No pool connection is held yet either way.
            async with asyncio.timeout(self.settings.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(
                408,
                "PGRST408",
                f"The request body did not arrive within {self.settings.body_timeout:g} s",
                details="body_timeout",
                headers={"Connection": "close"},
            ) from None
        return b"".join(chunks)

    async def invoke(
        self,
        request: Request,
        ctx: RequestContext,
        *,
        schema: str,
        name: str,
        given: dict[str, Any],
        identity: Identity,
        minimal: bool = False,
    ) -> Response:
        """Bind ``given`` to ``schema.name`` and run it; GET/HEAD go through the cache."""
        catalog = self.catalog
        if not catalog.loaded:
            raise errors.unavailable(
                "PGRST002",
                "Could not query the database for the schema cache. Retrying.",
                self.settings.retry_after,
                "catalog_not_loaded",
            )
        candidates = catalog.find(schema, name)
        if not candidates:
            raise ApiError(
                404,
                "PGRST202",
                f"Could not find the function {schema}.{name} in the schema cache",
                hint="If a new function was created in the database with this name and "
                "parameters, try reloading the schema cache.",
                details="unknown_function",
            )
        # Only routable names become metric labels: clients cannot grow the label set.
        ctx.function = f"{schema}.{name}"
        is_get = request.method in ("GET", "HEAD")
        routine, statement, values = rpc.bind(candidates, given, from_query=is_get)
        if is_get and not routine.readonly:
            raise ApiError(
                405,
                "PGRST101",
                f"Cannot use the {request.method} method on volatile function {schema}.{name}",
                details="method_not_allowed",
            )
        timeout = catalog.role_timeouts.get(identity.role, self.settings.statement_timeout)

        async def load() -> str | None:
            return await self.database(
                ctx,
                identity,
                statement,
                values,
                timeout=timeout,
                read_only=routine.readonly or is_get,
            )

        headers: dict[str, str] = {}
        if is_get:
            key = (
                schema,
                name,
                json.dumps(given, sort_keys=True),
                identity.role,
                None if routine.cache_public else identity.claims,
            )
            entry, ctx.cache = await self.cache.get(key, routine.cache_seconds or 0, load)
            self.metrics.cache.labels(ctx.cache).inc()
            result = entry.body
            headers["ETag"] = entry.etag
            if routine.cache_seconds:
                scope = "public" if routine.cache_public else "private"
                headers["Cache-Control"] = f"{scope}, max-age={routine.cache_seconds}"
            else:
                headers["Cache-Control"] = "no-cache"
            inm = _header(request, b"if-none-match")
            if inm is not None and etag_matches(inm, entry.etag):
                return Response(status_code=304, headers=headers)
        else:
            result = await load()
        if routine.returns_void or minimal or _prefers_minimal(request):
            return Response(status_code=204, headers=headers)
        body = "null" if result is None else result
        return Response(body, media_type=_JSON, headers=headers)

    async def database(
        self,
        ctx: RequestContext,
        identity: Identity,
        statement: Any,
        values: list[Any],
        *,
        timeout: str,
        read_only: bool,
    ) -> str | None:
        """One round trip; database and pool failures become PostgREST-shaped errors."""
        assert self.pool is not None
        s = self.settings
        t0 = time.perf_counter()
        try:
            return await rpc.call(
                self.pool,
                statement,
                values,
                identity,
                statement_timeout=timeout,
                read_only=read_only,
                pool_timeout=s.pool_timeout,
                db_timeout=s.db_timeout,
                prepare=s.prepare,
            )
        except PoolTimeout:
            raise errors.unavailable(
                "PGRST003",
                "Timed out acquiring connection from connection pool.",
                s.retry_after,
                "pool_timeout",
            ) from None
        except PoolClosed:
            raise errors.unavailable(
                "PGRST000", "The server is shutting down", s.retry_after, "shutting_down"
            ) from None
        except rpc.DbTimeoutError:
            raise errors.unavailable(
                "PGRST000", "The database did not answer in time", s.retry_after, "db_timeout"
            ) from None
        except psycopg.Error as exc:
            err = errors.from_database(exc, identity.anonymous, ctx.request_id, s.retry_after)
            if err.status >= 500 and err.status != 503:
                log.error(
                    "request %s: database error %s: %s", ctx.request_id, exc.diag.sqlstate, exc
                )
            elif err.status == 503:
                log.warning("request %s: database unavailable: %s", ctx.request_id, exc)
            raise err from None
        finally:
            ctx.db_ms = (time.perf_counter() - t0) * 1000
            self.metrics.db_latency.labels(ctx.function).observe(ctx.db_ms / 1000)

    async def ping(self) -> None:
        """``select 1`` on a pooled connection, bounded like a request (pool timeout, then
        ``db_timeout``): a frozen database is "not ready" now, not when it thaws."""
        assert self.pool is not None
        s = self.settings
        try:
            async with self.pool.connection(timeout=s.pool_timeout) as conn:
                try:
                    async with asyncio.timeout(s.db_timeout):
                        await rpc.ping(conn)
                except TimeoutError:
                    await conn.close()  # mid-exchange: never back into the pool
                    raise
        except (psycopg.Error, PoolTimeout, TimeoutError):
            raise errors.unavailable(
                "PGRST000", "Could not connect with the database", s.retry_after, "database_down"
            ) from None

    async def handle(
        self,
        request: Request,
        route: str,
        work: Callable[[RequestContext], Awaitable[Response]],
    ) -> Response:
        """Run ``work`` and turn every outcome into a response with timing, metrics, log."""
        incoming = _header(request, b"x-request-id") or ""
        ctx = RequestContext(
            incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else os.urandom(8).hex()
        )
        try:
            response = await work(ctx)
        except ApiError as err:
            response = self.error(ctx, err)
        except Exception:
            log.exception("request %s: internal error", ctx.request_id)
            response = self.error(ctx, errors.internal(ctx.request_id))
        total = (time.perf_counter() - ctx.started) * 1000
        h = response.headers
        h["X-Request-Id"] = ctx.request_id
        h["Server-Timing"] = (
            f"auth;dur={ctx.auth_ms:.3f}, db;dur={ctx.db_ms:.3f}, total;dur={total:.3f}"
        )
        status = response.status_code
        self.metrics.observe(route, ctx.function, status, total / 1000)
        if self.settings.access_log:
            access_log.info(
                "%s",
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "request_id": ctx.request_id,
                        "method": request.method,
                        "path": request.url.path,
                        "route": route,
                        "function": ctx.function,
                        "role": ctx.role,
                        "status": status,
                        "ms": round(total, 3),
                        "db_ms": round(ctx.db_ms, 3),
                        "cache": ctx.cache,
                        "error": ctx.error,
                    },
                    separators=(",", ":"),
                ),
            )
        return response

    def error(self, ctx: RequestContext, err: ApiError) -> Response:
        """The PostgREST error response; 503s counted by reason."""
        ctx.error = err.code
        if err.status == 503:
            self.metrics.unavailable.labels(err.reason or "other").inc()
        return Response(err.body(), status_code=err.status, media_type=_JSON, headers=err.headers)


def _header(request: Request, name: bytes) -> str | None:
    """One request header (ASGI names are lower-case bytes); the scope's headers are turned
    into a dict once per request instead of Starlette's list scan on every lookup."""
    scope = request.scope
    headers: dict[bytes, bytes] | None = scope.get("eventlive.headers")
    if headers is None:
        headers = scope["eventlive.headers"] = dict(scope["headers"])
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _prefers_minimal(request: Request) -> bool:
    prefer = _header(request, b"prefer")
    return prefer is not None and "return=minimal" in prefer


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "PGRST413", f"Request body exceeds {limit} bytes", details="body_too_large"
    )


def create_app(settings: Settings) -> Starlette:
    """The ASGI app for ``settings``; resources open in its lifespan."""
    service = Service(settings)

    async def rpc_endpoint(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            method = request.method
            if method not in ("GET", "HEAD", "POST"):
                raise ApiError(
                    405,
                    "PGRST101",
                    f"Cannot use the {method} method on RPC",
                    details="method_not_allowed",
                    headers={"Allow": "GET, HEAD, POST"},
                )
            schema = service.profile(request)
            identity = await service.identify(request, ctx)
            if method == "POST":
                given = rpc.parse_body(await service.body(request))
            else:
                given = {}
                for key, value in request.query_params.multi_items():
                    if key in given:
                        raise rpc.bad_request(
                            "PGRST100", f"Argument {key} given twice", "duplicate_argument"
                        )
                    given[key] = value
            return await service.invoke(
                request,
                ctx,
                schema=schema,
                name=request.path_params["fn"],
                given=given,
                identity=identity,
            )

        return await service.handle(request, "/rpc/{fn}", work)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            await service.ping()
            if not service.catalog.loaded:
                raise errors.unavailable(
                    "PGRST002",
                    "Schema cache not loaded",
                    settings.retry_after,
                    "catalog_not_loaded",
                )
            return JSONResponse({"status": "ready"})

        return await service.handle(request, "/ready", work)

    async def metrics(request: Request) -> Response:
        return Response(
            service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_json(request: Request) -> Response:
        async def work(ctx: RequestContext) -> Response:
            schema = service.profile(request)
            return JSONResponse(openapi.document(service.catalog, schema, settings))

        return await service.handle(request, "/openapi.json", work)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/rpc/{fn}", rpc_endpoint, methods=ALL_METHODS),
        Route("/rest/v1/rpc/{fn}", rpc_endpoint, methods=ALL_METHODS),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *legacy.routes(service),
    ]
    middleware = []
    if settings.cors_origins:
        # supabase-js in a browser on another origin: preflights and exposed headers.
        middleware.append(
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
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown paths and wrong methods on fixed routes: PostgREST-shaped too.
        assert isinstance(exc, HTTPException)
        code = {404: "PGRST125", 405: "PGRST101"}.get(exc.status_code, "PGRST000")
        err = ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
        return Response(err.body(), status_code=err.status, media_type=_JSON, headers=err.headers)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
    )
    app.state.service = service
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (each worker reads the environment)."""
    return create_app(Settings.from_env())
