"""The admin's count is the count now, pushed (issue #19, point 4): the live room's admin
stats (event ``stats`` on ``webinar:{id}:admin``) are the same shared answer the hosts'
GETs are served (``shim.serve.app._stats_source``), so a thousand viewers who just
entered are pushed within the cache interval, and the pushes and the polls together cost
the database one access_stats call per interval."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from crowd_support import (
    CACHE_SECONDS,
    Seen,
    assert_fresh,
    enter_all,
    make_crowd,
    saw_everyone,
    stats_calls,
)
from live_support import Live, Phx, open_phx, user_token

pytestmark = pytest.mark.anyio

WEBINAR = 4712
STATS_SECONDS = 1.0  # the hub's push interval in these tests (live_support.start_live)
SLACK = 0.5  # the call that renews the answer, the frame's way to the client


async def test_pushed_stats_count_a_thousand_who_just_entered_within_5_s(
    live: Live, anyio_backend: str
) -> None:
    """3 hosts subscribed to the admin topic while 1,000 viewers enter at once over HTTP
    through the same shim, and a host polls access_stats by GET every 0.2 s. Every push
    counts the viewers present at most 5 s before it arrives (``sampled_at``); each host
    is pushed current_participants = 1,000 within 5 s of the last entry (+ one push
    interval); the hub asked for an answer every second, and yet the database ran one
    access_stats call per 5 s for the pushes and the polls together."""
    assert live.hub.settings.stats_seconds == STATS_SECONDS
    crowd = make_crowd(live.admin_dsn, WEBINAR)
    topic = f"realtime:webinar:{WEBINAR}:admin"
    pushed: dict[int, Seen] = {}
    polls = 0
    done = asyncio.Event()

    async def listen(i: int, phx: Phx) -> None:
        got = pushed.setdefault(i, [])
        while not done.is_set():
            try:
                msg = await phx.expect(event="broadcast", timeout=0.5)
            except TimeoutError:
                continue
            assert msg["payload"]["event"] == "stats", msg
            got.append((time.monotonic(), time.time(), msg["payload"]["payload"]))

    async def poll(client: httpx.AsyncClient) -> None:
        nonlocal polls
        while not done.is_set():
            r = await client.get(
                f"/rpc/access_stats?webinar_id={WEBINAR}", headers=crowd.host_auth(0)
            )
            assert r.status_code == 200, r.text
            polls += 1
            await asyncio.sleep(0.2)

    async with contextlib.AsyncExitStack() as stack:
        admins = []
        for i, host in enumerate(crowd.hosts):
            conn, phx = await open_phx(live)
            await stack.enter_async_context(conn)
            reply = await phx.join(topic, user_token(host))
            assert reply["payload"]["status"] == "ok", reply
            admins.append((i, phx))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=live.base))
        calls_before, asks_before = stats_calls(live.admin_dsn), live.hub.counters.stats_calls
        t0 = time.monotonic()
        tasks = [asyncio.create_task(listen(i, phx)) for i, phx in admins]
        tasks.append(asyncio.create_task(poll(client)))
        await asyncio.sleep(1.0)  # a push of the answer counted before the storm
        _, entered = await enter_all(live.base, crowd)
        deadline = entered + CACHE_SECONDS + STATS_SECONDS + SLACK
        while time.monotonic() < deadline and not all(
            saw_everyone(pushed.get(i, [])) for i in range(len(crowd.hosts))
        ):
            await asyncio.sleep(0.05)
        done.set()
        await asyncio.gather(*tasks)
        span = time.monotonic() - t0
        calls = stats_calls(live.admin_dsn) - calls_before
        asks = live.hub.counters.stats_calls - asks_before
    for got in pushed.values():
        assert_fresh(got, entered, within=CACHE_SECONDS + STATS_SECONDS + SLACK, slack=SLACK)
    # the hub kept asking (at least every other interval: its clock runs late under load)
    assert asks >= span / STATS_SECONDS / 2, (asks, span)
    assert polls >= span / 0.2 / 2, (polls, span)
    # loads of the one shared answer are at least 5 s apart (+1: the first)
    assert 1 <= calls <= span // CACHE_SECONDS + 1, (calls, span)
