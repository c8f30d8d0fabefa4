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

The ceiling of a function is the best calls/s over both exchanges and all client counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import drivers
from bench.env import REPO, W_CEIL

SQL_SIDE = {
    "ping": REPO / "bench" / "pgbench_presence_ping.sql",
    "track": REPO / "bench" / "pgbench_track_access.sql",
}
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
    for call in ("ping", "track"):
        for mode in cfg.pgbench_modes:
            if mode == "pipeline":
                path = SQL_SIDE[call]
                if not path.exists():
                    notes.append(f"{path.name} missing: pipeline mode of {call} not run")
                    continue
            else:
                path = work / f"pgbench-{call}-prepared.sql"
                path.write_text(prepared_script(call))
            for clients in cfg.pgbench_clients:
                with world.cpu() as meter:
                    res = drivers.run_pgbench(
                        pgbench, world.auth_dsn(), path,
                        mode="prepared" if mode == "prepared" else "extended",
                        clients=clients, duration=cfg.pgbench_seconds, variables=variables,
                    )  # fmt: skip
                res["cpu_cores"] = meter.split
                res.update(
                    call=call, mode=mode, clients=clients, script=path.read_text(),
                    script_name=str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name,
                )  # fmt: skip
                ctx.log(f"ceiling {call} {mode} c={clients}: {res['tps']:.0f} tps")
                runs.append(res)
    best = {}
    for call in ("ping", "track"):
        mine = [x for x in runs if x["call"] == call and not x["failed"]]
        if mine:
            top = max(mine, key=lambda x: x["tps"])
            best[call] = {"tps": top["tps"], "mode": top["mode"], "clients": top["clients"]}
    return {"runs": runs, "best": best, "notes": notes}
