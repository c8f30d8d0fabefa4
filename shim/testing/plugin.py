"""pytest plugin (entry point ``pytest11: eventlive``): real PostgreSQL for tests.

Server: a throwaway server started by ``shim.pg.throwaway.TemporaryServer`` (works as root),
or the existing server named by ``EVENTLIVE_TEST_DSN`` (a superuser DSN; nothing is
started, and every database we create there carries a random suffix and is dropped).

Databases, through pytest-postgresql's ``DatabaseJanitor``: the schema is migrated once
per session into a template database (``shim.migrate.migrate``) and every test that asks
for ``eventlive_db`` gets a fresh ``CREATE DATABASE ... TEMPLATE`` clone, dropped after it.

Shape (``EVENTLIVE_TEST_SHAPE``): ``plain`` (default) migrates the template as the
server's superuser on plain PostgreSQL; ``supabase`` starts a throwaway server shaped like
a Supabase project (``shim.supabase``: superuser ``supabase_admin``, Supabase's roles,
``auth`` and ``realtime`` owned by Supabase's roles) and migrates the template as the
non-superuser ``postgres``, so the same tests run against both.

Fixtures (a contract for tests in this repository and in testers' projects):

- ``eventlive_server`` (session): ``.host``, ``.port``, ``.admin_dsn(dbname)``.
- ``empty_database`` (function): superuser DSN of a new empty database.
- ``eventlive_db`` (function): the clone -- ``.name``, ``.admin_dsn``, ``.dsn`` (as
  ``authenticator``), ``.migrator_dsn`` (the role migrations ran as: create test objects
  as it, so the schema's default privileges apply), ``.clone_seconds``.
- ``admin_conn`` (function): superuser connection to the clone, autocommit.
- ``db`` (function): connection to the clone as ``authenticator`` (not a superuser, so
  RLS applies), autocommit **off**; use ``shim.testing.act_as`` to pick the API role.
- ``eventlive_pgbouncer`` (session): PgBouncer in transaction mode on loopback in front of
  ``eventlive_server`` (``shim.testing.pgbouncer``): ``.dsn(any_dsn)`` is that DSN through
  it. Skips, saying so, when the ``pgbouncer`` binary is absent (``.ci/run`` installs it).
- ``supabase_server`` (session): a Supabase-shaped server (the session's own under
  ``EVENTLIVE_TEST_SHAPE=supabase``, else a second throwaway one).
- ``supabase_project`` (function): a fresh database of that shape, not migrated --
  ``.admin_dsn`` (``supabase_admin``), ``.migrator_dsn`` (``postgres``), ``.dsn``
  (``authenticator``); ``.older()`` plants an older project's grants.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shim.pg.binaries import find_binaries
from shim.pg.throwaway import TemporaryServer
from shim.supabase import MIGRATOR
from shim.supabase import SUPERUSER as SUPABASE_SUPERUSER
from shim.supabase.build import (
    build_database,
    build_roles,
    grant_older_privileges,
    hand_database_to_migrator,
    revoke_older_privileges,
)

if TYPE_CHECKING:
    from pytest_postgresql.janitor import DatabaseJanitor

DSN_ENV = "EVENTLIVE_TEST_DSN"
SHAPE_ENV = "EVENTLIVE_TEST_SHAPE"
PLAIN, SUPABASE = "plain", "supabase"
# The environment variables the test kit reads (the README's configuration table shows them).
ENV_DOC = {
    DSN_ENV: "tests: a superuser DSN of an existing server to use instead of a throwaway one",
    SHAPE_ENV: "tests: `plain` (default) or `supabase` (a Supabase-shaped server, migrated as "
    "the non-superuser `postgres`)",
}
AUTHENTICATOR = "authenticator"
_TEMPLATE_LOCK = 0x6576656E746C6976  # "eventliv": serializes template builds across runs
AUTHENTICATOR_PASSWORD_ENV = "EVENTLIVE_TEST_AUTHENTICATOR_PASSWORD"  # noqa: S105 - a name


@dataclass
class Timings:
    """What the session spent on databases, for the terminal summary."""

    server_seconds: float | None = None
    template_seconds: float | None = None
    clones: list[float] = field(default_factory=list)


_timings_key = pytest.StashKey[Timings]()


@dataclass(frozen=True)
class EventliveServer:
    """The session's PostgreSQL server (throwaway or ``EVENTLIVE_TEST_DSN``)."""

    conninfo: str  # superuser conninfo, any database
    throwaway: bool
    run_id: str  # random; part of every database name we create
    shape: str = PLAIN  # PLAIN or SUPABASE (``shim.supabase``)

    @property
    def migrator(self) -> str:
        """The role migrations run as: the superuser, or Supabase's ``postgres``."""
        return MIGRATOR if self.shape == SUPABASE else self.user

    def migrator_dsn(self, dbname: str) -> str:
        return self.dsn(dbname, self.migrator)

    def prepare(self, dbname: str) -> None:
        """What a new database of this shape needs before use (Supabase: owned by postgres)."""
        if self.shape == SUPABASE:
            with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
                hand_database_to_migrator(conn, dbname)

    @property
    def params(self) -> dict[str, Any]:
        return conninfo_to_dict(self.conninfo)

    @property
    def host(self) -> str:
        return str(self.params.get("host") or "localhost")

    @property
    def port(self) -> int:
        return int(self.params.get("port") or 5432)

    @property
    def user(self) -> str:
        return str(self.params.get("user") or "postgres")

    @property
    def password(self) -> str | None:
        password = self.params.get("password")
        return str(password) if password is not None else None

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Superuser DSN for ``dbname``."""
        return make_conninfo(self.conninfo, dbname=dbname)

    def dsn(self, dbname: str, user: str, password: str | None = None) -> str:
        """DSN for ``user`` (trust, or ``password``) on ``dbname``."""
        return make_conninfo(self.conninfo, dbname=dbname, user=user, password=password)

    def janitor(
        self, dbname: str, *, template: str | None = None, as_template: bool = False
    ) -> DatabaseJanitor:
        """pytest-postgresql's janitor for creating / dropping ``dbname`` here."""
        # Imported here: the entry point loads this plugin wherever eventlive-rpc is
        # installed, also without the [test] extra that brings pytest-postgresql.
        from pytest_postgresql.janitor import DatabaseJanitor  # noqa: PLC0415

        return DatabaseJanitor(
            user=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            dbname=dbname,
            template_dbname=template,
            as_template=as_template,
            connection_timeout=10,
        )


