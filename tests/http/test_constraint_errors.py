"""The shim's safety net for constraint violations (issue #21): a 23xxx that PostgreSQL
itself raised -- a check some function failed to make -- keeps PostgREST's status and
its code (metrics and ``eventlive verify`` count 409s by code), but the client never
reads PostgreSQL's words: no table, column, constraint or key value, only the request
id, under which the shim logs the original. A function that raises a 23xxx on purpose,
with its own message, is answered as it chose (tests/http/test_rpc.py)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from shim_support import ShimDb, bearer, serve, settings_for, token

SCHEMA = """
create table test_private.guarded (
    k int primary key,
    parent int references test_private.uniq (k),
    n int not null check (n > 0)
);
grant insert on test_private.guarded to authenticated;
create function test_api.break_rule(rule text) returns void language plpgsql volatile as $$
begin
    case rule
        when 'unique' then insert into test_private.uniq values (9), (9);
        when 'foreign_key' then insert into test_private.guarded values (1, 404, 1);
        when 'check' then insert into test_private.guarded values (1, null, -1);
        when 'not_null' then insert into test_private.guarded values (1, null, null);
    end case;
end $$;
grant execute on function test_api.break_rule(text) to authenticated;
"""
PRIVATE = ("uniq", "guarded", "test_private", "violates", "constraint", "Key (", "404", "parent")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case",
    [
        ("unique", "23505", 409),
        ("foreign_key", "23503", 409),
        ("check", "23514", 400),
        ("not_null", "23502", 400),
    ],
    ids=lambda case: case[0],
)
async def test_a_constraint_violation_keeps_its_status_and_code_but_not_its_words(
    shim_db: ShimDb,
    caplog: pytest.LogCaptureFixture,
    anyio_backend: str,
    case: tuple[str, str, int],
) -> None:
    rule, code, status = case
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
    async with serve(settings_for(shim_db.dsn)) as client:
        with caplog.at_level(logging.ERROR):
            r = await client.post("/rpc/break_rule", json={"rule": rule}, headers=bearer(token()))
    assert r.status_code == status, r.text
    body = r.json()
    request_id = r.headers["X-Request-Id"]
    assert body == {
        "code": code,
        "message": "The request conflicts with the stored data.",
        "details": f"request_id={request_id}",
        "hint": "The server logged this error under the request id.",
    }
    assert [word for word in PRIVATE if word in r.text] == []
    logged = [rec.getMessage() for rec in caplog.records if request_id in rec.getMessage()]
    assert any("guarded" in m or "uniq" in m for m in logged), caplog.text
