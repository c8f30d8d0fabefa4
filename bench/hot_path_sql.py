"""pgbench measurements of the SQL hot path: presence_ping and track_access.

Each call is sent exactly as the shim sends it -- one transaction in one pipeline
(one round trip): ``begin; set local role authenticated; select set_config(
'request.jwt.claims', ..., true); select api.<fn>(...); commit`` -- by pgbench logged
in as ``authenticator``, with ``-M extended`` (statements are parsed in order, after the
role switch; ``-M prepared`` would parse the call as ``authenticator`` and fail:
privileges are checked at parse time, as the role of that moment). Scripts: ``bench/pgbench_*.sql``.

For every run it prints calls/s, mean latency, the HOT-update ratio of
``eventlive.presence`` (n_tup_hot_upd / n_tup_upd), rows written, and WAL bytes per call
(``pg_current_wal_lsn()`` difference / calls, with the full-page images counted by
``pg_stat_wal``; a CHECKPOINT precedes each run so every run pays them alike). WAL is
cluster-wide: other activity on a shared server adds to it, so run it when quiet.

It also measures access_stats (which counts the present viewers on every call, once per
cache interval through the shim) against that count alone, the once-a-minute sample, and
a write-path alternative (one counter row per webinar-minute bumped by every heartbeat).

Usage (system PostgreSQL, trust auth)::

    .venv/bin/python bench/hot_path_sql.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--db sqlh_bench] [--viewers 100000] [--seconds 10] [--clients 8] [--jobs 2]

It creates (and at the end drops, unless ``--keep``) the scratch database ``--db``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shim.migrate import migrate  # noqa: E402 - after the path is set

WEBINAR = 1
STAFF = "00000000-0000-0000-0000-0000000f4240"


def load_sql(viewers: int) -> str:
    """Viewers 1..N registered and present in WEBINAR (seen an hour ago, so that their
    next heartbeat writes); N+1..2N exist but are registered nowhere (join runs);
    999 other webinars with 20 viewers each; two hours of minute samples."""
    return f"""
set session_replication_role = replica;  -- bulk load: no triggers, no FK checks
insert into eventlive.webinars (id, title) select g, 'Webinar ' || g from generate_series(1, 1000) as g;
insert into auth.users (id) select lpad(to_hex(g), 32, '0')::uuid from generate_series(1, {2 * viewers} + 20000) as g;
insert into auth.users (id) values ('{STAFF}');
insert into eventlive.webinar_staff (webinar_id, user_id) values ({WEBINAR}, '{STAFF}');
create temporary table viewers as
select g, lpad(to_hex(g), 32, '0')::uuid as user_id,
       ('00000010' || lpad(to_hex(g), 24, '0'))::uuid as session_id,
       case when g <= {viewers} then {WEBINAR} else 2 + g % 999 end as webinar_id
