"""Arguments in, one round trip out.

``bind`` checks a request's arguments against the catalog and never touches the
database: unknown or missing names and values of the wrong JSON type for the declared
Postgres type are 400s here. ``call`` sends the whole transaction in one pipeline:
statement 1 switches role, claims, statement_timeout (and read-only for GET); statement 2
calls the function. Everything before the pipeline's single Sync is one implicit
transaction (PostgreSQL protocol, "Pipelining"), so the settings are transaction-local,
an error rolls everything back, and the exchange costs one network round trip whether it
succeeds or fails. Each statement is parsed after the previous one ran, so the call is
privilege-checked as the switched role (DESIGN §6).

The exchange talks to libpq directly (psycopg's ``pgconn``) rather than through cursors:
it is the hot path, and psycopg's pipeline machinery costs about twice the client CPU
(measured: ~90 vs ~220 us per call). Values travel as text parameters; each ``$n`` is
cast to the declared type in the statement, so Postgres' input functions validate them.
The settings statement is prepared once per connection (it is parsed as the login role,
which may run it); the call is sent unnamed, so it is parsed after the role switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result as errors_from_result
from psycopg_pool import AsyncConnectionPool

from shim.auth import Identity
from shim.catalog import Arg, Routine, int_range
from shim.errors import ApiError

_SETTINGS = (
    b"select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), "
    b"set_config('statement_timeout', $3, true)"
)
_SET_RO = _SETTINGS + b", set_config('transaction_read_only', 'on', true)"
_PREPARED = {
    False: (b"eventlive_settings_rw", _SETTINGS),
    True: (b"eventlive_settings_ro", _SET_RO),
}
# Connections on which the settings statements are prepared (server-side, per session).
_prepared_on: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()

_INT = re.compile(r"-?\d{1,20}\Z", re.ASCII)  # ASCII: \d and int() read any script's digits
_NUM = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z", re.ASCII)
_TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
_NUMERIC_TYPES = frozenset({"numeric", "real", "double precision"})
_JSON_TYPES = frozenset({"json", "jsonb"})


class _VanishedError(Exception):
    """The prepared settings statement was gone; nothing ran, so trying again is safe."""


class DbTimeoutError(Exception):
    """The database did not answer within ``EVENTLIVE_DB_TIMEOUT``."""


def bad_request(code: str, message: str, details: str | None = None) -> ApiError:
    """A 400 for the client's own mistake (PostgREST body)."""
    return ApiError(400, code, message, details=details)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


class _DuplicateKeyError(ValueError):
    """An object names the same key twice."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _DuplicateKeyError
    return value


# Python's json reads NaN and +-Infinity, which JSON (and Postgres' jsonb) has not, and
# keeps the last of duplicated keys, where other parsers keep the first: both refused.
_DECODER = json.JSONDecoder(parse_constant=_not_json, object_pairs_hook=_object)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of named arguments; an empty body means no arguments."""
    if not raw.strip():
        return {}
    try:
        value = _DECODER.decode(raw.decode(json.detect_encoding(raw)))
    except _DuplicateKeyError:
        raise bad_request(
            "PGRST102", "A JSON object in the body names the same key twice", "duplicate_key"
        ) from None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise bad_request("PGRST102", "Empty or invalid json", "malformed_json") from None
    if not isinstance(value, dict):
        raise bad_request(
            "PGRST102", "The request body must be a JSON object of named arguments", "not_an_object"
        )
    return value


def _wrong_type(arg: Arg, detail: str = "wrong_type") -> ApiError:
    return bad_request(
        "22P02", f'Invalid value for argument "{arg.name}" of type {arg.type}', detail
    )


