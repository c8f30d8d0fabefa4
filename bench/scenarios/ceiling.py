"""1. Ceiling: pgbench calls the same SQL functions as the shim, as the same login role
(``authenticator``), switching to ``authenticated`` with the viewer's claims
transaction-locally, at several client counts, for presence_ping and track_access
(a re-confirmation with the viewer's session id).

Two exchanges:

- ``pipeline``: the SQL side's scripts ``bench/pgbench_presence_ping.sql`` and
  ``bench/pgbench_track_access.sql`` (reused as they are): begin, role, claims, call,
  commit in one pipeline -- one round trip, the shim's exchange -- with ``-M extended``
  (pgbench prepares a pipeline's statements before running it, as the login role,
  which may not use schema ``api``).
- ``prepared``: ``-M prepared`` with the same statements one after another (five round
  trips, each statement parsed once per connection; the call is first parsed after the
  role switch, so it is privilege-checked as ``authenticated``). Its script is made
  here: the SQL side's scripts are pipelines, which prepared mode cannot run.

The ceiling of a function is the best calls/s over both exchanges and all client counts
(of runs where no pgbench client stopped at an error: before each run the pool is made
present again, as the other scenarios do).

- ``strict`` (presence_ping only; issue #19, point 5): the cheapest form in which
  PostgreSQL takes one call, ``bench/pgbench_presence_ping_strict.sql``: one prepared
  statement per (autocommit) transaction, ``select set_config('role', 'authenticated',
  true), set_config('request.jwt.claims', ..., true), api.presence_ping(...)``, with
  ``-M prepared``, as ``bench_caller``: the statement is parsed and its executor started
  (schema USAGE, function EXECUTE checked) as the login role, before its own role switch,
  and ``authenticator`` (NOINHERIT) may not use schema ``api`` before it has switched;
  ``bench_caller`` is a member of ``authenticated`` that inherits (bench/env.py), so it
  has exactly authenticated's rights. ``strict_checks`` shows on the server, before the
  runs, that the statement does the same work as the shim's exchange: the role is
  ``authenticated`` and ``auth.uid()`` the viewer when the call runs, the heartbeat is
  written, and a wrong session gets the same error as through the pipeline. Reported
  apart (``best_strict``): the pipeline/prepared ceiling above stays what it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg

from bench import drivers
from bench.env import REPO, W_CEIL, sid, uid

SQL_SIDE = {
    "ping": REPO / "bench" / "pgbench_presence_ping.sql",
    "track": REPO / "bench" / "pgbench_track_access.sql",
}
STRICT = REPO / "bench" / "pgbench_presence_ping_strict.sql"
_VARIABLE = re.compile(r"(?<!:):(webinar|u)\b")
_CALLS = {
    "ping": "select api.presence_ping(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);",
    "track": "select api.track_access(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);",
}


def prepared_script(call: str) -> str:
    """The SQL side's statements, sent one by one (prepared mode cannot pipeline)."""
    return (
        "\\set u random(1, :viewers)\n"
        "begin;\n"
        "set local role authenticated;\n"
        'select set_config(\'request.jwt.claims\', \'{"role":"authenticated","sub":"\' '
        "|| lpad(to_hex(:u::integer), 32, '0') || '\"}', true);\n"
        f"{_CALLS[call]}\n"
        "commit;\n"
    )


def _strict_statement() -> str:
    """The strict script's statement with psycopg placeholders for its variables."""
    line = next(x for x in STRICT.read_text().splitlines() if x.startswith("select "))
    return _VARIABLE.sub(lambda m: f"%({m.group(1)})s", line).rstrip(";")


def _pipeline_error(world: Any, viewer: int, session: str) -> tuple[str | None, str | None]:
    """(SQLSTATE, detail) of presence_ping as the shim's exchange sends it (pipeline form)."""
    claims = json.dumps({"role": "authenticated", "sub": uid(viewer)})
    try:
        with psycopg.connect(world.auth_dsn(), autocommit=True) as conn, conn.transaction():
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            conn.execute("select api.presence_ping(%s, %s)", (W_CEIL, session))
    except psycopg.Error as exc:
        return exc.sqlstate, exc.diag.message_detail
    return None, None


