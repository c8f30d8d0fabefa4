"""Live room (issue 12): WebSocket subscribers of one webinar and chat at
10 messages/s through the real path, on this machine.

``python -m bench.live_room [--sizes 500,2000,5000] [--seconds 60] [--quick]`` prints
its figures and writes ``results.json`` and ``report.md`` under ``bench/results/runs/``
(or ``--out DIR``). What one run does:

1. A throwaway PostgreSQL, migrated (``bench.env.World``); webinar 777001 (registration
   required) with the largest size's viewers registered and one host; one HS256 token per
   viewer. The shim as its own uvicorn process (one worker).
2. For each size N: N Phoenix 2.0.0 sockets (two client processes), each joining the
   private ``webinar:777001:chat`` with its own token (so N policy probes). Then the host
   sends 10 messages/s for ``--seconds`` through ``POST /rest/v1/rpc/chat_send`` (falls back
   to ``eventlive.publish`` when the database has no ``chat_send``; the report says which).
   Each subscriber checks that it got every seq, in order; send->receive latency is taken
   from the send time carried in the message body. The hub's delivery reads and events
   come from ``/realtime/v1/stats`` (before/after), so reads per event show whether
   delivery reads grow with subscribers.
3. Reconnect storm (largest size): every socket closes and rejoins at a uniform random
   moment within 10 s while chat goes on; each one then catches up from the last seq it
   saw with ``chat_since`` (GET ``/rest/v1/rpc/chat_since``) and checks that live + caught
   up covers every seq sent. Joins refused are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import rawws
from bench.env import REPO, SECRET, Ranges, World, mint, uid
from shim.pg.ports import free_port

WEBINAR = 777_001
HOST_INDEX = 9_000_001
VIEWER_START = 8_000_001


# -- subscriber processes ---------------------------------------------------------------------


async def _catch_up(base: str, sub: rawws.Sub, after: int, client: httpx.AsyncClient) -> list[int]:
    got: list[int] = []
    while True:
        r = await client.get(
            f"{base}/rest/v1/rpc/chat_since",
            params={"webinar_id": WEBINAR, "after_seq": after, "max_rows": 1000},
            headers={"Authorization": f"Bearer {sub.token}"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"chat_since {r.status_code}: {r.text[:200]}")
        data = r.json()
        rows = [m["seq"] for m in data.get("messages", [])]
        got.extend(rows)
        if len(rows) < 1000:
            return got
        after = rows[-1]


def _subscriber_main(base: str, tokens: list[tuple[int, str]], cmd: Any, out: Any) -> None:
    import uvloop  # noqa: PLC0415 - uvicorn[standard] ships it; only the subscribers need it

    uvloop.run(_subscriber(base, tokens, cmd, out))


async def _subscriber(base: str, tokens: list[tuple[int, str]], cmd: Any, out: Any) -> None:
    url = base.replace("http://", "ws://") + "/realtime/v1/websocket?vsn=2.0.0"
    topic = f"realtime:webinar:{WEBINAR}:chat"
    subs = [rawws.Sub(i, t) for i, t in tokens]
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(200)

    async def join(sub: rawws.Sub) -> None:
        async with sem:
            await rawws.join(url, sub, topic)

    t0 = time.monotonic()
    outcomes = await asyncio.gather(*(join(s) for s in subs), return_exceptions=True)
    failures = [repr(o)[:120] for o in outcomes if isinstance(o, BaseException)]
    out.send(
        {
            "joined": sum(s.joined for s in subs),
            "refused": ([s.refused for s in subs if s.refused] + failures)[:3],
            "join_s": time.monotonic() - t0,
        }
    )
    while True:
        msg = await loop.run_in_executor(None, cmd.recv)
        if msg["op"] == "reset":
            for s in subs:
                s.seqs.clear()
                s.lat.clear()
            out.send({"ok": True})
        elif msg["op"] == "report":
            out.send(_summary(subs, msg["sent"], msg.get("exact", True)))
        elif msg["op"] == "storm":
            out.send(await _storm(base, url, topic, subs, msg["window"]))
        elif msg["op"] == "stop":
            for s in subs:
                if s.proto is not None:
                    s.proto.close()
            out.send({"ok": True})
            return


def _summary(subs: list[rawws.Sub], sent: list[int], exact: bool = True) -> dict[str, Any]:
    # After a storm a subscriber also holds what it caught up from before the storm.
    wanted = set(sent)
    complete = sum(1 for s in subs if (s.seqs == sent if exact else wanted <= set(s.seqs)))
    out_of_order = sum(1 for s in subs if s.seqs != sorted(s.seqs))
    missing = sum(len(set(sent) - set(s.seqs)) for s in subs)
    lat = [x for s in subs for x in s.lat]
    return {
        "subs": len(subs),
        "complete": complete,
        "out_of_order": out_of_order,
        "missing": missing,
        "lat": lat,
    }


async def _storm(
    base: str, url: str, topic: str, subs: list[rawws.Sub], window: float
) -> dict[str, Any]:
    """Drop every socket and rejoin at a random moment within ``window`` s; catch up."""
    for s in subs:
        s.seqs.clear()
    # Few catch-ups in flight: httpx's pool slows down quadratically with thousands queued.
    gate = asyncio.Semaphore(40)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as client:

        async def cycle(sub: rawws.Sub) -> tuple[bool, int, str | None]:
            await asyncio.sleep(random.uniform(0, window))  # noqa: S311 - load timing
            before = sub.seqs[-1] if sub.seqs else 0
            if sub.proto is not None:
                sub.proto.close()
                await sub.proto.closed
            # Like realtime-js: a failed connection is retried after 1, 2, 5 s.
            for attempt, pause in enumerate((1.0, 2.0, 5.0, None)):
                sub.joined, sub.refused = False, None
                try:
                    await rawws.join(url, sub, topic)
                    break
                except Exception as exc:  # noqa: BLE001 - counted as a failed rejoin
                    sub.retries = attempt + 1
                    if pause is None:
                        return False, 0, repr(exc)[:100]
                    await asyncio.sleep(pause)
            if not sub.joined:
                return False, 0, sub.refused
            async with gate:
                caught = await _catch_up(base, sub, before, client)
            sub.seqs = sorted(set(sub.seqs) | set(caught))
            return True, len(caught), None

        results = await asyncio.gather(*(cycle(s) for s in subs), return_exceptions=True)
    ok = [r for r in results if isinstance(r, tuple) and r[0]]
    errors = [
        r[2] if isinstance(r, tuple) else repr(r)[:100]
        for r in results
        if not (isinstance(r, tuple) and r[0])
    ]
    return {
        "retried": sum(1 for s in subs if s.retries),
        "rejoined": len(ok),
        "caught_rows": sum(r[1] for r in ok),
        "errors": errors[:5],
        "failed": len(errors),
    }


# -- driver --------------------------------------------------------------------------------------


def _stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/realtime/v1/stats", timeout=5) as resp:  # noqa: S310 - our http URL
        return dict(json.loads(resp.read()))


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


class Sender:
    """10 messages/s from the host: chat_send over HTTP, or publish when it is absent."""

    def __init__(self, world: World, base: str, host_token: str) -> None:
        self.base = base
        self.token = host_token
        self.world = world
        self.via = (
            "chat_send"
            if world.sql("select to_regprocedure('api.chat_send(bigint,text,uuid)') is not null")[
                0
            ][0]
            else "eventlive.publish"
        )

    async def run(self, seconds: float, rate: float = 10.0) -> list[int]:
        sent: list[int] = []
        start = time.monotonic()
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            with psycopg.connect(self.world.admin_dsn(), autocommit=True) as conn:
                n = 0
                while time.monotonic() - start < seconds:
                    due = start + n / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    body = f"t={time.time():.6f}"
                    if self.via == "chat_send":
                        r = await client.post(
                            "/rest/v1/rpc/chat_send",
                            json={"webinar_id": WEBINAR, "body": body},
                            headers={"Authorization": f"Bearer {self.token}"},
                        )
                        r.raise_for_status()
                        sent.append(int(r.json()["seq"]))
                    else:
                        row = conn.execute(
                            "select eventlive.publish(%s, 'chat', 'message', jsonb_build_object('body', %s::text))",
                            (WEBINAR, body),
                        ).fetchone()
                        assert row is not None
                        sent.append(int(row[0]))
                    n += 1
        return sent


def _seed(world: World, n: int) -> dict[int, str]:
    exp = int(time.time()) + 6 * 3600
    iat = int(time.time())
    with psycopg.connect(world.admin_dsn(), autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id) select bench.uid(i) from generate_series(%s, %s) i",
            (VIEWER_START, VIEWER_START + n - 1),
        )
        conn.execute("insert into auth.users (id) values (bench.uid(%s))", (HOST_INDEX,))
        with conn.transaction():
            conn.execute(
                "select set_config('role', 'service_role', true), set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true)"
            )
            conn.execute(
                "select api.upsert_webinar(%s, 'Live room bench', 'live', 'registered')", (WEBINAR,)
            )
            conn.execute("select api.set_staff(%s, %s, 'host')", (WEBINAR, uid(HOST_INDEX)))
            ids = [uid(i) for i in range(VIEWER_START, VIEWER_START + n)]
            conn.execute("select api.register(%s, u) from unnest(%s::uuid[]) u", (WEBINAR, ids))
    tokens = {i: mint(i, exp, iat) for i in range(VIEWER_START, VIEWER_START + n)}
    tokens[HOST_INDEX] = mint(HOST_INDEX, exp, iat)
    return tokens


def _start_shim(world: World) -> str:
    env = {
        "DATABASE_URL": world.auth_dsn(),
        "JWT_SECRET": SECRET,
        "EVENTLIVE_ACCESS_LOG": "0",
        "EVENTLIVE_POOL_MAX": "10",
    }
    argv = world.uvicorn_argv("shim.serve.app:app_from_env", free_port(), 1)
    # The hub writes one frame to thousands of sockets: per-connection deflate would cost
    # CPU per subscriber (eventlive serve turns it off too).
    argv += ["--ws-per-message-deflate", "false"]
    proc = world._spawn("shim", argv, env, "/ready")
    return f"http://127.0.0.1:{proc.port}"


async def _phase(
    base: str, sender: Sender, procs: list[tuple[Any, Any]], seconds: float
) -> dict[str, Any]:
    for cmd, _ in procs:
        cmd.send({"op": "reset"})
    for _, out in procs:
        out.recv()
    before = _stats(base)
    sent = await sender.run(seconds)
    await asyncio.sleep(3.0)  # the last messages' delivery
    after = _stats(base)
    parts = []
    for cmd, _ in procs:
        cmd.send({"op": "report", "sent": sent})
    for _, out in procs:
        parts.append(out.recv())
    lat = [x for p in parts for x in p["lat"]]
    events = after["events"] - before["events"]
    reads = after["delivery_reads"] - before["delivery_reads"]
    return {
        "sent": len(sent),
        "subscribers": sum(p["subs"] for p in parts),
        "complete": sum(p["complete"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "missing": sum(p["missing"] for p in parts),
        "p50_ms": round(_pct(lat, 50) * 1000, 1),
        "p99_ms": round(_pct(lat, 99) * 1000, 1),
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
        "events": events,
        "delivery_reads": reads,
        "reads_per_event": round(reads / events, 3) if events else None,
        "safety_reads": after["safety_reads"] - before["safety_reads"],
        "laggards": after["laggards"] - before["laggards"],
        # The machine is shared: the 1-minute load average says how shared it was.
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


async def _run(args: argparse.Namespace, world: World) -> dict[str, Any]:
    sizes = [int(x) for x in args.sizes.split(",")]
    tokens = _seed(world, max(sizes))
    base = _start_shim(world)
    sender = Sender(world, base, tokens[HOST_INDEX])
    results: dict[str, Any] = {
        "via": sender.via,
        "seconds": args.seconds,
        "sizes": {},
        "facts": world.facts,
    }
    ctx = mp.get_context("spawn")
    for n in sizes:
        viewers = list(range(VIEWER_START, VIEWER_START + n))
        shares = [viewers[k :: args.clients] for k in range(args.clients)]
        procs = []
        children = []
        for share in shares:
            cmd_a, cmd_b = ctx.Pipe()
            out_a, out_b = ctx.Pipe()
            p = ctx.Process(
                target=_subscriber_main, args=(base, [(i, tokens[i]) for i in share], cmd_b, out_a)
            )
            p.start()
            children.append(p)
            procs.append((cmd_a, out_b))
        t0 = time.monotonic()
        joins = [out.recv() for _, out in procs]
        joined = sum(j["joined"] for j in joins)
        print(
            f"[{n}] joined {joined}/{n} in {time.monotonic() - t0:.1f}s {[j['refused'] for j in joins if j['refused']]}",
            flush=True,
        )
        phase = await _phase(base, sender, procs, args.seconds)
        phase.update(
            {"joined": joined, "join_s": round(time.monotonic() - t0 - args.seconds - 3, 1)}
        )
        print(f"[{n}] {json.dumps(phase)}", flush=True)
        results["sizes"][str(n)] = phase
        if n == max(sizes) and not args.no_storm:
            results["storm"] = await _storm_phase(base, sender, procs, args)
            print(f"[storm] {json.dumps(results['storm'])}", flush=True)
        for cmd, out in procs:
            cmd.send({"op": "stop"})
            out.recv()
        for p in children:
            p.join(timeout=30)
        await asyncio.sleep(2.0)
    return results


async def _storm_phase(
    base: str, sender: Sender, procs: list[tuple[Any, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    before = _stats(base)
    for cmd, _ in procs:
        cmd.send({"op": "storm", "window": 10.0})
    sending = asyncio.create_task(sender.run(10.0 + args.storm_tail))
    loop = asyncio.get_running_loop()
    parts = [await loop.run_in_executor(None, out.recv) for _, out in procs]
    sent = await sending
    await asyncio.sleep(3.0)
    after = _stats(base)
    for cmd, _ in procs:
        cmd.send({"op": "report", "sent": sent, "exact": False})
    reports = [out.recv() for _, out in procs]
    return {
        "rejoined": sum(p["rejoined"] for p in parts),
        "retried": sum(p["retried"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "errors": [e for p in parts for e in p["errors"]][:5],
        "caught_up_rows": sum(p["caught_rows"] for p in parts),
        "sent_during": len(sent),
        "complete_after_catch_up": sum(r["complete"] for r in reports),
        "missing_after_catch_up": sum(r["missing"] for r in reports),
        "out_of_order": sum(r["out_of_order"] for r in reports),
        "joins_refused": after["joins_refused"] - before["joins_refused"],
        "probes": after["probes"] - before["probes"],
    }


def _report(results: dict[str, Any]) -> str:
    lines = [
        "## Live room (WebSocket hub)",
        "",
        f"One webinar, chat at 10 messages/s for {results['seconds']} s per size, sent with `{results['via']}`; "
        "Phoenix 2.0.0 sockets, each joined to the private chat topic with its own token. "
        "One shim process (one uvicorn worker); subscribers in two client processes on the same 2 cores.",
        "",
        "| subscribers | joined | got every seq in order | missing | p50 | p99 | max | events | delivery reads | reads/event | laggards | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in results["sizes"].items():
        lines.append(
            f"| {n} | {r['joined']} | {r['complete']} | {r['missing']} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms | "
            f"{r['events']} | {r['delivery_reads']} | {r['reads_per_event']} | {r['laggards']} | {r.get('load_avg_1m')} |"
        )
    storm = results.get("storm")
    if storm:
        lines += [
            "",
            f"Reconnect storm ({max(int(k) for k in results['sizes'])} sockets drop and rejoin within 10 s while chat goes on): "
            f"{storm['rejoined']} rejoined ({storm.get('retried', 0)} after a reconnect retry), {storm['failed']} failed {storm['errors']}, {storm['joins_refused']} joins refused, "
            f"{storm['probes']} policy probes; after catch-up with `chat_since` ({storm['caught_up_rows']} rows): "
            f"{storm['complete_after_catch_up']} subscribers hold every seq sent during the storm, {storm['missing_after_catch_up']} seqs missing in total.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live_room", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sizes", default="500,2000,5000")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=2, help="subscriber processes")
    parser.add_argument(
        "--storm-tail", type=float, default=5.0, help="chat seconds after the storm window"
    )
    parser.add_argument("--no-storm", action="store_true")
    parser.add_argument("--quick", action="store_true", help="sizes 50,200 for 5 s (smoke)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.seconds = "50,200", 5.0
    out = args.out or REPO / "bench" / "results" / "runs" / time.strftime(
        "live-room-%Y%m%dT%H%M%SZ", time.gmtime()
    )
    (out / "work").mkdir(parents=True, exist_ok=True)
    world = World(out, Ranges(0, 0, 0), workers=1, pool_max=10)
    try:
        world.start_db()
        results = asyncio.run(_run(args, world))
    finally:
        world.stop()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report = _report(results)
    (out / "report.md").write_text(report)
    print(report)
    print(f"written to {out}", file=sys.stderr)
    ok = all(r["complete"] == r["subscribers"] for r in results["sizes"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
