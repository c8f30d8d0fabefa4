"""Helpers for the shim's tests: a test-only API schema, a TCP proxy that counts round
trips and can cut the database away, token minting, and an app runner on real uvicorn.

Not a test module. The fixtures built on it live in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import selectors
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import psycopg
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from starlette.applications import Starlette

from shim.http.settings import Settings
from shim.pg.ports import free_port
from shim.realtime import HubSettings

SECRET = "shim-tests-hs256-secret-of-at-least-32-bytes"
USER_ID = "6c2d6f8e-8a51-4c4e-9d61-0d7f6e2b9a10"

# A schema only authenticated/anon/service_role may use (not authenticator): a call parsed
# as the login role would fail (privileges are checked at parse time), so every passing
# call proves the role switch.
TEST_SCHEMA_SQL = r"""
create schema test_api;
create schema test_api2;
create schema test_private;
grant usage on schema test_api, test_api2 to anon, authenticated, service_role;
grant usage on schema test_private to authenticated;

create table test_private.uniq (k int primary key);
grant insert on test_private.uniq to authenticated;

create function test_api.echo(a bigint, b uuid default null, c jsonb default null,
                              d text default null, e boolean default null,
                              f int[] default null, g numeric default null)
returns jsonb language sql stable
as $$ select jsonb_build_object('a', a, 'b', b, 'c', c, 'd', d, 'e', e, 'f', f, 'g', g) $$;
comment on function test_api.echo(bigint, uuid, jsonb, text, boolean, int[], numeric) is
  'Echo the arguments.';
grant execute on function test_api.echo(bigint, uuid, jsonb, text, boolean, int[], numeric)
  to anon, authenticated;

create function test_api.whoami() returns jsonb language sql volatile
as $$ select jsonb_build_object('user', current_user, 'sub', auth.uid(),
                                'claims', auth.jwt(),
                                'read_only', current_setting('transaction_read_only'),
                                'statement_timeout', current_setting('statement_timeout')) $$;
grant execute on function test_api.whoami() to anon, authenticated, service_role;

create function test_api.whoami_ro() returns jsonb language sql stable
as $$ select jsonb_build_object('user', current_user,
                                'read_only', current_setting('transaction_read_only')) $$;
grant execute on function test_api.whoami_ro() to anon, authenticated;

create function test_api.nothing(x int default 0) returns void language sql volatile
as $$ select $$;
grant execute on function test_api.nothing(int) to anon, authenticated;

create function test_api.series(n int) returns setof int language sql stable
as $$ select generate_series(1, n) $$;
grant execute on function test_api.series(int) to anon, authenticated;

create function test_api.squares(n int) returns table (i int, sq int) language sql stable
as $$ select i, i * i from generate_series(1, n) i $$;
grant execute on function test_api.squares(int) to anon, authenticated;

create function test_api.greeting(name text) returns text language sql immutable
as $$ select 'hello ' || name $$;
grant execute on function test_api.greeting(text) to anon, authenticated;

create function test_api.fail(code text, msg text, det text default null,
                              hnt text default null)
returns void language plpgsql volatile
as $$ begin
  raise exception using errcode = code, message = msg, detail = coalesce(det, ''),
                        hint = coalesce(hnt, '');
end $$;
grant execute on function test_api.fail(text, text, text, text) to anon, authenticated;

create function test_api.dup() returns void language sql volatile
as $$ insert into test_private.uniq values (1); insert into test_private.uniq values (1) $$;
grant execute on function test_api.dup() to authenticated;

create function test_private.writer() returns int language sql volatile
as $$ insert into test_private.uniq values (2) returning k $$;
grant execute on function test_private.writer() to authenticated;
create function test_api.write_in_get() returns int language plpgsql stable
as $$ begin return test_private.writer(); end $$;
grant execute on function test_api.write_in_get() to authenticated;

create function test_api.only_service() returns int language sql volatile as $$ select 1 $$;
grant execute on function test_api.only_service() to service_role;

create function test_api.hidden() returns int language sql volatile as $$ select 1 $$;

create function test_api.sleepy(seconds float) returns int language sql volatile
as $$ select 1 from pg_sleep(seconds) $$;
grant execute on function test_api.sleepy(float) to anon, authenticated;

create function test_api.stats(w bigint) returns jsonb language sql stable
as $$ select jsonb_build_object('w', w, 'at', clock_timestamp()) $$;
comment on function test_api.stats(bigint) is 'Stats for polling.
@cache 5';
grant execute on function test_api.stats(bigint) to anon, authenticated;