@dataclass(frozen=True)
class EventliveDatabase:
    """A per-test clone of the migrated template."""

    name: str
    admin_dsn: str  # superuser
    dsn: str  # as authenticator: RLS applies
    clone_seconds: float
    migrator_dsn: str = ""  # the role migrations ran as (Supabase shape: postgres)


@dataclass(frozen=True)
class SupabaseProject:
    """A fresh Supabase-shaped database, not migrated (``supabase_project``)."""

    name: str
    admin_dsn: str  # supabase_admin, the superuser
    migrator_dsn: str  # postgres, not a superuser: run migrations as this
    dsn: str  # authenticator

    def older(self) -> None:
        """Plant what an older project's ``postgres`` still holds (``shim.supabase.build``);
        the fixture takes the cluster-wide part back after the test."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            grant_older_privileges(conn)


def _shape() -> str:
    shape = os.environ.get(SHAPE_ENV, PLAIN) or PLAIN
    if shape not in (PLAIN, SUPABASE):
        raise pytest.UsageError(f"{SHAPE_ENV}={shape!r}: expected {PLAIN!r} or {SUPABASE!r}")
    return shape


def _start_supabase_server() -> tuple[TemporaryServer, EventliveServer, float]:
    started = time.perf_counter()
    server = TemporaryServer(superuser=SUPABASE_SUPERUSER).start()
    with psycopg.connect(server.admin_dsn(), autocommit=True) as conn:
        build_roles(conn)
    described = EventliveServer(
        server.admin_dsn(), throwaway=True, run_id=secrets.token_hex(4), shape=SUPABASE
    )
    return server, described, time.perf_counter() - started


def _timings(config: pytest.Config) -> Timings:
    return config.stash.setdefault(_timings_key, Timings())


POSTGRES_MARKER = "postgres"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker that tags tests needing the eventlive server."""
    config.addinivalue_line(
        "markers",
        f"{POSTGRES_MARKER}: uses the eventlive PostgreSQL fixtures (added automatically); "
        f"`-m {POSTGRES_MARKER}` runs only those, e.g. again on another PostgreSQL version",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag every test that reaches ``eventlive_server`` (directly or through a fixture)."""
    for item in items:
        if "eventlive_server" in getattr(item, "fixturenames", ()):
            item.add_marker(POSTGRES_MARKER)


def pytest_report_header(config: pytest.Config) -> str:
    """Which PostgreSQL the eventlive fixtures will use."""
    shape = _shape()
    external = os.environ.get(DSN_ENV)
    if shape == SUPABASE:
        return "eventlive: throwaway Supabase-shaped PostgreSQL, migrated as postgres"
    if external:
        try:
            with psycopg.connect(external, connect_timeout=5) as conn:
                version = conn.info.parameter_status("server_version") or "?"
            params = conninfo_to_dict(external)
            where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
            return f"eventlive: PostgreSQL {version} at {where} ({DSN_ENV})"
        except psycopg.Error as exc:
            return f"eventlive: {DSN_ENV} server unreachable: {exc}"
    try:
        bins = find_binaries()
        return (
            f"eventlive: throwaway PostgreSQL {bins.version} ({bins.source}: {bins.bindir}),"
            " started on first use"
        )
    except Exception as exc:  # noqa: BLE001 - a header must not break the run
        return f"eventlive: no PostgreSQL binaries: {exc}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print server start, template and per-test clone times."""
    t = config.stash.get(_timings_key, None)
    if t is None or (t.server_seconds is None and t.template_seconds is None and not t.clones):
        return
    parts = []
    if t.server_seconds is not None:
        parts.append(f"server start {t.server_seconds:.2f}s")
    if t.template_seconds is not None:
        parts.append(f"template migrated in {t.template_seconds:.2f}s")
    if t.clones:
        mean_ms = 1000 * sum(t.clones) / len(t.clones)
        parts.append(
            f"{len(t.clones)} clones, mean {mean_ms:.0f} ms, max {1000 * max(t.clones):.0f} ms"
        )
    terminalreporter.write_line("eventlive: " + "; ".join(parts))


@pytest.fixture(scope="session")
def eventlive_server(request: pytest.FixtureRequest) -> Iterator[EventliveServer]:
    """The PostgreSQL server for this session: ``EVENTLIVE_TEST_DSN`` or a throwaway one."""
    run_id = secrets.token_hex(4)
    external = os.environ.get(DSN_ENV)
    if _shape() == SUPABASE:
        if external:
            raise pytest.UsageError(
                f"{SHAPE_ENV}=supabase starts its own server (superuser supabase_admin): "
                f"unset {DSN_ENV}"
            )
        server, described, seconds = _start_supabase_server()
        _timings(request.config).server_seconds = seconds
        try:
            yield described
        finally:
            server.stop()
        return
    if external:
        yield EventliveServer(external, throwaway=False, run_id=run_id)
        return
    started = time.perf_counter()
    with TemporaryServer() as server:
        _timings(request.config).server_seconds = time.perf_counter() - started
        yield EventliveServer(server.admin_dsn(), throwaway=True, run_id=run_id)


def _migrate(dsn: str) -> None:
    from shim.migrate import migrate  # noqa: PLC0415 - import only when a test needs the schema

    migrate(dsn)


def _build_supabase_database(server: EventliveServer, name: str) -> None:
    with psycopg.connect(server.admin_dsn(name), autocommit=True) as conn:
        build_database(conn)
    server.prepare(name)


@pytest.fixture(scope="session")
def eventlive_template(
    request: pytest.FixtureRequest, eventlive_server: EventliveServer
) -> Iterator[str]:
    """Name of the migrated template database, built once per session."""
    name = f"eventlive_tmpl_{eventlive_server.run_id}"
    janitor = eventlive_server.janitor(name, as_template=True)
    started = time.perf_counter()
    janitor.init()
    try:
        # Roles are cluster-wide: two runs migrating their templates at once on a fresh
        # server could both try to create them. Advisory locks are per database, so take
        # one in the maintenance database, which every run shares.
        with psycopg.connect(eventlive_server.admin_dsn(), autocommit=True) as lock_conn:
            lock_conn.execute("select pg_advisory_lock(%s)", (_TEMPLATE_LOCK,))
            if eventlive_server.shape == SUPABASE:
                _build_supabase_database(eventlive_server, name)
            _migrate(eventlive_server.migrator_dsn(name))
        _timings(request.config).template_seconds = time.perf_counter() - started
        yield name
    finally:
        janitor.drop()


_counter = iter(range(1, 1 << 62))


@pytest.fixture
def empty_database(eventlive_server: EventliveServer) -> Iterator[str]:
    """Superuser DSN of a new, empty database (from template1), dropped after the test."""
    name = f"eventlive_empty_{eventlive_server.run_id}_{next(_counter)}"
    with eventlive_server.janitor(name):
        yield eventlive_server.admin_dsn(name)


@pytest.fixture
def eventlive_db(
    request: pytest.FixtureRequest, eventlive_server: EventliveServer, eventlive_template: str
) -> Iterator[EventliveDatabase]:
    """A fresh clone of the migrated template for this test, dropped afterwards."""
    name = f"eventlive_test_{eventlive_server.run_id}_{next(_counter)}"
    janitor = eventlive_server.janitor(name, template=eventlive_template)
    started = time.perf_counter()
    janitor.init()
    eventlive_server.prepare(name)
    elapsed = time.perf_counter() - started
    _timings(request.config).clones.append(elapsed)
    try:
        yield EventliveDatabase(
            name=name,
            admin_dsn=eventlive_server.admin_dsn(name),
            dsn=eventlive_server.dsn(
                name, AUTHENTICATOR, os.environ.get(AUTHENTICATOR_PASSWORD_ENV)
            ),
            clone_seconds=elapsed,
            migrator_dsn=eventlive_server.migrator_dsn(name),
        )
    finally:
        janitor.drop()


@pytest.fixture
def admin_conn(eventlive_db: EventliveDatabase) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """Superuser connection to the test's clone, autocommit (bypasses RLS: set up data here)."""
    with psycopg.connect(eventlive_db.admin_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def db(eventlive_db: EventliveDatabase) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """Connection to the test's clone as ``authenticator`` (RLS applies), autocommit off.

    ``authenticator`` itself may do almost nothing: wrap calls in ``act_as`` /
    ``as_anon`` / ``as_service_role`` to switch role as the shim does.
    """
    with psycopg.connect(eventlive_db.dsn) as conn:
        yield conn


@pytest.fixture(scope="session")
def eventlive_pgbouncer(eventlive_server: EventliveServer) -> Iterator[Any]:
    """PgBouncer (transaction mode) in front of the session's server (module doc)."""
    from shim.testing.pgbouncer import in_front_of  # noqa: PLC0415

    yield from in_front_of(eventlive_server, os.environ.get(AUTHENTICATOR_PASSWORD_ENV))


@pytest.fixture(scope="session")
def supabase_server(
    request: pytest.FixtureRequest, eventlive_server: EventliveServer
) -> Iterator[EventliveServer]:
    """A Supabase-shaped server: the session's own when its shape is Supabase, else a
    second throwaway server (roles are cluster-wide: the shapes cannot share one)."""
    if eventlive_server.shape == SUPABASE:
        yield eventlive_server
        return
    server, described, _seconds = _start_supabase_server()
    try:
        yield described
    finally:
        server.stop()


@pytest.fixture(scope="session")
def supabase_template(supabase_server: EventliveServer) -> Iterator[str]:
    """Name of a template database with Supabase's shape and nothing of eventlive's."""
    name = f"supabase_tmpl_{supabase_server.run_id}"
    janitor = supabase_server.janitor(name, as_template=True)
    janitor.init()
    try:
        _build_supabase_database(supabase_server, name)
        yield name
    finally:
        janitor.drop()


@pytest.fixture
def supabase_project(
    supabase_server: EventliveServer, supabase_template: str
) -> Iterator[SupabaseProject]:
    """A fresh Supabase-shaped database (not migrated), dropped afterwards."""
    name = f"supabase_project_{supabase_server.run_id}_{next(_counter)}"
    with supabase_server.janitor(name, template=supabase_template):
        supabase_server.prepare(name)
        try:
            yield SupabaseProject(
                name=name,
                admin_dsn=supabase_server.admin_dsn(name),
                migrator_dsn=supabase_server.migrator_dsn(name),
                dsn=supabase_server.dsn(name, AUTHENTICATOR),
            )
        finally:
            with psycopg.connect(supabase_server.admin_dsn(), autocommit=True) as conn:
                revoke_older_privileges(conn)
