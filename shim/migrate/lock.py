"""The migration lock: one session-level advisory lock per database.

Two migrate runs against one database never both apply: each takes
``pg_try_advisory_lock(LOCK_KEY)`` first. Why this shape:

- Session level, taken on an autocommit connection: the holder keeps no transaction
  open, so its own ``create index concurrently`` (which waits for every transaction that
  might see the table) does not wait on it.
- The waiter polls ``pg_try_advisory_lock`` in autocommit instead of blocking in
  ``pg_advisory_lock``: a blocked statement holds a snapshot, which a concurrent index
  build in the holder would wait for -- a deadlock. Each poll is an instant transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg.rows import TupleRow

from shim.migrate.errors import LockTimeoutError

# 'evntlive' in ASCII, as one bigint; shown in pg_locks as classid/objid halves.
LOCK_KEY = int.from_bytes(b"evntlive", "big")
POLL_SECONDS = 0.1

_HOLDER = """
select a.pid, coalesce(nullif(a.application_name, ''), '?'), a.usename,
       coalesce(host(a.client_addr), 'local'), a.backend_start
from pg_catalog.pg_locks l
join pg_catalog.pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted and l.database = (
          select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
  and l.classid = %(hi)s and l.objid = %(lo)s and l.objsubid = 1
"""


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
    ``LockTimeoutError`` naming the holder when the lock stays taken.
    """
    if not conn.autocommit:
        raise ValueError("the migration lock must be taken on an autocommit connection")
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