create function test_api.slow_stats(w bigint) returns jsonb language sql stable
as $$ select jsonb_build_object('w', w, 'at', clock_timestamp()) from pg_sleep(1) $$;
grant execute on function test_api.slow_stats(bigint) to anon, authenticated;

create function test_api.internal_bug() returns int language plpgsql volatile
as $$ begin raise exception 'secret: select * from test_private.uniq' using errcode = 'XX000'; end $$;
grant execute on function test_api.internal_bug() to anon, authenticated;

create function test_api2.hello() returns text language sql stable as $$ select 'second' $$;
grant execute on function test_api2.hello() to anon, authenticated;
"""


@dataclass(frozen=True)
class ShimDb:
    """A migrated clone with the test schemas: ``dsn`` as authenticator, ``admin_dsn``."""

    dsn: str
    admin_dsn: str


def settings_for(dsn: str, **overrides: Any) -> Settings:
    """Settings for tests: the test schemas, HS256 with ``SECRET``, a small pool."""
    base = Settings(
        database_url=dsn,
        schemas=("test_api", "test_api2"),
        jwt_secret=SECRET,
        pool_min=1,
        pool_max=2,
        access_log=False,
        # No background ticks in these tests: the counting proxy must see requests only
        # (tests/sql/test_housekeeping.py runs housekeeping where it is the subject).
        housekeeping_interval=0,
    )
    return dataclasses.replace(base, **overrides)


def new_users(admin_dsn: str, n: int) -> list[str]:
    """``n`` new rows of ``auth.users``: their ids."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) select unnest(%s::uuid[])", (ids,))
    return ids


def token(
    claims: dict[str, Any] | None = None,
    *,
    key: Any = SECRET,
    alg: str = "HS256",
    kid: str | None = None,
    ttl: int = 3600,
) -> str:
    """A signed JWT; defaults: an authenticated user valid for an hour."""
    now = int(time.time())
    payload = {
        "sub": USER_ID,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + ttl,
    }
    payload.update(claims or {})
    payload = {k: v for k, v in payload.items() if v is not None}  # None: leave the claim out
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def bearer(tok: str) -> dict[str, str]:
    """The Authorization header for ``tok``."""
    return {"Authorization": f"Bearer {tok}"}


@dataclass
class KeyPair:
    """An asymmetric key with its public JWK."""

    private: Any
    jwk: dict[str, Any]


def rsa_key(kid: str) -> KeyPair:
    """A fresh RS256 key pair."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair(private, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"})


def ec_key(kid: str) -> KeyPair:
    """A fresh ES256 (P-256) key pair."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair(private, {**jwk, "kid": kid, "alg": "ES256", "use": "sig"})


class TcpProxy:
    """A loopback TCP proxy in front of Postgres.

    ``bursts`` counts client->server write bursts: a burst starts with the first bytes
    the client sends after the server last spoke on that connection, so N sequential
    request/response exchanges count N, however TCP splits them. ``cut()`` closes every
    connection and refuses new ones (the database "vanishes"); ``restore()`` undoes it.
    """

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        if host.startswith("/"):
            self._target: Any = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._target = (socket.AF_INET, (host, port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.dsn = make_conninfo(dsn, host="127.0.0.1", port=str(self.port))
        self.bursts = 0
        self.bytes_up = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._refusing = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.bursts = 0
            self.bytes_up = 0

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            family, address = self._target
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(address)
            for s in (client, upstream):
                if family == socket.AF_INET or s is client:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ)
        sel.register(upstream, selectors.EVENT_READ)
        last = ""
        try:
            while True:
                for key, _ in sel.select(0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        with self._lock:
                            if last != "up":
                                self.bursts += 1
                            self.bytes_up += len(data)
                        last = "up"
                        upstream.sendall(data)
                    else:
                        last = "down"
                        client.sendall(data)
        except (OSError, ValueError):  # ValueError: cut() closed a socket under select
            return
        finally:
            sel.close()
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._refusing = True
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def restore(self) -> None:
        """Accept connections again."""
        self._refusing = False

    def close(self) -> None:
        """Stop the proxy."""
        self.cut()
        self._closed = True
        self._listener.close()
        self._thread.join(timeout=2)


@contextlib.contextmanager
def uvicorn_server(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with real uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# The realtime hub keeps its own connections and ticks: the HTTP tests that count what
# reaches the database run without it (tests/realtime and tests/verify run it).
NO_HUB = HubSettings(enabled=False)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (without the realtime hub), lifespan included, behind an httpx
    client."""
    from shim.serve.app import create_app

    app = create_app(settings, NO_HUB)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.listener.listening.wait(), 10)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
            yield client
