"""Server CPU per hot-path call, measured on the backend process itself, so that other
load on a shared machine does not enter the figure: the shim's own exchange
(``shim.http.exchange.run``: settings + call in one pipeline, one round trip) on one
connection logged in as ``authenticator``, N calls, and the backend's utime + stime
(``/proc/<pid>/stat``) before and after, divided by N.

Compares, on the data of ``bench/hot_path_sql.py`` (viewers present in webinar 1, their
last heartbeat an hour ago, so that every first ping writes):

- ``presence_ping`` with the call sent unnamed (parsed and planned every time) vs
  prepared per connection after the role switch (``prepare_call``);
- ``track_access`` re-confirmations, unnamed vs prepared;
- with ``--old-ping FILE`` (e.g. ``git show 414ed54:functions/31_presence.sql``), the
  earlier ``api.presence_ping`` (registration check inside its update), loaded as
  ``bench.presence_ping_old``, against today's;
- the coalesced entry ``eventlive.presence_ping_batch`` with batches of 1, 10, 50:
  server CPU per ping.

Usage (system PostgreSQL, trust auth; must run on the database's host)::

    .venv/bin/python bench/hot_path_cpu.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--db hotcpu_bench] [--viewers 20000] [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hot_path_sql import WEBINAR, load_sql  # noqa: E402
from shim.http import exchange  # noqa: E402
from shim.migrate import migrate  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PING = b"select api.presence_ping(webinar_id => $1::bigint, session_id => $2::uuid)"
TRACK = b"select api.track_access(webinar_id => $1::bigint, session_id => $2::uuid)"
BATCH = b"select eventlive.presence_ping_batch($1::bigint[], $2::uuid[], $3::uuid[])"


def uid(i: int) -> str:
    return f"{i:032x}"[:8] + "-" + f"{i:032x}"[8:12] + "-" + f"{i:032x}"[12:16] + "-" + f"{i:032x}"[16:20] + "-" + f"{i:032x}"[20:]  # fmt: skip


def sid(i: int) -> str:
    h = "00000010" + f"{i:024x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def measure(
    pool: AsyncConnectionPool[Any],
    label: str,
    calls: list[tuple[list[bytes | None], bytes, list[bytes | None]]],
    per_call: int,
    prepare_call: bool,
) -> float:
    async with pool.connection() as conn:
        pid = conn.info.backend_pid
    before = cpu_seconds(pid)
    t0 = time.perf_counter()
    for settings, statement, values in calls:
        await exchange.run(
            pool, settings, statement, values, read_only=False, pool_timeout=5, db_timeout=10,
            prepare=True, prepare_call=prepare_call,
        )  # fmt: skip
    wall = time.perf_counter() - t0
    used = cpu_seconds(pid) - before
    n = len(calls) * per_call
    print(f"{label:48} {used / n * 1e6:7.1f} us server CPU per call ({n} calls, {wall:.1f} s)")
    return used / n


OLD_PING = b"select bench.presence_ping_old(webinar_id => $1::bigint, session_id => $2::uuid)"


def old_ping_sql(path: Path) -> str:
    """The earlier api.presence_ping from ``path``, renamed bench.presence_ping_old."""
    source = path.read_text()
    start = source.index("create or replace function api.presence_ping(")
    end = source.index("comment on function api.presence_ping(")
    body = source[start:end].replace("api.presence_ping(", "bench.presence_ping_old(")
    body = body.replace("presence_ping.", "presence_ping_old.")
    return (
        "create schema if not exists bench; grant usage on schema bench to authenticated;\n"
        f"{body}\ngrant execute on function bench.presence_ping_old(bigint, uuid) to authenticated;"
    )


async def run(dsn: str, viewers: int, n: int, old: bool) -> None:
    auth_dsn = make_conninfo(dsn, user="authenticator")
    async with AsyncConnectionPool(
        auth_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as pool:

        def settings(i: int) -> list[bytes | None]:
            claims = json.dumps({"role": "authenticated", "sub": uid(i)})
            return [b"authenticated", claims.encode(), b"5s"]

        def pings(lo: int) -> list[tuple[list[bytes | None], bytes, list[bytes | None]]]:
            return [
                (settings(i), PING, [str(WEBINAR).encode(), sid(i).encode()])
                for i in range(lo, lo + n)
            ]

        await measure(pool, "presence_ping, call unnamed (before)", pings(1), 1, False)
        await measure(pool, "presence_ping, call prepared per role (after)", pings(n + 1), 1, True)
        if old:
            olds = [(s, OLD_PING, v) for s, _, v in pings(5 * n + 1)]
            await measure(
                pool, "earlier presence_ping (registration check), prepared", olds, 1, True
            )
        tracks = [
            (settings(i), TRACK, [str(WEBINAR).encode(), sid(i).encode()])
            for i in range(1, 1 + n // 3)
        ]
        await measure(pool, "track_access re-confirm, unnamed (before)", tracks, 1, False)
        await measure(pool, "track_access re-confirm, prepared (after)", tracks, 1, True)
        batcher = [b"eventlive_batcher", b'{"role":"eventlive_batcher"}', b"5s"]
        lo = 2 * n + 1
        for size in (1, 10, 50):
            calls = []
            for start in range(lo, lo + n, size):
                ids = range(start, min(start + size, lo + n))
                calls.append((batcher, BATCH, [
                    ("{" + ",".join(str(WEBINAR) for _ in ids) + "}").encode(),
                    ("{" + ",".join(uid(i) for i in ids) + "}").encode(),
                    ("{" + ",".join(sid(i) for i in ids) + "}").encode(),
                ]))  # fmt: skip
            await measure(
                pool, f"presence_ping_batch, batches of {size} (per ping)", calls, size, True
            )
            lo += n


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db", default="hotcpu_bench")
    parser.add_argument("--viewers", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--old-ping", type=Path, help="an earlier 31_presence.sql to compare")
    args = parser.parse_args()
    assert args.viewers >= 6 * args.calls, "every ping must hit a viewer not pinged yet"
    dsn = make_conninfo(args.dsn, dbname=args.db)
    drop = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(args.db))
    with psycopg.connect(args.dsn, autocommit=True) as server:
        server.execute(drop)
        server.execute(sql.SQL("create database {}").format(sql.Identifier(args.db)))
    try:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(load_sql(args.viewers))
            if args.old_ping:
                admin.execute(old_ping_sql(args.old_ping))
            admin.execute("vacuum (analyze)")
        print(f"{args.viewers} present viewers; host {conninfo_to_dict(dsn).get('host')}")
        asyncio.run(run(dsn, args.viewers, args.calls, bool(args.old_ping)))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as server:
            server.execute(drop)


if __name__ == "__main__":
    main()
