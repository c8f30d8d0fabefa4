"""The migration lock: one session-level advisory lock per database.

Two migrate runs against one database never both apply: each takes
``pg_try_advisory_lock(LOCK_KEY)`` first. Why this shape:

- Session level, taken on an autocommit connection: the holder keeps no transaction
  open, so its own ``create index concurrently`` (which waits for every transaction that
  might see the table) does not wait on it.
- Behind a transaction-mode pooler (PgBouncer ``pool_mode = transaction``, Supavisor
  on port 6543) the lock would be taken on whichever server connection ran that one
  statement and held there for nobody, the next statements running elsewhere: ``acquire``
  checks for one first (``transaction_pooled``) and refuses at once (``PoolerError``,
  exit 2) rather than lock nothing or wait on a lock it holds itself.
- The waiter polls ``pg_try_advisory_lock`` in autocommit instead of blocking in
  ``pg_advisory_lock``: a blocked statement holds a snapshot, which a concurrent index
  build in the holder would wait for -- a deadlock. Each poll is an instant transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from shim.migrate.errors import LockTimeoutError, PoolerError

# 'evntlive' in ASCII, as one bigint; shown in pg_locks as classid/objid halves.
LOCK_KEY = int.from_bytes(b"evntlive", "big")
POLL_SECONDS = 0.1
PROBE_CONNECT_SECONDS = 10

POOLED = (
    "the connection goes through a transaction-mode pooler (PgBouncer pool_mode = "
    "transaction, Supavisor on port 6543): the migration lock is a session-level advisory "
    "lock, which such a pooler cannot hold for one session. Nothing was applied. Connect "
    "directly or through a session-mode pooler (on Supabase: port 5432, the direct "
    "connection or the session pooler) and run it again."
)

_HOLDER = """
select a.pid, coalesce(nullif(a.application_name, ''), '?'), a.usename,
       coalesce(host(a.client_addr), 'local'), a.backend_start
from pg_catalog.pg_locks l
join pg_catalog.pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted and l.database = (
          select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
  and l.classid = %(hi)s and l.objid = %(lo)s and l.objsubid = 1
"""


def _backend(conn: psycopg.Connection[TupleRow]) -> int:
    row = conn.execute("select pg_catalog.pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def transaction_pooled(conn: psycopg.Connection[TupleRow]) -> bool:
    """True when ``conn`` reaches PostgreSQL through a transaction-mode pooler.

    A second connection with the same parameters opens a transaction and asks for its
    backend: a server session belongs to one client connection unless a pooler lends it
    per transaction, so the second seeing ``conn``'s backend (the one just released), or
    ``conn`` seeing another one afterwards, proves it (``shim.http.database`` probes the
    same way at the shim's start)."""
    params = {
        opt.keyword.decode(): opt.val.decode()
        for opt in conn.pgconn.info
        if opt.val is not None and opt.keyword.decode() not in ("replication",)
    }  # with the password, which ``conn.info.dsn`` leaves out
    params.setdefault("connect_timeout", str(PROBE_CONNECT_SECONDS))
    first = _backend(conn)
    with psycopg.connect(make_conninfo(**params), autocommit=True, prepare_threshold=None) as other:
        other.execute("begin")
        if _backend(other) == first:
            return True
        pooled = any(_backend(conn) != first for _ in range(3))
        other.execute("rollback")
    return pooled


def try_acquire(conn: psycopg.Connection[TupleRow]) -> bool:
    """One attempt; True when this session now holds the lock."""
    row = conn.execute("select pg_catalog.pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def holder(conn: psycopg.Connection[TupleRow]) -> str | None:
    """Who holds the lock, for messages; None when nobody (or not visible)."""
    row = conn.execute(_HOLDER, {"hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}).fetchone()
    if row is None:
        return None
    pid, app, user, addr, since = row
    return f"pid {pid} ({app}, user {user}, from {addr}, connected {since:%Y-%m-%d %H:%M:%S %Z})"


def acquire(
    conn: psycopg.Connection[TupleRow],
    timeout: float,
    progress: Callable[[str], None],
) -> float:
    """Take the lock, polling for up to ``timeout`` seconds; returns the seconds waited.

    ``conn`` must be in autocommit mode (see the module docstring). Raises
    ``PoolerError`` at once behind a transaction-mode pooler, ``LockTimeoutError`` naming
    the holder when the lock stays taken.
    """
    if not conn.autocommit:
        raise ValueError("the migration lock must be taken on an autocommit connection")
    if transaction_pooled(conn):
        raise PoolerError(POOLED)
    started = time.monotonic()
    if try_acquire(conn):
        return 0.0
    who = holder(conn) or "another session"
    progress(f"waiting up to {timeout:g} s for the migration lock, held by {who}")
    deadline = started + timeout
    while time.monotonic() < deadline:
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if try_acquire(conn):
            return time.monotonic() - started
    who = holder(conn) or who
    raise LockTimeoutError(
        f"another migration is running: the migration lock (advisory lock {LOCK_KEY}) "
        f"is held by {who}; gave up after {timeout:g} s (--lock-timeout). Nothing was applied."
    )


def release(conn: psycopg.Connection[TupleRow]) -> None:
    """Release the lock if the connection is still usable (closing it releases it too)."""
    if conn.closed or conn.broken:
        return
    conn.execute("select pg_catalog.pg_advisory_unlock(%s)", (LOCK_KEY,))
