"""The pytest kit: isolation between tests, acting as API roles under RLS, helpers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from shim.testing import (
    act_as,
    as_anon,
    as_service_role,
    assert_rls_enabled,
    create_user,
    freeze_now,
    unfreeze_now,
)
from shim.testing.plugin import EventliveDatabase, EventliveServer

Conn = psycopg.Connection[tuple[Any, ...]]

# The same id in every run of the isolation test below.
MARKER_USER = uuid.UUID("00000000-0000-4000-8000-00000000beef")
# authenticator itself may not use schema auth: read the claims setting directly.
CLAIMS_AND_ROLE = "select current_user, coalesce(current_setting('request.jwt.claims', true), '')"


@pytest.mark.parametrize("attempt", [1, 2])
def test_write_in_one_test_is_invisible_in_the_next(admin_conn: Conn, attempt: int) -> None:
    # Both attempts insert the same row: the second passes only on a fresh clone.
    seen = admin_conn.execute("select count(*) from auth.users where id = %s", (MARKER_USER,))
    assert seen.fetchone() == (0,), f"attempt {attempt} saw a row written by an earlier test"
    create_user(admin_conn, user_id=MARKER_USER, email="marker@example.com")


def test_db_fixture_logs_in_as_non_superuser_authenticator(db: Conn) -> None:
    row = db.execute(
        "select current_user, rolsuper, rolbypassrls from pg_roles where rolname = current_user"
    ).fetchone()
    assert row == ("authenticator", False, False)


def test_eventlive_db_describes_its_clone(
    eventlive_db: EventliveDatabase, eventlive_server: EventliveServer, admin_conn: Conn
) -> None:
    assert admin_conn.execute("select current_database()").fetchone() == (eventlive_db.name,)
    assert eventlive_server.run_id in eventlive_db.name
    assert eventlive_db.clone_seconds > 0
    print(f"clone of the template took {1000 * eventlive_db.clone_seconds:.0f} ms")


def test_empty_database_is_empty_and_superuser(empty_database: str) -> None:
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("select to_regnamespace('eventlive')").fetchone() == (None,)
        assert conn.execute(
            "select rolsuper from pg_roles where rolname = current_user"
        ).fetchone() == (True,)


def test_eventlive_server_gives_a_superuser_dsn(eventlive_server: EventliveServer) -> None:
    with psycopg.connect(eventlive_server.admin_dsn()) as conn:
        assert conn.execute("select current_setting('is_superuser')").fetchone() == ("on",)
        assert conn.info.port == eventlive_server.port


def test_create_user_inserts_into_auth_users(admin_conn: Conn) -> None:
    user_id = create_user(admin_conn, email="ada@example.com", meta={"name": "Ada"})
    row = admin_conn.execute(
        "select email, raw_user_meta_data from auth.users where id = %s", (user_id,)
    ).fetchone()
    assert row == ("ada@example.com", {"name": "Ada"})


@pytest.fixture
def notes(admin_conn: Conn) -> tuple[uuid.UUID, uuid.UUID]:
    """A throwaway table with an owner-only policy, and one note for each of two users."""
    admin_conn.execute(
        """
        create table eventlive.notes (
            id bigint generated always as identity primary key,
            owner uuid not null default auth.uid(),
            body text not null
        );
        alter table eventlive.notes enable row level security;
        create policy "Owners see their notes" on eventlive.notes
            for all to authenticated using (owner = (select auth.uid()))
            with check (owner = (select auth.uid()));
        grant select, insert on eventlive.notes to authenticated, service_role;
        """
    )
    ada, bob = create_user(admin_conn), create_user(admin_conn)
    admin_conn.execute(
        "insert into eventlive.notes (owner, body) values (%s, 'ada'), (%s, 'bob')", (ada, bob)
    )
    return ada, bob


def test_acting_as_a_user_applies_rls(db: Conn, notes: tuple[uuid.UUID, uuid.UUID]) -> None:
    ada, bob = notes
    with act_as(db, ada):
        assert db.execute("select body from eventlive.notes").fetchall() == [("ada",)]
        assert db.execute("select auth.uid(), auth.role(), current_user").fetchone() == (
            ada,
            "authenticated",
            "authenticated",
        )
    with act_as(db, bob), pytest.raises(errors.InsufficientPrivilege):
        db.execute("insert into eventlive.notes (owner, body) values (%s, 'forged')", (ada,))


def test_anon_is_denied(db: Conn, notes: tuple[uuid.UUID, uuid.UUID]) -> None:
    with as_anon(db), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select body from eventlive.notes")
    with as_anon(db):
        assert db.execute("select auth.uid(), current_user").fetchone() == (None, "anon")


def test_service_role_bypasses_rls(db: Conn, notes: tuple[uuid.UUID, uuid.UUID]) -> None:
    with as_service_role(db):
        rows = db.execute("select body from eventlive.notes order by body").fetchall()
    assert rows == [("ada",), ("bob",)]


def test_act_as_rolls_back_unless_asked_to_commit(
    db: Conn, admin_conn: Conn, notes: tuple[uuid.UUID, uuid.UUID]
) -> None:
    ada, _bob = notes
    with act_as(db, ada):
        db.execute("insert into eventlive.notes (body) values ('draft')")
    with act_as(db, ada, commit=True):
        db.execute("insert into eventlive.notes (body) values ('kept')")
    bodies = admin_conn.execute(
        "select body from eventlive.notes where owner = %s order by body", (ada,)
    )
    assert bodies.fetchall() == [("ada",), ("kept",)]
    # After the block the connection is authenticator again, with no claims.
    assert db.execute(CLAIMS_AND_ROLE).fetchone() == ("authenticator", "")


def test_act_as_inside_a_transaction_restores_role_after_commit(
    db: Conn, notes: tuple[uuid.UUID, uuid.UUID]
) -> None:
    ada, _bob = notes
    db.execute("select 1")  # autocommit off: the connection is now inside a transaction
    with act_as(db, ada, commit=True):
        assert db.execute("select current_user").fetchone() == ("authenticated",)
    assert db.execute(CLAIMS_AND_ROLE).fetchone() == ("authenticator", "")


def test_act_as_passes_extra_claims(db: Conn) -> None:
    user = uuid.uuid4()
    with act_as(db, user, claims={"email": "x@example.com", "aal": "aal2"}):
        claims = db.execute("select auth.jwt()").fetchone()
    assert claims == (
        {"sub": str(user), "role": "authenticated", "email": "x@example.com", "aal": "aal2"},
    )


def test_freeze_now_fixes_eventlive_now_for_every_role(admin_conn: Conn, db: Conn) -> None:
    frozen = dt.datetime(2026, 2, 6, 13, 30, tzinfo=dt.UTC)
    freeze_now(admin_conn, frozen)
    assert admin_conn.execute("select eventlive.now()").fetchone() == (frozen,)
    with act_as(db, uuid.uuid4()):
        assert db.execute("select eventlive.now()").fetchone() == (frozen,)
    freeze_now(admin_conn, "2026-02-06 15:00:00+00")
    assert admin_conn.execute(
        "select eventlive.now() = %s", (frozen + dt.timedelta(minutes=90),)
    ).fetchone() == (True,)
    unfreeze_now(admin_conn)
    assert admin_conn.execute("select eventlive.now() = now()").fetchone() == (True,)


def test_assert_rls_enabled_passes_on_the_schema_and_names_offenders(admin_conn: Conn) -> None:
    assert_rls_enabled(admin_conn, "eventlive")
    admin_conn.execute("create table eventlive.open_table (id int)")
    with pytest.raises(AssertionError, match=r"eventlive\.open_table"):
        assert_rls_enabled(admin_conn, "eventlive")
    with pytest.raises(AssertionError, match="no tables"):
        assert_rls_enabled(admin_conn, "no_such_schema")
