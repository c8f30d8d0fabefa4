"""The bench's world: a throwaway PostgreSQL (shim.pg.embedded), migrated; the bench's
webinars, viewers and tokens; the shim and the old design as separate uvicorn processes.

Viewer ``i`` is user ``<i as 32 hex digits>`` with session ``00000010<i as 24 hex
digits>`` (the scheme of the SQL side's ``bench/pgbench_*.sql``, which the ceiling
reuses); disjoint ranges serve the scenarios (see
``Ranges``). Viewers that a scenario needs already entered are inserted set-based (the
rows ``track_access`` would leave: registration, session, presence seen an hour ago),
in chunks; the join storm's viewers start unregistered. The steady state's 600,000 took
93 s with the machine's two cores busy with other work (~150 µs a viewer, half of it the
registrations insert with its counter trigger); each report states its run's seeding time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psycopg

from shim.migrate import migrate
from shim.pg.ports import free_port
from shim.pg.throwaway import TemporaryServer
from shim.testing.process import ShimProcess

REPO = Path(__file__).resolve().parent.parent
DBNAME = "eventlive"
SECRET = "bench-hs256-secret-0123456789abcdef0123456789"  # noqa: S105 - throwaway bench key
OLD_SCHEMA = Path(__file__).resolve().parent / "old_design" / "schema.sql"

W_CEIL = 900001  # heartbeat 15 s (shortest allowed): pings of a 40k pool all write
W_STORM = 900002
W_STEADY = 900003
W_STORM_BIG = 900004  # the larger storm (its viewers enter W_STORM first-time too)
# the workers scenario's storms, one webinar per worker count (the same viewers, first-time)
W_STORM_WORKERS = {1: 900005, 2: 900006, 4: 900007}
# tenant isolation: the calm webinar Q (heartbeat 15 s: its pings write) and the stormed S
W_ISO_Q = 900008
W_ISO_S = 900009


BENCH_SQL = """
create schema if not exists bench;
-- the id scheme of bench/pgbench_*.sql (the SQL side's scripts, reused for the ceiling)
create or replace function bench.uid(i bigint) returns uuid language sql immutable
as $$ select lpad(to_hex(i), 32, '0')::uuid $$;
create or replace function bench.sid(i bigint) returns uuid language sql immutable
as $$ select ('00000010' || lpad(to_hex(i), 24, '0'))::uuid $$;
grant usage on schema bench to authenticated, authenticator;
grant execute on all functions in schema bench to authenticated, authenticator;
-- The strict ceiling's login role (bench/pgbench_presence_ping_strict.sql): its one
-- statement is parsed and started as the login role, before its set_config('role', ...)
-- runs, and PostgreSQL checks USAGE on schema api and EXECUTE on the function then.
-- authenticator is NOINHERIT (it has its members' rights only after a role switch), so
-- this role is a member of authenticated that inherits: exactly authenticated's rights,
-- and the statement's own switch to authenticated is allowed. Bench-only: the product's
-- roles and grants are left as they are.
create role bench_caller login inherit;
grant authenticated to bench_caller;
"""


def uid(i: int) -> str:
    return str(uuid.UUID(int=i))


def sid(i: int) -> str:
    return str(uuid.UUID(int=(0x10 << 96) | i))


@dataclass(frozen=True)
class Ranges:
    """Viewer index ranges per scenario: [start, start + size). ``iso_q``: webinar Q's
    pre-entered viewers, ``iso_s``: the never-registered viewers of S's storm (tenant
    isolation)."""

    ceiling: int
    storm: int
    steady: int
    admins: int = 100
    iso_q: int = 0
    iso_s: int = 0
    ceiling_start: int = 1
    storm_start: int = 1_000_001
    steady_start: int = 2_000_001
    admins_start: int = 3_000_001
    iso_q_start: int = 4_000_001
    iso_s_start: int = 5_000_001

    def __post_init__(self) -> None:
        bounds = sorted([
            (self.ceiling_start, self.ceiling), (self.storm_start, self.storm),
            (self.steady_start, self.steady), (self.admins_start, self.admins),
            (self.iso_q_start, self.iso_q), (self.iso_s_start, self.iso_s),
        ])  # fmt: skip
        for (lo, n), (nxt, _m) in itertools.pairwise(bounds):
            if lo + n > nxt:
                raise ValueError(f"viewer range at {lo} ({n:,}) overlaps the one at {nxt}")


def mint(i: int, exp: int, iat: int) -> str:
    claims = {
        "sub": uid(i),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": iat,
        "exp": exp,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def mint_many(lo: int, n: int, exp: int, iat: int) -> Iterator[str]:
    """``mint(i, exp, iat)`` for i in lo..lo+n-1, byte for byte (tests/bench/test_env.py),
    at ~7 µs a token instead of PyJWT's ~38: the header is encoded once, the payload
    written directly, the key's HMAC state copied. 600,000 steady-state viewers take
    seconds, not half a minute."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    key = hmac.new(SECRET.encode(), digestmod=hashlib.sha256)
    for i in range(lo, lo + n):
        payload = (
            f'{{"sub":"{uid(i)}","role":"authenticated","aud":"authenticated",'
            f'"iat":{iat},"exp":{exp}}}'
        )
        signed = head + b"." + _b64(payload.encode())
        mac = key.copy()
        mac.update(signed)
        yield (signed + b"." + _b64(mac.digest())).decode()


_TICK = os.sysconf("SC_CLK_TCK")


Snapshot = dict[int, tuple[str, int, int, int]]


def cpu_snapshot() -> tuple[float, Snapshot]:
    """(when, pid -> (comm, process group, parent, CPU ticks of it + its reaped children))."""
    out: Snapshot = {}
    now = time.monotonic()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        f = raw[raw.rindex(")") + 2 :].split()
        # f[0] = field 3 (state): ppid 4, pgrp 5, utime 14, stime 15, cutime 16, cstime 17
        ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        out[int(entry.name)] = (comm, int(f[2]), int(f[1]), ticks)
    return now, out


def cpu_split(
    before: tuple[float, Snapshot],
    after: tuple[float, Snapshot],
    groups: dict[int, str],
    postmaster: int | None,
) -> dict[str, float]:
    """Cores used per component between two snapshots. A process counts with its reaped
    children, so backends that came and went between the snapshots are in their
    postmaster's figure. Ours: the servers by process group (``groups``: pgid -> name),
    PostgreSQL = our postmaster and its children; this process is left out (its waited
    children, the load generators, are measured by getrusage); the rest is ``other``."""
    elapsed = after[0] - before[0]
    if elapsed <= 0:
        return {}
    me = os.getpid()

    def totals(snap: Snapshot) -> dict[str, int]:
        acc: dict[str, int] = {}
        for pid, (_comm, pgrp, ppid, ticks) in snap.items():
            if pid == me:
                continue
            if postmaster is not None and postmaster in (pid, ppid):
                name = "postgres"
            elif pgrp in groups:
                name = groups[pgrp]
            elif ppid == me:  # a load generator still running (the whole-run figure
                name = "load generator"  # takes the reaped ones from getrusage instead)
            else:
                name = "other (not the bench's)"
            acc[name] = acc.get(name, 0) + ticks
        return acc

    t0, t1 = totals(before[1]), totals(after[1])
    return {k: round(max(0, t1.get(k, 0) - t0.get(k, 0)) / _TICK / elapsed, 2) for k in sorted(t1)}


# A second of the machine counts as saturated when less than this share of it idled.
SATURATED_IDLE = 0.10


def machine_idle() -> tuple[int, int]:
    """(idle + iowait ticks, all ticks) of the whole machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


class CpuMeter:
    """Cores used per component while the block runs: the servers we started and
    PostgreSQL from /proc, the load generator (wrk, pgbench or bench.loadgen: our waited
    children) from getrusage, everything else as ``other (not the bench's)``.

    An average over a run hides its busy seconds (a storm saturates the cores for its 10 s,
    then the run drains and idles), so a thread also samples the machine every second:
    ``saturation`` says how many of the run's seconds left under ``SATURATED_IDLE`` of it
    idle, and the cores per component in those seconds (the live generator included)."""

    def __init__(self, groups: dict[int, str], postmaster: int | None) -> None:
        self.groups = groups
        self.postmaster = postmaster
        self.split: dict[str, float] = {}
        self.saturation: dict[str, Any] = {}
        self._samples: list[tuple[tuple[float, Snapshot], tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CpuMeter:
        self._before = cpu_snapshot()
        self._children = _children_cpu()
        self._t = time.monotonic()
        self._samples.append((self._before, machine_idle()))
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self._samples.append((cpu_snapshot(), machine_idle()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        after = cpu_snapshot()
        self._samples.append((after, machine_idle()))
        split = cpu_split(self._before, after, self.groups, self.postmaster)
        elapsed = time.monotonic() - self._t
        if elapsed > 0:
            split["load generator"] = round((_children_cpu() - self._children) / elapsed, 2)
        self.split = split
        self.saturation = self._saturated(elapsed)

    def _saturated(self, elapsed: float) -> dict[str, Any]:
        """Seconds under SATURATED_IDLE idle, and the cores per component in them."""
        seconds = 0.0
        weighted: dict[str, float] = {}
        for (snap0, (idle0, all0)), (snap1, (idle1, all1)) in itertools.pairwise(self._samples):
            if all1 <= all0 or (idle1 - idle0) / (all1 - all0) >= SATURATED_IDLE:
                continue
            span = snap1[0] - snap0[0]
            seconds += span
            for name, used in cpu_split(snap0, snap1, self.groups, self.postmaster).items():
                weighted[name] = weighted.get(name, 0.0) + used * span
        split = {k: round(v / seconds, 2) for k, v in weighted.items()} if seconds else {}
        return {"seconds": round(seconds, 1), "window_s": round(elapsed, 1), "cores": split}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)

    def pids(self) -> list[int]:
        """The process and its children (uvicorn workers)."""
        out = subprocess.run(
            ["pgrep", "-g", str(self.popen.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


@dataclass
class World:
    out: Path
    ranges: Ranges
    workers: int
    pool_max: int
    server: TemporaryServer = field(default_factory=TemporaryServer)
    procs: dict[str, Proc] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    # process group -> component, for processes started outside ``procs`` (PgBouncer)
    cpu_groups: dict[int, str] = field(default_factory=dict)

    # -- database ---------------------------------------------------------------------------
    def admin_dsn(self) -> str:
        return self.server.admin_dsn(DBNAME)

    def auth_dsn(self) -> str:
        return self.server.dsn(DBNAME, "authenticator")

    def caller_dsn(self) -> str:
        """The strict ceiling's login role (``bench_caller``: authenticated's rights)."""
        return self.server.dsn(DBNAME, "bench_caller")

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def start_db(self) -> None:
        t = time.perf_counter()
        self.server.start()
        with psycopg.connect(self.server.admin_dsn(), autocommit=True) as conn:
            conn.execute(f"create database {DBNAME}")
        migrate(self.admin_dsn())
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(BENCH_SQL)
            conn.execute(OLD_SCHEMA.read_text())
            try:
                conn.execute("create extension if not exists pg_stat_statements")
                self.facts["pg_stat_statements"] = True
            except psycopg.Error:
                self.facts["pg_stat_statements"] = False
            row = conn.execute("show server_version").fetchone()
        self.facts["pg_version"] = str(row[0]) if row else "?"
        self.facts["pg_bindir"] = str(self.server.server.bins.bindir)
        self.facts["db_start_s"] = round(time.perf_counter() - t, 2)

    def seed(self) -> None:
        """Webinars, users, pre-entered viewers (product and legacy), staff, token files."""
        t = time.perf_counter()
        r = self.ranges
        service = json.dumps({"role": "service_role"})
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            for lo, n in (
                (r.ceiling_start, r.ceiling),
                (r.storm_start, r.storm),
                (r.steady_start, r.steady),
                (r.admins_start, r.admins),
                (r.iso_q_start, r.iso_q),
                (r.iso_s_start, r.iso_s),
            ):
                conn.execute(
                    "insert into auth.users (id) select bench.uid(i) "
                    "from generate_series(%s::bigint, %s::bigint) i",
                    (lo, lo + n - 1),
                )
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'service_role', true), "
                    "set_config('request.jwt.claims', %s, true)",
                    (service,),
                )
                for webinar, title, heartbeat in (
                    (W_CEIL, "bench ceiling (heartbeat 15 s)", 15),
                    (W_STORM, "bench join storm", 120),
                    (W_STEADY, "bench steady state", 120),
                    (W_STORM_BIG, "bench big join storm", 120),
                    (W_ISO_Q, "bench tenant isolation: the calm webinar Q", 15),
                    (W_ISO_S, "bench tenant isolation: the stormed webinar S", 120),
                    *(
                        (w, f"bench join storm, {n} worker(s)", 120)
                        for n, w in W_STORM_WORKERS.items()
                    ),
                ):
                    conn.execute(
                        "select api.upsert_webinar(webinar_id => %s, title => %s, "
                        "heartbeat_seconds => %s)",
                        (webinar, title, heartbeat),
                    )
                for i in range(r.admins_start, r.admins_start + r.admins):
                    conn.execute(
                        "select api.set_staff(webinar_id => %s, user_id => %s)", (W_STEADY, uid(i))
                    )
            for webinar, lo, n in (
                (W_CEIL, r.ceiling_start, r.ceiling),
                (W_STEADY, r.steady_start, r.steady),
                (W_ISO_Q, r.iso_q_start, r.iso_q),
            ):
                self._pre_enter(conn, webinar, lo, n)
            for webinar in (W_CEIL, W_STORM):
                conn.execute(
                    "insert into legacy.webinars (id, title) values (%s, 'bench')", (webinar,)
                )
            lo, hi = r.ceiling_start, r.ceiling_start + r.ceiling - 1
            conn.execute(
                "insert into legacy.registrations (webinar_id, user_id) "
                "select %s, bench.uid(i) from generate_series(%s::bigint, %s::bigint) i",
                (W_CEIL, lo, hi),
            )
            conn.execute(
                "insert into legacy.sessions (id, webinar_id, user_id, last_seen_at) "
                "select bench.sid(i), %s, bench.uid(i), now() - interval '1 hour' "
                "from generate_series(%s::bigint, %s::bigint) i",
                (W_CEIL, lo, hi),
            )
            conn.execute(
                "insert into legacy.presence (webinar_id, user_id, session_id, last_seen_at) "
                "select %s, bench.uid(i), bench.sid(i), now() - interval '1 hour' "
                "from generate_series(%s::bigint, %s::bigint) i",
                (W_CEIL, lo, hi),
            )
            conn.execute("vacuum analyze")
        self.facts["seed_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        now = int(time.time())
        self.facts["token_iat"], self.facts["token_exp"] = now, now + 86400
        for name, lo, n in (
            ("ceiling", r.ceiling_start, r.ceiling),
            ("storm", r.storm_start, r.storm),
            ("steady", r.steady_start, r.steady),
            ("admins", r.admins_start, r.admins),
            ("iso_q", r.iso_q_start, r.iso_q),
            ("iso_s", r.iso_s_start, r.iso_s),
        ):
            path = self.out / "work" / f"viewers-{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as fh:
                for i, token in enumerate(mint_many(lo, n, now + 86400, now), start=lo):
                    fh.write(f"{token} {sid(i)}\n")
            self.files[name] = path
        self.facts["tokens_s"] = round(time.perf_counter() - t, 2)
        self.facts["viewers"] = {
            "ceiling": r.ceiling, "storm": r.storm, "steady": r.steady, "admins": r.admins,
            "isolation Q": r.iso_q, "isolation S": r.iso_s,
        }  # fmt: skip
        self.facts["tokens"] = sum(self.facts["viewers"].values())

    @staticmethod
    def _pre_enter(conn: psycopg.Connection[Any], webinar: int, lo: int, n: int) -> None:
        """Registration, session and presence rows for viewers lo..lo+n-1, in chunks: one
        statement for 300,000 rows would make the registration trigger update the same
        counter rows 300,000 times in one transaction (ever longer version chains)."""
        chunk = 5_000
        for start in range(lo, lo + n, chunk):
            hi = min(start + chunk, lo + n) - 1
            with conn.transaction():
                conn.execute(
                    "insert into eventlive.registrations "
                    "(webinar_id, user_id, source, registered_at, first_entered_at) "
                    "select %s, bench.uid(i), 'auto', now() - interval '1 hour', "
                    "now() - interval '1 hour' from generate_series(%s::bigint, %s::bigint) i",
                    (webinar, start, hi),
                )
                conn.execute(
                    "insert into eventlive.viewer_sessions "
                    "(session_id, webinar_id, user_id, started_at) "
                    "select bench.sid(i), %s, bench.uid(i), now() - interval '1 hour' "
                    "from generate_series(%s::bigint, %s::bigint) i",
                    (webinar, start, hi),
                )
                conn.execute(
                    "insert into eventlive.presence "
                    "(webinar_id, user_id, session_id, started_at, last_seen_at) "
                    "select %s, bench.uid(i), bench.sid(i), now() - interval '1 hour', "
                    "now() - interval '1 hour' from generate_series(%s::bigint, %s::bigint) i",
                    (webinar, start, hi),
                )

    def present_again(self, webinar: int, lo: int, n: int) -> None:
        """Viewers lo..lo+n-1 present as if they had kept pinging: the seeded rows say
        "seen an hour ago" and the shim's housekeeping expires sessions not seen within
        the presence window, so before each measured run their seeded session is active
        again and their presence was last seen one ping throttle (plus a second) ago --
        the next ping writes, as a real heartbeat does, and the window has time left."""
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn, conn.transaction():
            conn.execute(
                "update eventlive.viewer_sessions as vs set ended_at = null, end_reason = null "
                "from generate_series(%s::bigint, %s::bigint) as i "
                "where vs.session_id = bench.sid(i) and vs.end_reason = 'expired'",
                (lo, lo + n - 1),
            )
            conn.execute(
                "insert into eventlive.presence as p "
                "(webinar_id, user_id, session_id, started_at, last_seen_at) "
                "select w.id, bench.uid(i), bench.sid(i), now() - interval '1 hour', "
                "now() - eventlive.ping_throttle(w.heartbeat_seconds) - interval '1 second' "
                "from eventlive.webinars as w, generate_series(%s::bigint, %s::bigint) as i "
                "where w.id = %s "
                "on conflict (webinar_id, user_id) do update set last_seen_at = excluded.last_seen_at "
                "where p.session_id = excluded.session_id",
                (lo, lo + n - 1, webinar),
            )

    def statement_calls(self, like: str | None = None) -> int:
        """Sum of pg_stat_statements calls (optionally of queries matching ``like``)."""
        if not self.facts.get("pg_stat_statements"):
            return -1
        where = "where query ilike %s" if like else "where query not ilike '%%pg_stat_statements%%'"
        params = (like,) if like else ()
        rows = self.sql(f"select coalesce(sum(calls), 0) from pg_stat_statements {where}", params)  # noqa: S608 - where is one of two constants
        return int(rows[0][0])

    def reset_statements(self) -> None:
        if self.facts.get("pg_stat_statements"):
            self.sql("select pg_stat_statements_reset()")

    # -- processes -----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], health: str) -> Proc:
        port = int(argv[argv.index("--port") + 1])
        log = self.out / "work" / f"{name}.log"
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        with log.open("wb") as fh:
            popen = subprocess.Popen(
                argv, env=full_env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, port, log)
        self.procs[name] = proc
        deadline = time.monotonic() + 60
        delay = 0.05
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited ({popen.returncode}); see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2) as resp:
                    if resp.status == 200:
                        return proc
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy after 60 s; see {log}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def cpu(self) -> CpuMeter:
        """``with world.cpu() as meter:`` -> ``meter.split`` (cores per component)."""
        groups = {p.popen.pid: p.name for p in self.procs.values()}
        return CpuMeter({**groups, **self.cpu_groups}, self.postmaster())

    def postmaster(self) -> int | None:
        """PID of our server's postmaster (first line of postmaster.pid)."""
        try:
            return int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def settle(self, timeout: float = 15.0) -> float:
        """Wait (bounded) until the database has no active request of the servers and the
        shim answers /health at once: one scenario's backlog must not land in the next.
        The ceiling's pool of viewers is made present again first (``present_again``),
        and the vacuum debt of the scenarios before is paid (``pay_vacuum_debt``).
        Returns the seconds waited."""
        t0 = time.monotonic()
        self.present_again(W_CEIL, self.ranges.ceiling_start, self.ranges.ceiling)
        self.pay_vacuum_debt()
        calm = 0
        while time.monotonic() - t0 < timeout and calm < 3:
            busy = self.sql(
                "select count(*) from pg_stat_activity "
                "where usename = 'authenticator' and state = 'active' and pid <> pg_backend_pid()"
            )[0][0]
            fast = True
            shim = self.procs.get("shim")
            if shim is not None:
                t = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{shim.port}/health", timeout=2):
                        pass
                except OSError:
                    fast = False
                fast = fast and time.monotonic() - t < 0.02
            calm = calm + 1 if busy == 0 and fast else 0
            time.sleep(0.1)
        return round(time.monotonic() - t0, 2)

    def pay_vacuum_debt(self) -> None:
        """VACUUM (ANALYZE) the database: the dead rows and stale statistics the scenarios
        before left (the ceiling alone writes about a million heartbeats) are not left to
        autovacuum, which in a full run vacuumed presence, viewer_sessions and access_log
        in the middle of the storms and the isolation run. What a scenario's own writes
        make autovacuum do still happens during it."""
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute("vacuum (analyze)")

    def uvicorn_argv(self, app: str, port: int, workers: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", app, "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    def start_shim(self, env: dict[str, str] | None = None) -> Proc:
        """``eventlive serve`` as shipped (``ShimProcess``'s command line): access log on,
        metrics, token cache, coalescing and pool as their defaults; only the database
        and the HS256 secret are given (``env`` may change them: the pooler scenario)."""
        env = {"DATABASE_URL": self.auth_dsn(), "JWT_SECRET": SECRET, **(env or {})}
        argv = ShimProcess(env, workers=self.workers, port=free_port()).argv()
        return self._spawn("shim", argv, env, "/ready")

    def restart_shim(self, workers: int, env: dict[str, str] | None = None) -> Proc:
        """The shim again with ``workers`` processes (the workers scenario) and ``env``
        (the pooler scenario); the other scenarios' count is ``self.workers``."""
        if "shim" in self.procs:
            self.procs.pop("shim").stop()
        kept, self.workers = self.workers, workers
        try:
            return self.start_shim(env)
        finally:
            self.workers = kept

    def viewers_file(self, name: str, count: int, skip: int = 0) -> Path:
        """``count`` lines of token file ``name`` after its first ``skip`` (a smaller
        storm; a second storm of viewers the first did not have)."""
        src = self.files[name]
        path = src.with_name(f"{src.stem}-{skip}-{count}.txt")
        with src.open() as fh, path.open("w") as out:
            out.writelines(itertools.islice(fh, skip, skip + count))
        return path

    def _shim_metrics(self) -> str:
        """The shim's ``/metrics`` text; empty when it does not answer."""
        shim = self.procs.get("shim")
        if shim is None:
            return ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{shim.port}/metrics", timeout=5) as r:
                text: str = r.read().decode()
                return text
        except OSError:
            return ""

    def shim_counter(self, family: str) -> dict[str, float]:
        """One counter family of the shim's ``/metrics`` (a node's, all workers summed),
        label set -> value: e.g. ``eventlive_token_cache`` -> ``{'result="hit"': 12.0,
        ...}``; empty when the shim does not answer."""
        text = self._shim_metrics()
        out: dict[str, float] = {}
        prefix = f"{family}_total{{"
        for line in text.splitlines():
            if line.startswith(prefix):
                labels, _, value = line[len(prefix) :].partition("} ")
                out[labels] = out.get(labels, 0.0) + float(value)
        return out

    def shim_buckets(self, family: str) -> dict[float, float]:
        """One histogram family's cumulative buckets from the shim's ``/metrics`` (a
        node's, all workers summed), upper bound -> count (``+Inf`` as ``math.inf``);
        empty when the shim does not answer."""
        text = self._shim_metrics()
        out: dict[float, float] = {}
        prefix = f'{family}_bucket{{le="'
        for line in text.splitlines():
            if line.startswith(prefix):
                bound, _, value = line[len(prefix) :].partition('"} ')
                key = math.inf if bound == "+Inf" else float(bound)
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def stop_old(self) -> None:
        """Stop the old design (its backlog must not run into the next scenario)."""
        for name in ("old-proxy", "old-app"):
            if name in self.procs:
                self.procs.pop(name).stop()

    def start_old(self, auth_delay_ms: float) -> Proc:
        """The old design: its API app and the proxy hop in front (both ``workers``)."""
        self.stop_old()
        env = {
            "OLD_DATABASE_URL": self.auth_dsn(),
            "JWT_SECRET": SECRET,
            "OLD_AUTH_DELAY_MS": str(auth_delay_ms),
            "OLD_POOL_MAX": str(self.pool_max),
        }
        app = self._spawn(
            "old-app",
            self.uvicorn_argv("bench.old_design.app:create_app", free_port(), self.workers),
            env,
            "/health",
        )
        return self._spawn(
            "old-proxy",
            self.uvicorn_argv("bench.old_design.proxy:create_app", free_port(), self.workers),
            {"OLD_UPSTREAM": f"http://127.0.0.1:{app.port}"},
            "/health",
        )

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()
        self.server.stop()

    def clean(self, *, keep_logs: bool) -> None:
        """Remove work/ (token files, specs), or all but the process logs."""
        work = self.out / "work"
        if not keep_logs:
            shutil.rmtree(work, ignore_errors=True)
            return
        for path in work.glob("*"):
            if path.suffix != ".log":
                path.unlink(missing_ok=True)
