"""PostgreSQL's CPU per new entry in an entry batch: this tree's functions against an
earlier revision's, side by side on one server.

Two databases, both migrated from this tree; the ``--before`` revision's copies of
``--files`` (the function files that changed) are then applied to the first, so the two
differ in exactly those files. Each holds a webinar of 100,000 entered viewers (the
planner's statistics see a real table, as on a live project) and an empty one that the
rounds fill: every round sends ``--entries`` new viewers, in batches of 50 (``--batch``
for smaller ones), as the shim sends them (``eventlive.track_access_batch`` as
``eventlive_batcher``, one transaction per batch), to each database in turn. Per round
and database it prints the backend's CPU per entry (utime + stime from /proc, the server
on this machine) and the wall time per entry; then the means and after / before. Rounds alternate, so a machine that gets busier
or the webinar that grows affects both alike.

Usage::

    .venv/bin/python -m bench.entry_cost [--before REV] [--files functions/a.sql,...]
        [--rounds 5] [--entries 5000] [--batch 50] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Without ``--dsn`` it starts a throwaway server of its own (``shim.pg.throwaway``). Linux
only (/proc); the server must run on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.env import uid
from shim.migrate import migrate
from shim.pg.throwaway import TemporaryServer

REPO = Path(__file__).resolve().parent.parent
_BATCH = (
    "select pg_catalog.string_agg(e.key || ' ' || coalesce('ok ' || (e.value -> 'ok')::text,"
    " e.value::text), E'\\n') from pg_catalog.jsonb_each(eventlive.track_access_batch("
    "%s::bigint[], %s::uuid[], %s::uuid[], %s::jsonb[])) as e"
)
_AS_BATCHER = (
    "select set_config('role', 'eventlive_batcher', true), "
    "set_config('request.jwt.claims', '{\"role\": \"eventlive_batcher\"}', true)"
)
_AS_SERVICE = (
    "select set_config('role', 'service_role', true), "
    "set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)"
)
FILLED, FILLED_VIEWERS, TARGET = 8, 100_000, 7
BATCH = 50


def _prepare(dsn_of: Any, name: str, before: str | None, files: list[str], users: int) -> Any:
    with psycopg.connect(dsn_of("postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{name}"')
    migrate(dsn_of(name))
    conn = psycopg.connect(dsn_of(name), autocommit=True)
    for path in files if before else []:
        text = subprocess.run(
            ["git", "show", f"{before}:{path}"], cwd=REPO, capture_output=True, text=True,
            check=True,
        ).stdout  # fmt: skip
        conn.execute(text)
    conn.execute(
        "insert into auth.users (id) select lpad(to_hex(i), 32, '0')::uuid "
        "from generate_series(1, %s) as i",
        (users,),
    )
    with conn.transaction():
        conn.execute(_AS_SERVICE)
        for webinar in (TARGET, FILLED):
            conn.execute(
                "select api.upsert_webinar(webinar_id => %s, title => 'entry cost', "
                "heartbeat_seconds => 120)",
                (webinar,),
            )
    lo = users - FILLED_VIEWERS + 1
    conn.execute(
        "insert into eventlive.registrations (webinar_id, user_id, source, registered_at, "
        "first_entered_at) select %s, lpad(to_hex(i), 32, '0')::uuid, 'auto', now(), now() "
        "from generate_series(%s, %s) as i",
        (FILLED, lo, users),
    )
    conn.execute(
        "insert into eventlive.viewer_sessions (session_id, webinar_id, user_id, started_at) "
        "select gen_random_uuid(), webinar_id, user_id, now() from eventlive.registrations"
    )
    conn.execute(
        "insert into eventlive.presence (webinar_id, user_id, session_id, started_at, "
        "last_seen_at) select webinar_id, user_id, session_id, now(), now() "
        "from eventlive.viewer_sessions"
    )
    conn.execute("vacuum analyze")
    return conn


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(conn: Any, first: int, entries: int, batch: int = BATCH) -> tuple[float, float]:
    """(backend CPU ms, wall ms) per entry for ``entries`` new viewers from ``first``, in
    batches of ``batch``."""
    row = conn.execute("select pg_backend_pid()").fetchone()
    pid = int(row[0])
    cpu0, wall0 = _cpu(pid), time.perf_counter()
    for start in range(first, first + entries, batch):
        ids = [uid(i) for i in range(start, min(start + batch, first + entries))]
        with conn.transaction():
            conn.execute(_AS_BATCHER)
            conn.execute(_BATCH, ([TARGET] * len(ids), ids, [None] * len(ids), [None] * len(ids)))
    return (_cpu(pid) - cpu0) / entries * 1e3, (time.perf_counter() - wall0) / entries * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before",
        default="2b2cb72~1",
        help="the revision to compare with (default: the tree before the entry-cost change)",
    )
    parser.add_argument(
        "--files",
        default="functions/05_viewer_lock.sql,functions/32_coalesced.sql",
        help="comma-separated files of --before applied to the first database",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--entries", type=int, default=5_000, help="new viewers per round")
    parser.add_argument("--batch", type=int, default=BATCH, help="entries per batch (at most 50)")
    parser.add_argument("--dsn", help="an existing server's superuser URL (else a throwaway)")
    args = parser.parse_args()
    files = [f for f in args.files.split(",") if f]
    users = args.rounds * args.entries + FILLED_VIEWERS
    server = None if args.dsn else TemporaryServer().start()
    try:
        base = args.dsn.rsplit("/", 1)[0] if args.dsn else ""

        def dsn_of(name: str) -> str:
            return server.admin_dsn(name) if server is not None else f"{base}/{name}"

        before = _prepare(dsn_of, "entry_cost_before", args.before, files, users)
        after = _prepare(dsn_of, "entry_cost_after", None, files, users)
        figures: dict[str, list[float]] = {"before": [], "after": []}
        first = 1
        for n in range(1, args.rounds + 1):
            for name, conn in (("before", before), ("after", after)):
                cpu, wall = _round(conn, first, args.entries, args.batch)
                figures[name].append(cpu)
                print(f"round {n} {name:6}: backend CPU {cpu:.3f} ms/entry, wall {wall:.3f} ms")
            first += args.entries
        mean = {k: statistics.fmean(v) for k, v in figures.items()}
        print(
            f"mean backend CPU per entry: before ({args.before}) {mean['before']:.3f} ms, "
            f"after (this tree) {mean['after']:.3f} ms, after / before "
            f"{mean['after'] / mean['before']:.2f}"
        )
        before.close()
        after.close()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
