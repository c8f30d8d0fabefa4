"""``eventlive verify``: a healthy deployment passes every line (exit 0); each planted
fault fails its own line (a function raising 42703 → DoD-1, a burst of 409s → DoD-2, a
storm of expired tokens → DoD-3, a registrant who cannot ping → DoD-4) with the rollback
trigger fired (exit 1); a node that is down or a wrong secret is
"cannot check" (exit 2). Real shim on uvicorn, real PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import SECRET, ShimDb, bearer, settings_for, token, uvicorn_server

from shim.cli import main
from shim.pg.ports import free_port
from shim.serve.app import create_app
from shim.verify.report import Report
from shim.verify.run import verify


@pytest.fixture
def node(shim_db: ShimDb) -> Iterator[str]:
    """A shim node serving ``api`` and ``test_api`` on the test database."""
    app = create_app(settings_for(shim_db.dsn, schemas=("api", "test_api"), pool_max=4))
    with uvicorn_server(app) as base:
        yield base


def lines(report: Report) -> dict[str, str]:
    return {v.check: v.status for v in report.verdicts}


def reload_catalog(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("notify eventlive_reload")
    time.sleep(0.5)


def test_a_healthy_deployment_passes_every_line_and_leaves_nothing_behind(
    node: str, shim_db: ShimDb
) -> None:
    """All lines OK, exit 0, each flow step timed, the throwaway webinar and users gone."""
    report = verify([node], shim_db.admin_dsn, SECRET, push_timeout=1)
    assert report.cannot_check is None
    assert lines(report) == {
        "NODES": "OK", "DoD-1": "OK", "DoD-2": "OK", "DoD-3": "OK", "DoD-4": "OK"
    }, report.text()  # fmt: skip
    assert report.exit_code == 0
    assert not report.rollback
    core = [s for s in report.steps if s.status == "OK"]
    names = {s.step for s in core}
    assert {"enters (track_access)", "pings (presence_ping) → 204"} <= names
    assert "enters, registered automatically" in names
    assert "pings → 204 (not 403)" in names
    assert "reads access_stats (participants, timeline)" in names
    assert all(s.ms is not None and s.ms > 0 for s in core)
    assert all(s.status in ("OK", "n/a") for s in report.steps)
    assert report.cleaned
    with psycopg.connect(shim_db.admin_dsn) as conn:
        left = conn.execute(
            "select count(*) from eventlive.webinars where id = %s", (report.webinar_id,)
        ).fetchone()
        users = conn.execute(
            "select count(*) from auth.users where email like 'verify-%%'"
        ).fetchone()
    assert left == (0,)
    assert users == (0,)
    assert report.seconds < 60


def test_a_function_that_raises_42703_fails_dod1_naming_it(node: str, shim_db: ShimDb) -> None:
    """A plpgsql function reading a column that does not exist: DoD-1 FAIL for that
    function, the first rollback trigger fired, exit 1; other lines unaffected."""
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(
            """
            create function test_api.old_registration_id(w bigint) returns bigint
            language plpgsql stable as $$
            begin return (select r.id from eventlive.registrations as r limit 1); end $$;
            grant execute on function test_api.old_registration_id(bigint) to authenticated;
            """
        )
    reload_catalog(shim_db.admin_dsn)
    headers = {**bearer(token()), "Accept-Profile": "test_api"}
    for _ in range(3):
        r = httpx.get(f"{node}/rpc/old_registration_id?w=1", headers=headers)
        assert r.status_code == 400, r.text
    report = verify([node], shim_db.admin_dsn, SECRET, flows=False)
    assert lines(report)["DoD-1"] == "FAIL"
    assert lines(report)["DoD-2"] == "OK"
    dod1 = next(v for v in report.verdicts if v.check == "DoD-1")
    assert dod1.rows == [
        {"function": "test_api.old_registration_id", "sqlstate": "42703",
         "what": "undefined column", "count": 3}
    ]  # fmt: skip
    assert report.triggers[0]["fired"]
    assert report.rollback
    assert report.exit_code == 1


def test_a_burst_of_409s_fails_dod2_and_a_few_do_not(node: str, shim_db: ShimDb) -> None:
    """3 duplicate-key 409s: OK (a rate under the rule). 60 within seconds: over
    30/min and over 1 % of the function's calls → DoD-2 FAIL, exit 1."""
    headers = {**bearer(token()), "Content-Profile": "test_api"}
    with httpx.Client(base_url=node, headers=headers) as client:
        for _ in range(3):
            assert client.post("/rpc/dup", json={}).status_code == 409
        calm = verify([node], shim_db.admin_dsn, SECRET, flows=False)
        assert lines(calm)["DoD-2"] == "OK", calm.text()
        assert "3 x 409" in next(v.summary for v in calm.verdicts if v.check == "DoD-2")
        for _ in range(57):
            assert client.post("/rpc/dup", json={}).status_code == 409
    storm = verify([node], shim_db.admin_dsn, SECRET, flows=False, window=300)
    assert lines(storm)["DoD-2"] == "FAIL", storm.text()
    row = next(v for v in storm.verdicts if v.check == "DoD-2").rows[0]
    assert row["function"] == "test_api.dup"
    assert row["count"] == 60
    assert row["exploding"]
    assert storm.triggers[1]["fired"]
    assert storm.exit_code == 1


