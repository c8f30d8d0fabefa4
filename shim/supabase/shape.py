"""Our model of a Supabase project's database: who owns what, as far as eventlive cares.

Written from Supabase's published init scripts (supabase/postgres), GoTrue's migrations
(supabase/auth) and Realtime's tenant schema (supabase/realtime), as of 2025; our own
model, not their SQL. The facts that matter to eventlive:

- The bootstrap superuser is ``supabase_admin``. ``postgres``, the role a DBA migrates as,
  is not a superuser (createrole, createdb, replication, bypassrls) and is a member of
  ``anon``, ``authenticated`` and ``service_role`` (INHERIT roles there).
- Schema ``auth`` and its tables belong to ``supabase_auth_admin`` (GoTrue);
  ``realtime.messages`` to ``supabase_realtime_admin`` (Realtime), partitioned by day on
  ``inserted_at``. ``postgres`` has no CREATE on those schemas (revoked in 2024-25) and
  owns none of their objects; Supabase's supautils lets it manage policies on
  ``realtime.messages``.

``OWNED_OBJECTS`` lists the objects that eventlive's stand-ins mirror on plain
PostgreSQL (``sql/0001_supabase_compat.sql``) with their owner on Supabase: ``doctor``
reports a stand-in found where Supabase's own object belongs, and says how to restore it.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

SUPERUSER = "supabase_admin"
MIGRATOR = "postgres"
AUTH_ADMIN = "supabase_auth_admin"
REALTIME_ADMIN = "supabase_realtime_admin"
# Roles whose presence (all of them) tells a Supabase project from plain PostgreSQL.
MARKER_ROLES = (SUPERUSER, AUTH_ADMIN, REALTIME_ADMIN)

# GoTrue's comment on auth.users (its first migration), and Realtime's on messages (none).
AUTH_USERS_COMMENT = "Auth: Stores user login data within a secure schema."

# Realtime's realtime.messages today (its partitions, one per day, are created by Realtime).
MESSAGES_TABLE = """create table realtime.messages (
    topic text not null,
    extension text not null,
    payload jsonb,
    event text,
    private boolean default false,
    updated_at timestamp without time zone not null default now(),
    inserted_at timestamp without time zone not null default now(),
    id uuid not null default gen_random_uuid(),
    primary key (id, inserted_at)
) partition by range (inserted_at);
create index messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
    where extension = 'broadcast' and private is true;
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to postgres, anon, authenticated, service_role;"""


@dataclass(frozen=True)
class SupabaseObject:
    """An object Supabase owns that eventlive's plain-PostgreSQL stand-ins mirror.

    ``kind`` and ``identity`` are written as in ``eventlive_migrations.objects``
    (``regclass`` / ``regprocedure`` text); ``owner`` is its owner on Supabase;
    ``comment`` Supabase's own comment (None: it has none)."""

    kind: str
    identity: str
    owner: str
    comment: str | None = None


OWNED_OBJECTS: tuple[SupabaseObject, ...] = (
    SupabaseObject("schema", "auth", AUTH_ADMIN),
    SupabaseObject("table", "auth.users", AUTH_ADMIN, AUTH_USERS_COMMENT),
    SupabaseObject("function", "auth.uid()", AUTH_ADMIN),
    SupabaseObject("function", "auth.role()", AUTH_ADMIN),
    SupabaseObject("function", "auth.jwt()", AUTH_ADMIN),
    SupabaseObject("schema", "realtime", SUPERUSER),
    SupabaseObject("table", "realtime.messages", REALTIME_ADMIN),
    SupabaseObject("function", "realtime.topic()", SUPERUSER),
    SupabaseObject("function", "realtime.send(jsonb,text,text,boolean)", SUPERUSER),
)


def is_supabase(conn: psycopg.Connection[TupleRow]) -> bool:
    """True when the database's cluster has Supabase's roles (its superuser and the owners
    of ``auth`` and ``realtime``): then those schemas are Supabase's, never ours."""
    row = conn.execute(
        "select count(*) = cardinality(%s::text[]) from pg_catalog.pg_roles"
        " where rolname = any(%s::text[])",
        (list(MARKER_ROLES), list(MARKER_ROLES)),
    ).fetchone()
    return bool(row and row[0])


# Everything of schemas auth and realtime that must stay as Supabase made it: owners,
# comments, ACLs, RLS, partitioning, columns, function bodies. Policies are left out:
# managing policies on realtime.messages is what Supabase lets postgres do.
_SNAPSHOT = """
select 'schema ' || n.nspname, pg_catalog.concat_ws(' | ',
           pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl::text,
           pg_catalog.obj_description(n.oid, 'pg_namespace'))
from pg_catalog.pg_namespace as n where n.nspname = any(%(schemas)s)
union all
select 'relation ' || c.oid::pg_catalog.regclass::text, pg_catalog.concat_ws(' | ',
           c.relkind, pg_catalog.pg_get_userbyid(c.relowner), c.relacl::text,
           c.relrowsecurity, c.relforcerowsecurity,
           pg_catalog.pg_get_partkeydef(c.oid),
           pg_catalog.pg_get_expr(c.relpartbound, c.oid),
           pg_catalog.obj_description(c.oid, 'pg_class'),
           (select pg_catalog.string_agg(pg_catalog.concat_ws(' ', a.attname,
                        pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                        pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attacl::text),
                    ', ' order by a.attnum)
            from pg_catalog.pg_attribute as a
            left join pg_catalog.pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
            where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped),
           (select pg_catalog.string_agg(pg_catalog.pg_get_constraintdef(k.oid), ', '
                    order by k.conname)
            from pg_catalog.pg_constraint as k where k.conrelid = c.oid))
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s)
union all
select 'function ' || p.oid::pg_catalog.regprocedure::text, pg_catalog.concat_ws(' | ',
           pg_catalog.pg_get_userbyid(p.proowner), p.proacl::text, p.prosecdef,
           p.proconfig::text, pg_catalog.md5(p.prosrc),
           pg_catalog.obj_description(p.oid, 'pg_proc'))
from pg_catalog.pg_proc as p
join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
where n.nspname = any(%(schemas)s)
order by 1
"""


def snapshot(conn: psycopg.Connection[TupleRow]) -> dict[str, str]:
    """Supabase's ``auth`` and ``realtime`` objects described, to compare before and
    after a migration: object -> owner, ACL, RLS, partitioning, columns, body, comment."""
    rows = conn.execute(_SNAPSHOT, {"schemas": ["auth", "realtime"]}).fetchall()
    return {str(name): str(described) for name, described in rows}
