"""The one table of the routes that call a function: path, metric label, the function (or
``{fn}`` from the path), the method, the body keys a legacy route accepts, and where the
schema comes from. Both entrances read it: the Starlette routes (``shim.http.full``) and
the lean entrance of the hot routes (``shim.http.lean``, through ``hot_route``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shim.http.bind import bad_request
from shim.web.ids import webinar_id

RPC_PREFIXES = ("", "/rest/v1")
LEGACY_PREFIX = "/api/webinars/"
# The calls whose statement is prepared per connection and role.
HOT_FUNCTIONS = frozenset({"api.presence_ping", "api.track_access", "api.presence_leave"})
COALESCED = "api.presence_ping"  # the heartbeat: coalesced when it can be (``pipeline``)
BATCHED_ENTRY = "api.track_access"  # entries: batched per webinar in turn when they can be


@dataclass(frozen=True, slots=True)
class FunctionRoute:
    """A route that calls a function.

    ``function`` None: the name is the path's ``{fn}`` and the schema the request's
    profile (``/rpc``); else a legacy route of the legacy schema, the webinar id taken
    from the path, only ``keys`` accepted in the body. ``method``: ``RPC`` (GET/HEAD for
    stable functions, POST for all), ``POST`` or ``GET``."""

    path: str
    label: str
    function: str | None = None
    method: str = "RPC"
    keys: frozenset[str] = frozenset()

    @property
    def legacy(self) -> bool:
        return self.function is not None

    def arguments(self, given: dict[str, Any], wid: int) -> dict[str, Any]:
        """A legacy route's arguments: the body's (only ``keys``) and the path's webinar id
        (as text for a GET, whose arguments are bound from the query string)."""
        if not self.keys.issuperset(given):
            extra = sorted(set(given) - self.keys)
            raise bad_request(
                "PGRST102", f"Unknown field(s): {', '.join(extra)}", "unknown_argument"
            )
        given["webinar_id"] = wid if self.method == "POST" else str(wid)
        return given


def _legacy(suffix: str, function: str, method: str, *keys: str) -> FunctionRoute:
    label = f"/api/webinars/{{id}}/{suffix}"
    return FunctionRoute(
        f"/api/webinars/{{webinar_id}}/{suffix}", label, function, method, frozenset(keys)
    )


RPC = tuple(FunctionRoute(f"{prefix}/rpc/{{fn}}", "/rpc/{fn}") for prefix in RPC_PREFIXES)
LEGACY = (
    _legacy("access/track", "track_access", "POST", "session_id", "client"),
    _legacy("presence/ping", "presence_ping", "POST", "session_id"),
    _legacy("presence/leave", "presence_leave", "POST", "session_id"),
    _legacy("stats/access", "access_stats", "GET"),
)
ROUTES = RPC + LEGACY

_HOT_RPC = {
    f"{prefix}/rpc/{name}": name
    for prefix in RPC_PREFIXES
    for name in ("presence_ping", "track_access")
}
_HOT_LEGACY = {route.path.rsplit("}/", 1)[1]: route for route in LEGACY if route.method == "POST"}


Hot = tuple[FunctionRoute, str, int | None]
# ``hot_route``'s answers by path, bounded (emptied when full): a path's answer never
# changes, and a viewer's pings repeat one path. Measured (timeit): 0.59 -> 0.04 us for a
# legacy path (its split and the webinar-id rule), 0.08 -> 0.04 us for an /rpc one.
_SEEN: dict[str, Hot | None] = {}
SEEN_MAX = 4096


def hot_route(path: str) -> Hot | None:
    """For a POST to ``path``: the route, the function and the webinar id of the path,
    when it is a hot route the lean entrance answers; else None."""
    try:
        return _SEEN[path]
    except KeyError:
        pass
    if len(_SEEN) >= SEEN_MAX:
        _SEEN.clear()
    found = _SEEN[path] = _hot_route(path)
    return found


def _hot_route(path: str) -> Hot | None:
    name = _HOT_RPC.get(path)
    if name is not None:
        return RPC[0], name, None
    if not path.startswith(LEGACY_PREFIX):
        return None
    raw_id, _, suffix = path[len(LEGACY_PREFIX) :].partition("/")
    route = _HOT_LEGACY.get(suffix)
    wid = webinar_id(raw_id) if route is not None else None
    if route is None or wid is None or route.function is None:
        return None
    return route, route.function, wid