def _integer(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    bounds = int_range(type_name)
    assert bounds is not None
    if isinstance(value, str) and _INT.match(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(arg)
    if not bounds[0] <= value <= bounds[1]:
        raise bad_request(
            "22003",
            f'Value of argument "{arg.name}" is out of range for {type_name}',
            "out_of_range",
        )
    return value


def _uuid(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if not isinstance(value, str):
        raise _wrong_type(arg)
    try:
        uuid.UUID(value)
    except ValueError:
        raise _wrong_type(arg) from None
    return value


def _boolean(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if from_query and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise _wrong_type(arg)
    return value


def _number(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if isinstance(value, str) and _NUM.match(value):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _wrong_type(arg)
    return value


def _text(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    if not isinstance(value, str):
        raise _wrong_type(arg)
    return value


def _other(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    # Dates, enums, domains...: Postgres parses the text; 22xxx there is a 400 too.
    if isinstance(value, (dict, list)):
        raise _wrong_type(arg)
    return value if isinstance(value, str) else json.dumps(value)


_Checker = Callable[[Arg, str, Any, bool], Any]
_CHECKS: dict[str, _Checker] = {
    "smallint": _integer,
    "integer": _integer,
    "bigint": _integer,
    "uuid": _uuid,
    "boolean": _boolean,
    **dict.fromkeys(_NUMERIC_TYPES, _number),
    **dict.fromkeys(_TEXT_TYPES, _text),
}


def _scalar(arg: Arg, type_name: str, value: Any, from_query: bool) -> Any:
    """Check one value against ``type_name``; return what psycopg should send."""
    if value is None:
        return None
    return _CHECKS.get(type_name, _other)(arg, type_name, value, from_query)


def _value(arg: Arg, value: Any, from_query: bool) -> Any:
    if arg.type in _JSON_TYPES:
        if from_query:
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                raise _wrong_type(arg) from None
            return value
        try:
            return json.dumps(value)
        except RecursionError:
            raise _wrong_type(arg) from None
    if arg.is_array and value is not None:
        if from_query and isinstance(value, str):
            return value  # a Postgres array literal, {a,b}; Postgres validates it
        if not isinstance(value, list):
            raise _wrong_type(arg)
        return [_scalar(arg, arg.base, v, False) for v in value]
    return _scalar(arg, arg.type, value, from_query)


def bind(
    candidates: list[Routine], given: dict[str, Any], from_query: bool = False
) -> tuple[Routine, bytes, list[bytes | None]]:
    """Pick the overload whose names fit ``given``; return it, its statement and values."""
    names = set(given)
    fits = [r for r in candidates if names <= r.by_name.keys() and r.required <= names]
    if len(fits) > 1:
        raise ApiError(300, "PGRST203", "Could not choose the best candidate function")
    if not fits:
        routine = candidates[0]
        known = routine.by_name
        unknown = sorted(names - known.keys())
        if unknown:
            raise bad_request(
                "PGRST102",
                f"Unknown argument(s) for {routine.name}: {', '.join(unknown)}",
                "unknown_argument",
            )
        missing = [a.name for a in routine.args if not a.has_default and a.name not in names]
        raise bad_request(
            "PGRST102",
            f"Missing argument(s) for {routine.name}: {', '.join(missing)}",
            "missing_argument",
        )
    routine = fits[0]
    ordered = tuple(a.name for a in routine.args if a.name in names)
    by_name = routine.by_name
    try:
        values = [encode(_value(by_name[n], given[n], from_query)) for n in ordered]
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows the escape "\ud800"): no UTF-8 text can carry it.
        raise bad_request("22021", "Text values must be valid Unicode", "invalid_unicode") from None
    if any(v is not None and b"\x00" in v for v in values):
        # libpq sends text parameters as C strings: a NUL would silently cut the value.
        raise bad_request("22021", "Text values may not contain NUL characters", "nul_character")
    return routine, routine.statement(ordered), values


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    text = encode(value)
    assert text is not None
    return '"' + text.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode(value: Any) -> bytes | None:
    """A checked value as Postgres text input (None is SQL null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return ("{" + ",".join(_array_item(v) for v in value) + "}").encode()
    return str(value).encode()


async def _wait(fd: int, write: bool = False) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _results(pg: Any) -> list[Any]:
    """Every result of the pipeline up to its Sync, waiting on the socket, not blocking."""
    while pg.flush():
        await _wait(pg.socket, write=True)
    results: list[Any] = []
    while True:
        pg.consume_input()
        while not pg.is_busy():
            res = pg.get_result()
            if res is None:
                continue
            if res.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            results.append(res)
        await _wait(pg.socket)


async def _pipeline(pg: Any, send: Callable[[], None]) -> list[Any]:
    """Enter pipeline mode, ``send()`` the statements, Sync, and collect the results;
    the connection always leaves pipeline mode, even when the wait is cancelled."""
    pg.enter_pipeline_mode()
    try:
        send()
        pg.pipeline_sync()
        return await _results(pg)
    finally:
        if pg.pipeline_status != pq.PipelineStatus.OFF:
            with contextlib.suppress(psycopg.Error):
                pg.exit_pipeline_mode()


async def _exchange(
    conn: Any,
    settings: list[bytes | None],
    call: tuple[bytes, list[bytes | None]],
    *,
    read_only: bool,
    prepare: bool,
) -> bytes | None:
    """Pipeline: [prepare settings], settings, call, Sync: one flush, one read loop."""
    pg = conn.pgconn
    name, text = _PREPARED[read_only]
    done = _prepared_on.setdefault(conn, set())
    preparing = prepare and name not in done

    def send() -> None:
        if not prepare:  # e.g. behind a transaction-mode pooler: no named statements
            pg.send_query_params(text, settings)
        else:
            if preparing:
                pg.send_prepare(name, text)
            pg.send_query_prepared(name, settings)
        pg.send_query_params(*call)

    results = await _pipeline(pg, send)
    if preparing and results[0].status == pq.ExecStatus.COMMAND_OK:
        done.add(name)
    for index, res in enumerate(results):
        if res.status == pq.ExecStatus.FATAL_ERROR:
            exc = errors_from_result(res, conn.info.encoding)
            if index == int(preparing) and exc.diag.sqlstate == "26000":
                # Our settings statement vanished (DISCARD ALL, a pooler): nothing ran.
                done.discard(name)
                raise _VanishedError from exc
            raise exc
    last = results[-1]
    return last.get_value(0, 0) if last.ntuples else None


async def ping(conn: Any) -> None:
    """``select 1`` talking to libpq the way ``call`` does, so that ``asyncio.timeout`` can
    abandon it: psycopg's ``execute``, when cancelled, sends a cancel request and then waits
    for the server's answer, which a frozen (SIGSTOPped) server never gives."""
    pg = conn.pgconn
    results = await _pipeline(pg, lambda: pg.send_query_params(b"select 1", None))
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            raise errors_from_result(res, conn.info.encoding)


async def call(
    pool: AsyncConnectionPool[Any],
    statement: bytes,
    values: list[bytes | None],
    identity: Identity,
    *,
    statement_timeout: str,
    read_only: bool,
    pool_timeout: float,
    db_timeout: float,
    prepare: bool = True,
) -> str | None:
    """Run ``statement`` as ``identity`` in one round trip; the first column of its row.

    Raises ``psycopg_pool.PoolTimeout`` (no connection in time), ``psycopg.Error`` (the
    database's error, transaction already rolled back) or ``DbTimeoutError``.
    """
    settings: list[bytes | None] = [
        identity.role.encode(),
        identity.claims.encode(),
        statement_timeout.encode(),
    ]
    async with pool.connection(timeout=pool_timeout) as conn:
        try:
            async with asyncio.timeout(db_timeout):
                try:
                    value = await _exchange(
                        conn, settings, (statement, values), read_only=read_only, prepare=prepare
                    )
                except _VanishedError:
                    # Nothing ran (the pipeline aborted at the settings); prepare again.
                    value = await _exchange(
                        conn, settings, (statement, values), read_only=read_only, prepare=prepare
                    )
        except TimeoutError:
            # The connection is mid-exchange; drop it rather than return it to the pool.
            await conn.close()
            raise DbTimeoutError from None
    return None if value is None else value.decode()
