"""What the shim serves to people rather than programs: the operators' live status page
(``GET /status``, ``sampler`` + ``page``) and the front ends' client module
(``GET /eventlive.js``, ``assets/eventlive.js``).

The status page is for service_role only: a request carrying a service_role JWT (the
``Authorization`` header, or the HttpOnly cookie the sign-in form sets from a key pasted
in a POST body) sees it; anyone else gets the 401 sign-in page. No secret travels in a
URL.
"""

from __future__ import annotations

import time
from importlib import resources
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from shim.console import page
from shim.console.sampler import Sampler
from shim.http.errors import ApiError
from shim.http.request import header
from shim.http.service import Service
from shim.web.body import read_body

COOKIE = "eventlive_status"
INTERVAL = 2.0
_MAX_COOKIE_SECONDS = 12 * 3600
_CLIENT_JS = (resources.files("shim.console") / "assets" / "eventlive.js").read_bytes()


class Console:
    """The routes and the sampler they share; ``stop`` in the app's lifespan."""

    def __init__(self, service: Service, interval: float = INTERVAL) -> None:
        self.service = service
        self.sampler = Sampler(service, interval=interval)

    async def stop(self) -> None:
        await self.sampler.stop()

    def routes(self) -> list[Route]:
        return [
            Route("/status", self.status, methods=["GET", "POST"]),
            Route("/status/live", self.live, methods=["GET"]),
            Route("/status/logout", self.logout, methods=["POST"]),
            Route("/eventlive.js", client_module, methods=["GET", "HEAD"]),
        ]

    async def _operator(self, token: str | None) -> bool:
        """True when ``token`` is a valid JWT whose role is service_role."""
        if not token:
            return False
        try:
            identity = await self.service.auth.identify(token)
        except ApiError:
            return False
        return identity.role == "service_role"

    def _token(self, request: Request) -> str | None:
        authorization = header(request, b"authorization")
        if authorization and authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        return request.cookies.get(COOKIE)

    async def status(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._sign_in(request)
        if not await self._operator(self._token(request)):
            return _refused(page.sign_in())
        snap = await self.sampler.snapshot()
        return _html(page.page(snap, self.sampler.interval))

    async def live(self, request: Request) -> Response:
        if not await self._operator(self._token(request)):
            return _refused("")
        return _html(page.live(await self.sampler.snapshot()))

    async def _sign_in(self, request: Request) -> Response:
        try:
            raw = await read_body(request, limit=16384, timeout=self.service.settings.body_timeout)
        except ApiError as err:  # too large (413) or too slow (408): said with the form again
            return _refused(page.sign_in("The form could not be read."), err.status)
        key = (parse_qs(raw.decode("utf-8", "replace")).get("key") or [""])[0].strip()
        if not await self._operator(key):
            return _refused(page.sign_in("That is not a valid service_role key."))
        identity = await self.service.auth.identify(key)
        ttl = _MAX_COOKIE_SECONDS
        if identity.expires is not None:
            ttl = max(0, min(ttl, int(identity.expires - time.time())))
        response = RedirectResponse("/status", status_code=303)
        response.set_cookie(
            COOKIE,
            key,
            max_age=ttl,
            path="/status",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/status", status_code=303)
        response.delete_cookie(COOKIE, path="/status")
        return response


def _html(body: str) -> Response:
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def _refused(body: str, status: int = 401) -> Response:
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def client_module(request: Request) -> Response:
    """The front ends' ES module (no build step, no dependencies)."""
    return Response(
        _CLIENT_JS,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )
