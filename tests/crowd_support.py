"""Helpers of the admin-count tests (issue #19, point 4; tests/http/test_admin_count.py and
tests/realtime/test_admin_count_pushed.py): a webinar in its first minute with its hosts
and a thousand viewers, their entries over HTTP all at once, the age of an access_stats
answer, and the access_stats calls that reached the database (pg_stat_statements).

Not a test module."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from typing import Any

import psycopg
from shim_support import SECRET, bearer, token

from shim.testing import as_service_role

VIEWERS = 1000
# How long the shim keeps a shared access_stats answer: its comment's @cache 5.
CACHE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Crowd:
    """A webinar (live, entry registers automatically), its hosts and its viewers' tokens."""

    webinar_id: int
    hosts: list[str]
    viewer_tokens: list[str]

    def host_auth(self, i: int = 0) -> dict[str, str]:
        return bearer(token({"sub": self.hosts[i]}, key=SECRET))


def make_crowd(admin_dsn: str, webinar_id: int, *, hosts: int = 3) -> Crowd:
    """The webinar, ``hosts`` hosts and ``VIEWERS`` users who have not entered yet
    (committed); pg_stat_statements made readable in this database."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_stat_statements")
        ids = [
            str(row[0])
            for row in conn.execute(
                "insert into auth.users (id)"
                " select gen_random_uuid() from generate_series(1, %s) returning id",
                (hosts + VIEWERS,),
            )
        ]
        with as_service_role(conn, commit=True):
            conn.execute(
                "select api.upsert_webinar(%s, 'Count now', 'live', 'auto')", (webinar_id,)
            )
            for host in ids[:hosts]:
                conn.execute("select api.set_staff(%s, %s, 'host')", (webinar_id, host))
    return Crowd(webinar_id, ids[:hosts], [token({"sub": v}, key=SECRET) for v in ids[hosts:]])


async def enter_all(base: str, crowd: Crowd, connections: int = 32) -> tuple[float, float]:
    """Every viewer enters once, all at once (``POST /rpc/track_access``, a distinct token
    each) over ``connections`` kept-alive HTTP/1.1 connections: (first sent, last
    answered), monotonic. Raw HTTP: a Python HTTP client's own CPU would be most of the
    storm's on two shared cores."""
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"webinar_id": crowd.webinar_id}).encode()
    head = b"POST /rpc/track_access HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\n"
    tail = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    tokens = iter(crowd.viewer_tokens)  # shared: each token is taken by one connection

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for tok in tokens:
                writer.write(head + b"Authorization: Bearer " + tok.encode() + b"\r\n" + tail)
                status, headers = _head(await reader.readuntil(b"\r\n\r\n"))
                answer = await reader.readexactly(int(headers[b"content-length"]))
                assert status == 200, answer
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return started, time.monotonic()


def _head(raw: bytes) -> tuple[int, dict[bytes, bytes]]:
    """The status and the (lower-cased) headers of an HTTP/1.1 answer's head."""
    status_line, *lines = raw.rstrip(b"\r\n").split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(b" ", 2)[1]), headers


def age(answer: dict[str, Any], received: float) -> float:
    """Seconds between an answer's count (``sampled_at``) and ``received`` (wall clock)."""
    return received - dt.datetime.fromisoformat(answer["sampled_at"]).timestamp()


def stats_calls(admin_dsn: str) -> int:
    """Statements calling access_stats run in this database so far (pg_stat_statements:
    the shim's shared GET statement and the hub's own call alike)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select coalesce(sum(s.calls), 0)::bigint from pg_stat_statements as s"
            " where s.dbid = (select oid from pg_database where datname = current_database())"
            " and s.query like %s",
            ("%access_stats%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


# (monotonic, wall clock) when an answer was received, and the answer
Seen = list[tuple[float, float, dict[str, Any]]]


def saw_everyone(seen: Seen) -> bool:
    """Whether one of the answers counts every viewer as present."""
    return any(a["current_participants"] == VIEWERS for _, _, a in seen)


def assert_fresh(seen: Seen, entered: float, *, within: float, slack: float) -> float:
    """Every answer counted at most the cache interval (+ ``slack``) before it arrived, with
    a peak not below its count, and one counted all the viewers ``within`` seconds of the
    last entry (``entered``, monotonic); returns how long after the entries that was."""
    assert seen
    for _, received, answer in seen:
        assert age(answer, received) <= CACHE_SECONDS + slack, answer
        assert answer["peak_participants"] >= answer["current_participants"], answer
    everyone = [t for t, _, a in seen if a["current_participants"] == VIEWERS]
    assert everyone, seen[-1][2]
    assert everyone[0] - entered <= within, everyone[0] - entered
    return everyone[0] - entered