def test_a_storm_of_expired_tokens_fails_dod3(node: str, shim_db: ShimDb) -> None:
    """Expired tokens are refused in-process (no auth server), but a storm of them sends
    every client to the auth server for a new one: DoD-3 FAIL; a valid caller's cache hit
    rate is shown."""
    good = bearer(token())
    with httpx.Client(base_url=node) as client:
        for _ in range(5):
            client.post("/rpc/presence_leave", json={}, headers=good)
        quiet = verify([node], shim_db.admin_dsn, SECRET, flows=False)
        assert lines(quiet)["DoD-3"] == "OK"
        assert "0 auth-server calls per request" in quiet.verdicts[3].summary
        assert "token cache hit rate 80.0%" in quiet.verdicts[3].summary
        for i in range(40):
            client.post("/rpc/presence_leave", json={}, headers=bearer(token({"exp": 1000 + i})))
    storm = verify([node], shim_db.admin_dsn, SECRET, flows=False)
    assert lines(storm)["DoD-3"] == "FAIL", storm.text()
    assert {"what": "rejected tokens: expired", "value": 40} in [
        {k: r[k] for k in ("what", "value")} for r in storm.verdicts[3].rows
    ]


def test_a_registrant_who_cannot_ping_fails_dod4(node: str, shim_db: ShimDb) -> None:
    """presence_ping broken (it always raises 403 not_registered, the incident's regression):
    the flow step fails with its status, DoD-4 FAIL, the third rollback trigger fires."""
    # The heartbeat's shared logic, which the single and the coalesced ping both run.
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(
            """
            create or replace function eventlive.ping_core(
                p_webinar_id bigint, p_user_id uuid, p_session_id uuid, p_now timestamptz
            ) returns text language plpgsql volatile set search_path = '' as $$
            begin return 'not_registered'; end $$;
            """
        )
    reload_catalog(shim_db.admin_dsn)
    report = verify([node], shim_db.admin_dsn, SECRET, push_timeout=1)
    assert lines(report)["DoD-4"] == "FAIL", report.text()
    failed = [(s.flow, s.http, s.note) for s in report.steps if s.status == "FAIL"]
    assert failed == [
        ("registrant", 403, "not_registered"),
        ("non-registrant", 403, "not_registered"),
    ]
    assert report.triggers[2]["fired"]
    assert report.exit_code == 1
    assert report.cleaned


def test_a_node_that_is_down_is_cannot_check(node: str, shim_db: ShimDb) -> None:
    """One of two nodes refuses connections: exit 2, the reason names it."""
    dead = f"http://127.0.0.1:{free_port()}"
    report = verify([node, dead], shim_db.admin_dsn, SECRET)
    assert report.exit_code == 2
    assert report.cannot_check is not None
    assert dead in report.cannot_check
    assert "CANNOT CHECK" in report.text()


def test_bad_credentials_are_cannot_check(node: str, shim_db: ShimDb) -> None:
    """A JWT secret the shim does not share, or a database that refuses: exit 2 with why."""
    wrong = verify([node], shim_db.admin_dsn, "not-the-secret-of-this-deployment-at-all")
    assert wrong.exit_code == 2
    assert wrong.cannot_check is not None
    assert "wrong JWT secret" in wrong.cannot_check
    nodb = verify([node], f"postgresql://nobody@127.0.0.1:{free_port()}/x", SECRET)
    assert nodb.exit_code == 2
    assert nodb.cannot_check is not None
    assert "database unreachable" in nodb.cannot_check