def strict_checks(world: Any) -> dict[str, Any]:
    """The strict statement, run as the bench runs it (prepared, as ``bench_caller``):
    who the call runs as, that it writes the heartbeat, and that a wrong session gets the
    pipeline form's error. ``same_work`` when all hold."""
    r = world.ranges
    viewer, other = r.ceiling_start, r.ceiling_start + 1
    statement = _strict_statement()
    world.present_again(W_CEIL, viewer, 2)
    seen = "select last_seen_at from eventlive.presence where webinar_id = %s and user_id = %s"
    before = world.sql(seen, (W_CEIL, uid(viewer)))[0][0]
    out: dict[str, Any] = {"statement": statement, "login_role": "bench_caller"}
    with psycopg.connect(world.caller_dsn(), autocommit=True) as conn:
        claims = json.dumps({"role": "authenticated", "sub": uid(viewer)})
        row = conn.execute(
            "select set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', %s, true), current_user::text, auth.uid()::text",
            (claims,),
        ).fetchone()
        out["runs_as"], out["uid"] = (row[2], row[3]) if row else (None, None)
        conn.execute(statement, {"webinar": W_CEIL, "u": viewer}, prepare=True)
        after_row = conn.execute("select current_user::text").fetchone()
        out["role_after"] = after_row[0] if after_row else None
        try:
            # viewer's claims, the other viewer's session
            wrong = statement.replace(
                "('00000010' || lpad(to_hex(%(u)s::integer), 24, '0'))::uuid", "%(session)s::uuid"
            )
            conn.execute(wrong, {"webinar": W_CEIL, "u": viewer, "session": sid(other)})
            out["wrong_session"] = (None, None)
        except psycopg.Error as exc:
            out["wrong_session"] = (exc.sqlstate, exc.diag.message_detail)
    after = world.sql(seen, (W_CEIL, uid(viewer)))[0][0]
    out["wrote"] = bool(before and after and after > before)
    out["wrong_session_pipeline"] = _pipeline_error(world, viewer, sid(other))
    out["same_work"] = (
        out["runs_as"] == "authenticated"
        and out["uid"] == uid(viewer)
        and out["role_after"] == "bench_caller"
        and out["wrote"]
        and out["wrong_session"][0] is not None
        and tuple(out["wrong_session"]) == tuple(out["wrong_session_pipeline"])
    )
    return out


def run(ctx: Any) -> dict[str, Any]:
    world, cfg = ctx.world, ctx.cfg
    pgbench = drivers.pgbench_path(world.facts["pg_bindir"])
    if pgbench is None:
        return {"skipped": "pgbench not found (server bindir or PATH)"}
    work: Path = world.out / "work"
    r = world.ranges
    assert r.ceiling_start == 1, "the SQL side's scripts draw viewers 1..:viewers"
    variables = {"viewers": str(r.ceiling), "webinar": str(W_CEIL)}
    runs = []
    notes = []
    checks = strict_checks(world) if "strict" in cfg.pgbench_modes else None
    if checks is not None:
        ctx.log(f"strict form checks: {checks}")
    for call in ("ping", "track"):
        for mode in cfg.pgbench_modes:
            dsn = world.auth_dsn()
            if mode == "strict":
                if call != "ping":
                    continue
                path, dsn = STRICT, world.caller_dsn()
            elif mode == "pipeline":
                path = SQL_SIDE[call]
                if not path.exists():
                    notes.append(f"{path.name} missing: pipeline mode of {call} not run")
                    continue
            else:
                path = work / f"pgbench-{call}-prepared.sql"
                path.write_text(prepared_script(call))
            for clients in cfg.pgbench_clients:
                # each run on present viewers: housekeeping expires a session unseen for a
                # while, and pgbench stops a client at its first error (409 session_ended)
                world.present_again(W_CEIL, r.ceiling_start, r.ceiling)
                with world.cpu() as meter:
                    res = drivers.run_pgbench(
                        pgbench, dsn, path,
                        mode="extended" if mode == "pipeline" else "prepared",
                        clients=clients, duration=cfg.pgbench_seconds, variables=variables,
                    )  # fmt: skip
                res["cpu_cores"] = meter.split
                res["cpu_saturation"] = meter.saturation
                res.update(
                    call=call, mode=mode, clients=clients, script=path.read_text(),
                    script_name=str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name,
                )  # fmt: skip
                ctx.log(
                    f"ceiling {call} {mode} c={clients}: {res['tps']:.0f} tps"
                    + (f", {res['aborted_clients']} clients aborted: {res['errors']}"
                       if res["aborted_clients"] else "")
                )  # fmt: skip
                runs.append(res)
    return {
        "runs": runs,
        "best": _best(runs, strict=False),
        "best_strict": _best(runs, strict=True),
        "strict_checks": checks,
        "notes": notes,
    }


def _best(runs: list[dict[str, Any]], *, strict: bool) -> dict[str, Any]:
    """Per call, the run with the most calls/s: of the strict form, or of the others."""
    best = {}
    for call in ("ping", "track"):
        mine = [
            x for x in runs
            if x["call"] == call and not x["failed"] and not x.get("aborted_clients")
            and (x["mode"] == "strict") == strict
        ]  # fmt: skip
        if mine:
            top = max(mine, key=lambda x: x["tps"])
            best[call] = {"tps": top["tps"], "mode": top["mode"], "clients": top["clients"]}
    return best
