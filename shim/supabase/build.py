"""Build a database shaped like a Supabase project's (``shim.supabase.shape``), for tests.

``build_roles`` runs once per cluster (roles are cluster-wide), as the cluster's
superuser, which must be named ``supabase_admin`` as on Supabase (initdb ``-U``);
``build_database`` once per database (a template: clones inherit it), as that superuser.
``grant_older_privileges`` plants what an older project's ``postgres`` still holds: CREATE
on ``auth`` and ``realtime`` and membership of their owners (Supabase revoked both in
2024-25).

Emulated, since supautils is not here: Supabase lets ``postgres`` create policies on
``realtime.messages`` through supautils' policy grants. Here ``postgres`` is a member of
``supabase_realtime_admin`` instead, which allows more than supautils does; the tests
compare every Supabase object before and after a migration, so anything beyond policies
that a migration changed there would still show.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from shim.supabase.shape import (
    AUTH_ADMIN,
    AUTH_USERS_COMMENT,
    MESSAGES_TABLE,
    MIGRATOR,
    REALTIME_ADMIN,
)

Conn = psycopg.Connection[TupleRow]

# Role attributes as on a Supabase project today.
_ROLES = sql.SQL("""
do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'postgres') then
        create role postgres login createrole createdb replication bypassrls inherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
        create role anon nologin inherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
        create role authenticated nologin inherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
        create role service_role nologin inherit bypassrls;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'supabase_auth_admin') then
        create role supabase_auth_admin login noinherit createrole;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'supabase_realtime_admin') then
        create role supabase_realtime_admin nologin noinherit;
    end if;
end
$roles$;
grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres with admin option;
-- supautils' policy grants on realtime.messages, emulated (see the module docstring).
grant supabase_realtime_admin to postgres;
""")

# GoTrue's auth.users today: 35 columns (its migrations up to 2025).
_AUTH = sql.SQL("""
create schema auth authorization supabase_auth_admin;
grant usage on schema auth to anon, authenticated, service_role, postgres;
set role supabase_auth_admin;
create table auth.users (
    instance_id uuid,
    id uuid not null primary key,
    aud varchar(255),
    role varchar(255),
    email varchar(255),
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    invited_at timestamptz,
    confirmation_token varchar(255),
    confirmation_sent_at timestamptz,
    recovery_token varchar(255),
    recovery_sent_at timestamptz,
    email_change_token_new varchar(255),
    email_change varchar(255),
    email_change_sent_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz,
    updated_at timestamptz,
    phone text unique default null,
    phone_confirmed_at timestamptz,
    phone_change text default '',
    phone_change_token varchar(255) default '',
    phone_change_sent_at timestamptz,
    confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
    email_change_token_current varchar(255) default '',
    email_change_confirm_status smallint default 0
        check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
    banned_until timestamptz,
    reauthentication_token varchar(255) default '',
    reauthentication_sent_at timestamptz,
    is_sso_user boolean not null default false,
    deleted_at timestamptz,
    is_anonymous boolean not null default false
);
create index users_instance_id_idx on auth.users (instance_id);
comment on table auth.users is {users_comment};
alter table auth.users enable row level security;
-- postgres keeps DML on auth tables (the 2024-25 changes took DDL and ownership), and
-- what projects rely on: foreign keys to auth.users and triggers on it (profiles).
grant select, insert, update, delete, references, trigger on auth.users to postgres;
create function auth.uid() returns uuid language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;
create function auth.role() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;
create function auth.jwt() returns jsonb language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;
create function auth.email() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;
reset role;
""")

# Realtime's tenant schema today: messages partitioned by day on inserted_at.
_REALTIME = sql.SQL("""
create schema realtime;
grant usage on schema realtime to postgres, anon, authenticated, service_role;
{messages}
create function realtime.topic() returns text language sql stable as $$
    select nullif(current_setting('realtime.topic', true), '')::text
$$;
create function realtime.send(
    payload jsonb, event text, topic text, private boolean default true
) returns void language plpgsql as $$
declare
    message_id uuid := gen_random_uuid();
begin
    begin
        perform set_config('realtime.topic', topic, true);
        insert into realtime.messages (id, payload, event, topic, private, extension)
        values (
            message_id,
            case when payload ? 'id' then payload
                 else jsonb_set(payload, '{{id}}', to_jsonb(message_id)) end,
            event, topic, private, 'broadcast'
        );
    exception when others then
        raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
    end;
end
$$;
alter table realtime.messages owner to supabase_realtime_admin;
""")

_OLDER = sql.SQL("""
grant create on schema auth, realtime to postgres;
grant supabase_auth_admin, supabase_realtime_admin to postgres;
""")
# Memberships are cluster-wide: undo the one today's shape lacks when the older database
# is done with (the CREATE grants go with their database).
_OLDER_UNDONE = sql.SQL("revoke supabase_auth_admin from postgres")


def build_roles(conn: Conn) -> None:
    """Supabase's roles, created where absent (cluster-wide; run as ``supabase_admin``)."""
    conn.execute(_ROLES)


def build_database(conn: Conn, *, today: dt.date | None = None) -> None:
    """Schemas ``auth`` and ``realtime`` as on a Supabase project, with Realtime's daily
    partitions of ``realtime.messages`` from three days ago to three days ahead."""
    conn.execute(_AUTH.format(users_comment=sql.Literal(AUTH_USERS_COMMENT)))
    conn.execute(_REALTIME.format(messages=sql.SQL(MESSAGES_TABLE)))
    day = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=3)
    for _ in range(7):
        partition = sql.Identifier("realtime", f"messages_{day:%Y_%m_%d}")
        conn.execute(
            sql.SQL(
                "create table {} partition of realtime.messages for values from ({}) to ({})"
            ).format(
                partition,
                sql.Literal(day.isoformat()),
                sql.Literal((day + dt.timedelta(days=1)).isoformat()),
            )
        )
        conn.execute(
            sql.SQL("alter table {} owner to {}").format(partition, sql.Identifier(REALTIME_ADMIN))
        )
        day += dt.timedelta(days=1)


def grant_older_privileges(conn: Conn) -> None:
    """What an older project's ``postgres`` still holds (see the module docstring)."""
    conn.execute(_OLDER)


def revoke_older_privileges(conn: Conn) -> None:
    """Undo ``grant_older_privileges``'s cluster-wide part (run when that database is done)."""
    conn.execute(_OLDER_UNDONE)


def hand_database_to_migrator(conn: Conn, dbname: str) -> None:
    """The database belongs to ``postgres``, as on Supabase (CREATE for its schemas)."""
    conn.execute(
        sql.SQL("alter database {} owner to {}").format(
            sql.Identifier(dbname), sql.Identifier(MIGRATOR)
        )
    )


__all__ = [
    "AUTH_ADMIN",
    "build_database",
    "build_roles",
    "grant_older_privileges",
    "hand_database_to_migrator",
    "revoke_older_privileges",
]
