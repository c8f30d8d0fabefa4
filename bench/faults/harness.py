"""The drill's world: a migrated throwaway database with a fault schema, ways to freeze
it, and the shim as a process."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from shim.migrate import migrate
from shim.pg.throwaway import TemporaryServer
from shim.testing.process import ShimProcess

REPO = Path(__file__).resolve().parents[2]
DBNAME = "eventlive"
SECRET = "faults-hs256-secret-0123456789abcdef0123456789"  # noqa: S105 - throwaway key
CLIENT_TIMEOUT = 30.0  # a hang shows up as an attempt of kind "timeout", never as a stuck run

# A schema the shim exposes besides api (EVENTLIVE_SCHEMAS=api,faults): a call that holds
# its pool connection for as long as it is told to.
FAULTS_SQL = """
create schema if not exists faults;
grant usage on schema faults to authenticated;
create or replace function faults.slow(seconds float) returns int language sql volatile
as $$ select 1 from pg_sleep(seconds) $$;
grant execute on function faults.slow(float) to authenticated;
"""


# -- the database -------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A migrated database: ``admin_dsn`` (superuser), ``dsn`` (``authenticator``)."""

    admin_dsn: str
    dsn: str

    @classmethod
    def create(cls, server: TemporaryServer) -> Database:
        """Create, migrate and prepare the ``eventlive`` database on ``server``."""
        with psycopg.connect(server.admin_dsn(), autocommit=True) as conn:
            conn.execute(f"create database {DBNAME}")
        admin = server.admin_dsn(DBNAME)
        migrate(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(FAULTS_SQL)
        return cls(admin, make_conninfo(admin, user="authenticator"))

    def webinar(self, webinar_id: int, viewers: int) -> list[str]:
        """An open webinar with ``entry = auto`` and ``viewers`` new users (their ids)."""
        ids = [str(uuid.UUID(int=(webinar_id << 64) | i)) for i in range(viewers)]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute("select api.upsert_webinar(%s, %s)", (webinar_id, f"Fault {webinar_id}"))
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into auth.users (id) values (%s) on conflict do nothing",
                    [(i,) for i in ids],
                )
        return ids

    def registrations(self, webinar_id: int) -> Counter[str]:
        """Stored registrations of the webinar: user id -> rows (1 each, by the key)."""
        with psycopg.connect(self.admin_dsn) as conn:
            rows = conn.execute(
                "select user_id::text, count(*) from eventlive.registrations"
                " where webinar_id = %s group by 1",
                (webinar_id,),
            ).fetchall()
        return Counter({user: int(n) for user, n in rows})


def postmaster_pid(server: TemporaryServer) -> int:
    """The postmaster's pid (first line of ``postmaster.pid``)."""
    return int((server.data_dir / "postmaster.pid").read_text().split()[0])


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def frozen(server: TemporaryServer) -> Iterator[int]:
    """SIGSTOP the postmaster, then every process it forked (backends, checkpointer,
    WAL writer...), SIGCONT them all on the way out, whatever happens. Yields how many
    processes were stopped.

    Not ``killpg``: every PostgreSQL child calls ``setsid()`` at birth, so the postmaster's
    process group is the postmaster alone. Stopped first, it cannot fork a child we miss.
    """
    pid = postmaster_pid(server)
    stopped = [pid]
    try:
        os.kill(pid, signal.SIGSTOP)
        for child in _children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                stopped.append(child)
        yield len(stopped)
    finally:
        for p in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


# -- the shim -----------------------------------------------------------------------------


class Shim(ShimProcess):
    """The shim for a drill: the fault schema exposed, the access log off (the drill counts
    answers itself), on a fixed port so that a restart comes back where clients look."""

    def __init__(self, dsn: str, *, workers: int = 1, **env: str) -> None:
        super().__init__(
            {
                "DATABASE_URL": dsn,
                "JWT_SECRET": SECRET,
                "EVENTLIVE_SCHEMAS": "api,faults",
                "EVENTLIVE_ACCESS_LOG": "0",
                **env,
            },
            workers=workers,
            cwd=REPO,
        )

    def start(self, timeout: float = 30.0, ready_path: str = "/ready") -> float:
        return super().start(timeout, ready_path)