def test_the_cli_prints_text_json_and_markdown(
    node: str, shim_db: ShimDb, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """``eventlive verify`` renders the same report three ways and exits with its code."""
    monkeypatch.setenv("JWT_SECRET", SECRET)
    common = ["verify", "--url", node, "--dsn", shim_db.admin_dsn, "--no-flows"]
    assert main([*common, "--window", "5m"]) == 0
    text = capsys.readouterr().out
    assert "DoD-1   OK" in text
    assert "verdict: no rollback needed" in text
    assert main([*common, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == 0
    assert [c["check"] for c in data["checks"]] == ["NODES", "DoD-1", "DoD-2", "DoD-3"]
    assert main([*common, "--format", "markdown", "--since", "2020-01-01T00:00:00Z"]) == 0
    md = capsys.readouterr().out
    assert "| check | verdict | evidence |" in md
    assert "**Verdict**: no rollback needed" in md
    assert main([*common, "--window", "3h"]) == 2
    assert "60 minutes" in capsys.readouterr().err


BROKEN_CHAT_POLICY = """
drop policy "Viewers and staff receive the webinar topics they are entitled to"
    on realtime.messages;
create policy "receive, but not chat (planted fault)" on realtime.messages
for select to authenticated
using (
    (select auth.uid()) is not null
    and topic = (select realtime.topic())
    and (select realtime.topic()) not like '%:chat'
    and (select eventlive.may_receive((select realtime.topic())))
);
"""


def test_a_broken_chat_policy_fails_dod4_at_the_live_chat(node: str, shim_db: ShimDb) -> None:
    """The realtime.messages policy no longer lets registrants receive chat: the registrant
    still sends (chat_send) and reads back (chat_since), but does not receive it live; DoD-4
    FAIL on that step with the refusal, exit 1. Needs the live room (SQL and hub)."""
    healthy = verify([node], shim_db.admin_dsn, SECRET)
    live = [s for s in healthy.steps if s.step == "receives it live (realtime chat)"]
    assert [s.status for s in live] == ["OK"], healthy.text()
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(BROKEN_CHAT_POLICY)
    broken = verify([node], shim_db.admin_dsn, SECRET)
    assert lines(broken)["DoD-4"] == "FAIL", broken.text()
    failed = [s for s in broken.steps if s.status == "FAIL"]
    assert [s.step for s in failed] == ["receives it live (realtime chat)"]
    assert "refused" in failed[0].note
    assert broken.exit_code == 1


def test_a_broken_chat_access_rule_fails_dod4_at_chat_and_qa(node: str, shim_db: ShimDb) -> None:
    """The chat's ban rule broken (everyone counts as banned): the registrant enters and
    pings, but chat_send and question_ask answer 403 banned; DoD-4 FAIL naming those
    steps, exit 1. A healthy run on the same node first shows the chat steps OK."""
    healthy = verify([node], shim_db.admin_dsn, SECRET, push_timeout=1)
    chat = {s.step: s.status for s in healthy.steps if s.flow == "registrant"}
    assert chat["sends a chat message (chat_send)"] == "OK", healthy.text()
    assert chat["sees it come back (chat_since)"] == "OK"
    assert chat["sees it come back (questions)"] == "OK"
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(
            """
            create or replace function eventlive.require_not_banned(
                p_webinar_id bigint, p_uid uuid, p_at timestamptz)
            returns void language plpgsql stable set search_path = '' as $$
            begin raise exception using errcode = 'PT403', message = 'Banned.',
                  detail = 'banned'; end $$;
            """
        )
    broken = verify([node], shim_db.admin_dsn, SECRET, push_timeout=1)
    assert lines(broken)["DoD-4"] == "FAIL", broken.text()
    failed = [(s.step, s.http, s.note) for s in broken.steps if s.status == "FAIL"]
    assert failed == [
        ("sends a chat message (chat_send)", 403, "banned"),
        ("asks a question (question_ask)", 403, "banned"),
    ]
    assert broken.triggers[2]["fired"]
    assert broken.exit_code == 1