from generate_series(1, {viewers}) as g
union all
select g, lpad(to_hex(g), 32, '0')::uuid, ('00000010' || lpad(to_hex(g), 24, '0'))::uuid, 2 + g % 999
from generate_series({2 * viewers} + 1, {2 * viewers} + 20000) as g;
insert into eventlive.registrations (webinar_id, user_id, source, first_entered_at)
select webinar_id, user_id, 'auto', now() - interval '1 hour' from viewers;
insert into eventlive.viewer_sessions (session_id, webinar_id, user_id, started_at)
select session_id, webinar_id, user_id, now() - interval '1 hour' from viewers;
insert into eventlive.presence (webinar_id, user_id, session_id, started_at, last_seen_at)
select webinar_id, user_id, session_id, now() - interval '1 hour', now() - interval '1 hour' from viewers;
insert into eventlive.profiles (user_id, display_name) select user_id, 'Viewer ' || g from viewers;
insert into eventlive.webinar_counters (webinar_id, shard, registrations, unique_viewers)
select webinar_id, (hashtext(user_id::text) & 7), count(*), count(*) from viewers group by 1, 2;
insert into eventlive.presence_minutes (webinar_id, minute, viewers)
select w, date_trunc('minute', now()) - m * interval '1 minute', case when w = {WEBINAR} then {viewers} else 20 end
from generate_series(1, 1000) as w cross join generate_series(1, 120) as m;
reset session_replication_role;
"""  # noqa: S608 - integers and constants only


def variant_sql() -> str:
    """Copies of presence_ping in schema bench, for the comparisons:
    - presence_ping_durable: without synchronous_commit = off;
    - presence_ping_counted: plus a per-minute counter row bumped on every heartbeat
      (the write-path counter alternative)."""
    source = (ROOT / "functions" / "31_presence.sql").read_text()
    start = source.index("create or replace function api.presence_ping(")
    end = source.index("comment on function api.presence_ping(")
    ping = source[start:end]
    durable = ping.replace("api.presence_ping(", "bench.presence_ping_durable(")
    durable = durable.replace("presence_ping.", "presence_ping_durable.").replace(
        "perform pg_catalog.set_config('synchronous_commit', 'off', true);", ""
    )
    counted = ping.replace("api.presence_ping(", "bench.presence_ping_counted(")
    # the logic is eventlive.ping_core; the counted copy bumps its counter before it
    counted = counted.replace("presence_ping.", "presence_ping_counted.").replace(
        "    v_reason := eventlive.ping_core(",
        """    insert into bench.minute_hits as h (webinar_id, minute, hits)
    values (presence_ping_counted.webinar_id, pg_catalog.date_trunc('minute', eventlive.now()), 1)
    on conflict on constraint minute_hits_pkey do update set hits = h.hits + 1;
    v_reason := eventlive.ping_core(""",
        1,
    )
    assert "bench.minute_hits" in counted, "31_presence.sql changed: update the variant"
    return f"""
create schema bench;
grant usage on schema bench to authenticated;
create table bench.minute_hits (
    webinar_id bigint, minute timestamptz, hits bigint, primary key (webinar_id, minute)
);
{durable}
{counted}
grant execute on function bench.presence_ping_durable(bigint, uuid) to authenticated;
grant execute on function bench.presence_ping_counted(bigint, uuid) to authenticated;
"""


RECORD = re.compile(r"len \(rec/tot\):\s*(\d+)/\s*(\d+), tx:\s*(\d+)")
BLOCK_REF = re.compile(r"rel \d+/(\d+)/\d+")


def waldump_split(admin: psycopg.Connection[Any], start: int, end: int) -> tuple[int, int] | None:
    """(record bytes, full-page-image bytes) that this database wrote between two LSNs.

    pg_waldump lists every record; a record is ours when it touches a block of this
    database, and a commit record when its transaction wrote one of those. So other
    databases on a shared server (tests cloning templates, ...) do not count. None when
    the WAL directory or pg_waldump is not reachable from here.
    """
    row = admin.execute(
        "select current_setting('data_directory'), current_setting('server_version_num')::int / 10000,"
        " (select oid from pg_database where datname = current_database())::text"
    ).fetchone()
    assert row is not None
    waldump = Path(f"/usr/lib/postgresql/{row[1]}/bin/pg_waldump")
    wal_dir = Path(row[0]) / "pg_wal"
    if not waldump.exists() or not wal_dir.is_dir():
        return None
    lsn = lambda v: f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"  # noqa: E731
    out = subprocess.run(
        [str(waldump), "-p", str(wal_dir), "-s", lsn(start), "-e", lsn(end)],
        capture_output=True,
        text=True,
        check=False,
    )
    if not out.stdout:
        print(f"pg_waldump: {out.stderr.strip()}", file=sys.stderr)
        return None
    ours: set[str] = set()
    records = images = 0
    for line in out.stdout.splitlines():
        match = RECORD.search(line)
        if match is None:
            continue
        rec, tot, tx = match.groups()
        mine = row[2] in BLOCK_REF.findall(line)
        if mine and tx != "0":
            ours.add(tx)
        elif not mine and not (tx in ours and line.startswith("rmgr: Transaction")):
            continue
        records += int(rec)
        images += int(tot) - int(rec)
    return records, images


@dataclass
class Result:
    name: str
    calls: int
    tps: float
    latency_ms: float
    upd: int
    hot: int
    ins: int
    wal_bytes: int
    wal_fpi: int
    wal_split: tuple[int, int] | None


def table_stats(conn: psycopg.Connection[Any]) -> dict[str, int]:
    # our own pending counts (e.g. age_presence's update) go out now, not in a later run
    conn.execute("select pg_stat_force_next_flush()")
    # a durable commit flushes all WAL before it, so pg_waldump can read up to the flush LSN
    conn.execute("select txid_current()")
    conn.execute("select 1")
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        """
        select
            (select n_tup_upd from pg_stat_user_tables where relid = 'eventlive.presence'::regclass),
            (select n_tup_hot_upd from pg_stat_user_tables where relid = 'eventlive.presence'::regclass),
            (select sum(n_tup_ins + n_tup_upd + n_tup_del) from pg_stat_user_tables
             where schemaname in ('eventlive', 'bench')),
            pg_current_wal_flush_lsn() - '0/0'::pg_lsn,
            (select wal_fpi from pg_stat_wal)
        """
    ).fetchone()
    assert row is not None
    return dict(
        zip(["upd", "hot", "writes", "lsn", "fpi"], (int(v or 0) for v in row), strict=True)
    )


def run_pgbench(
    args: argparse.Namespace, script: str, viewers: int, name: str, admin: psycopg.Connection[Any]
) -> Result:
    params = conninfo_to_dict(args.dsn)
    admin.execute("checkpoint")
    time.sleep(0.5)
    before = table_stats(admin)
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "extended",
            "-h",
            str(params.get("host", "127.0.0.1")),
            "-p",
            str(params.get("port", 5432)),
            "-U",
            "authenticator",
            "-c",
            str(args.clients),
            "-j",
            str(args.jobs),
            "-T",
            str(args.seconds),
            "-D",
            f"viewers={viewers}",
            "-D",
            f"webinar={WEBINAR}",
            "-f",
            str(ROOT / "bench" / script),
            args.db,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or "actually processed" not in out.stdout:
        raise SystemExit(f"pgbench failed for {script}:\n{out.stdout}\n{out.stderr}")
    time.sleep(1.0)  # backends flush their table statistics when they exit
    after = table_stats(admin)
    calls = int(re.search(r"actually processed: (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if failed and int(failed.group(1)):
        raise SystemExit(f"{script}: {failed.group(1)} failed transactions\n{out.stdout}")
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", out.stdout).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))  # type: ignore[union-attr]
    return Result(
        name,
        calls,
        tps,
        latency,
        after["upd"] - before["upd"],
        after["hot"] - before["hot"],
        after["writes"] - before["writes"],
        after["lsn"] - before["lsn"],
        after["fpi"] - before["fpi"],
        waldump_split(admin, before["lsn"], after["lsn"]),
    )


def age_presence(admin: psycopg.Connection[Any]) -> None:
    """Make every heartbeat of the next run a real write (outside the throttle)."""
    admin.execute("update eventlive.presence set last_seen_at = last_seen_at - interval '1 hour'")
    admin.execute("vacuum (analyze) eventlive.presence")


def timed(
    conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...], n: int, setup: str = ""
) -> float:
    """Median server round trip of ``query`` in ms (as staff, rolled back)."""
    durations = []
    for _ in range(n):
        with conn.transaction(force_rollback=True):
            conn.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                (json.dumps({"role": "authenticated", "sub": STAFF}),),
            )
            if setup:
                conn.execute(setup)
            started = time.perf_counter()
            conn.execute(query, params).fetchall()
            durations.append(time.perf_counter() - started)
    return 1000 * statistics.median(durations)


# (label, script, viewers to draw from (None: --viewers), heartbeats aged first, extra DDL)
RUNS: list[tuple[str, str, int | None, bool, str | None]] = [
    ("presence_ping (heartbeat writes)", "pgbench_presence_ping.sql", None, True, None),
    ("  same, synchronous_commit on", "pgbench_presence_ping_durable.sql", None, True, None),
    ("presence_ping (throttled: no write)", "pgbench_presence_ping.sql", 2_000, False, None),
    (
        "  with an index on last_seen_at",
        "pgbench_presence_ping.sql",
        None,
        True,
        "create index presence_last_seen_bench on eventlive.presence (webinar_id, last_seen_at)",
    ),
    ("track_access (re-confirm)", "pgbench_track_access.sql", None, True, None),
    ("track_access (new viewer joins)", "pgbench_track_access_join.sql", None, False, None),
    (
        "presence_ping + per-minute counter row",
        "pgbench_presence_ping_counted.sql",
        None,
        True,
        None,
    ),
]


def hot_path_runs(args: argparse.Namespace, admin: psycopg.Connection[Any]) -> list[Result]:
    results = []
    for label, script, viewers, aged, ddl in RUNS:
        if aged:
            age_presence(admin)
        if ddl:
            admin.execute(ddl)
        results.append(run_pgbench(args, script, viewers or args.viewers, label, admin))
        if ddl:
            admin.execute("drop index if exists eventlive.presence_last_seen_bench")
    return results


def print_results(results: list[Result]) -> None:
    print("WAL B/call: this database's WAL per call (pg_waldump: records + full-page images;")
    print("images are paid once per page after the checkpoint that starts each run, so they")
    print("shrink in longer runs). Cluster-wide LSN difference per call in the last column.\n")
    print(
        f"{'run':38} {'calls/s':>8} {'ms/call':>8} {'calls':>7} {'rows written':>12}"
        f" {'HOT %':>6} {'WAL B/call':>10} {'records':>8} {'images':>8} {'cluster':>8}"
    )
    for r in results:
        hot = f"{100 * r.hot / r.upd:.0f}" if r.upd else "-"
        total, rec, img = (
            (
                f"{sum(r.wal_split) / r.calls:.0f}",
                f"{r.wal_split[0] / r.calls:.0f}",
                f"{r.wal_split[1] / r.calls:.0f}",
            )
            if r.wal_split
            else ("?", "?", "?")
        )
        print(
            f"{r.name:38} {r.tps:8.0f} {r.latency_ms:8.2f} {r.calls:7d} {r.ins:12d}"
            f" {hot:>6} {total:>10} {rec:>8} {img:>8} {r.wal_bytes / r.calls:8.0f}"
        )


def access_stats_choice(dsn: str, viewers: int) -> None:
    """access_stats (the count now with the minute samples and counters), the count alone,
    and the once-a-minute sample."""
    with psycopg.connect(dsn) as conn:
        minutes = timed(conn, "select api.access_stats(%s)", (WEBINAR,), 50)
        live = timed(
            conn,
            "select count(*) from eventlive.presence where webinar_id = %s"
            " and last_seen_at > now() - interval '180 seconds'",
            (WEBINAR,),
            20,
            setup="reset role",
        )
        sample = timed(
            conn,
            "select eventlive.record_presence_minute(%s, now())",
            (WEBINAR,),
            10,
            setup="reset role; update eventlive.webinars set sampled_minute = null where id = 1",
        )
    print(f"\naccess_stats with {viewers} viewers (median ms, client round trip included):")
    print(f"  api.access_stats (counts present viewers)   {minutes:8.2f}")
    print(f"  counting present viewers alone              {live:8.2f}")
    print(f"  the once-a-minute record_presence_minute     {sample:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db", default="sqlh_bench")
    parser.add_argument("--viewers", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    dsn = make_conninfo(args.dsn, dbname=args.db)
    drop = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(args.db))
    with psycopg.connect(args.dsn, autocommit=True) as server:
        server.execute(drop)
        server.execute(sql.SQL("create database {}").format(sql.Identifier(args.db)))
    try:
        started = time.perf_counter()
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(load_sql(args.viewers))
            admin.execute(variant_sql())
            admin.execute("vacuum (analyze)")
            print(
                f"loaded {args.viewers} present viewers in webinar {WEBINAR} (+20,000 in 999"
                f" others) in {time.perf_counter() - started:.1f} s; {args.clients} clients,"
                f" {args.seconds} s per run\n"
            )
            print_results(hot_path_runs(args, admin))
        access_stats_choice(dsn, args.viewers)
    finally:
        if not args.keep:
            with psycopg.connect(args.dsn, autocommit=True) as server:
                server.execute(drop)


if __name__ == "__main__":
    main()
