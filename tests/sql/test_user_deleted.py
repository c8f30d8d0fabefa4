"""A user deleted while one of their own calls runs (issue #21). The writers lock the
user's ``auth.users`` row before their first write that references it
(``eventlive.require_user``), so a call that meets a delete in flight waits for it and
answers 401 ``user_not_found`` -- never the 23503 of an insert that met the vanished row
(PostgreSQL's words, with table and constraint names), and no deadlock against the
delete's cascade. The whole-api view (every function, a user already deleted) is in
``test_rls_rpc.py``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from shim.testing import act_as, create_user

W = 1


def _setup(admin: psycopg.Connection[Any], db: psycopg.Connection[Any]) -> dict[str, Any]:
    admin.execute("select api.upsert_webinar(%s, 'Race')", (W,))
    ids = {name: create_user(admin) for name in ("newcomer", "registrant", "viewer", "asker")}
    with act_as(db, ids["registrant"], commit=True) as c:
        c.execute("select api.register(%s)", (W,))
    for name in ("viewer", "asker"):
        with act_as(db, ids[name], commit=True) as c:
            c.execute("select api.track_access(%s)", (W,))
    with act_as(db, ids["asker"], commit=True) as c:
        row = c.execute("select api.question_ask(%s, 'why?')", (W,)).fetchone()
    assert row is not None
    ids["question"] = row[0]["id"]
    return ids


# (who is deleted, the call they make while the delete is in flight)
CALLS: dict[str, tuple[str, str, Callable[[dict[str, Any]], tuple[Any, ...]]]] = {
    # auto entry registers: the registration insert would meet the deleted row
    "track_access, first entry": ("newcomer", "api.track_access(%s)", lambda ids: (W,)),
    # registered, new page load: the registration update waits for the cascade, then the
    # new session's insert would meet the deleted row
    "track_access, new session": ("registrant", "api.track_access(%s)", lambda ids: (W,)),
    "chat_send": ("viewer", "api.chat_send(%s, 'hi')", lambda ids: (W,)),
    "question_ask": ("viewer", "api.question_ask(%s, 'how?')", lambda ids: (W,)),
    "question_vote": ("viewer", "api.question_vote(%s)", lambda ids: (ids["question"],)),
}


def _wait_blocked(admin: psycopg.Connection[Any], pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute("select cardinality(pg_blocking_pids(%s))", (pid,)).fetchone()
        if row and row[0]:
            return
        time.sleep(0.01)
    pytest.fail("the call never waited for the delete")


@pytest.mark.parametrize("case", list(CALLS))
def test_a_call_racing_the_deletion_of_its_user_answers_401_user_not_found(
    admin_conn: psycopg.Connection[Any], db: psycopg.Connection[Any], eventlive_db: Any, case: str
) -> None:
    ids = _setup(admin_conn, db)
    who, call, args = CALLS[case]
    uid: uuid.UUID = ids[who]
    answer: dict[str, Any] = {}

    def run() -> None:
        try:
            with act_as(db, uid, commit=True) as c:
                answer["row"] = c.execute(f"select {call}", args(ids)).fetchone()
        except psycopg.Error as exc:
            answer["error"] = (exc.sqlstate, exc.diag.message_detail, str(exc))

    with psycopg.connect(eventlive_db.admin_dsn) as deleter:
        deleter.execute("delete from auth.users where id = %s", (uid,))  # open transaction
        caller = threading.Thread(target=run)
        caller.start()
        _wait_blocked(admin_conn, db.info.backend_pid)
        deleter.commit()
        caller.join(10)
    assert not caller.is_alive()
    assert answer.get("error", answer)[:2] == ("PT401", "user_not_found"), answer
    assert "violates" not in answer["error"][2]
