"""Splinter's lints about tables, policies and indexes (``shim.doctor.splinter`` has the
rest and the list): 0004 no primary key, 0006 multiple permissive policies, 0008 RLS
without a policy, 0009 duplicate indexes, 0018 reg* columns, 0021 foreign keys to
auth.users' unique columns."""

from __future__ import annotations

from psycopg import sql

from shim.doctor.model import Conn, Finding, Scope, display, ident, render

# -- 0004 no_primary_key -----------------------------------------------------------------

_NO_PRIMARY_KEY = """
select n.nspname, c.relname
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and not c.relispartition and n.nspname = any(%(schemas)s)
  and not exists (select from pg_catalog.pg_index as i
                  where i.indrelid = c.oid and i.indisprimary)
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by 1, 2
"""


def check_primary_keys(conn: Conn, scope: Scope) -> list[Finding]:
    """Every table of our schemas has a primary key (splinter 0004)."""
    return [
        Finding(
            "no-primary-key",
            f"{schema}.{table}",
            "no primary key: rows cannot be addressed one by one (updates, replication, "
            "Realtime) and duplicates go unnoticed",
            render(
                conn,
                sql.SQL("alter table {} add primary key (...);").format(ident((schema, table))),
            )
            + "  -- name the columns that identify a row",
        )
        for schema, table in conn.execute(_NO_PRIMARY_KEY, {"schemas": list(scope.schemas)})
    ]


# -- 0006 multiple_permissive_policies, 0008 rls_enabled_no_policy -----------------------

# The roles requests run as, as splinter checks them (it adds Supabase's dashboard_user).
POLICY_ROLES = ["anon", "authenticated", "authenticator", "dashboard_user"]

_MULTIPLE_PERMISSIVE = """
with cmds(cmd, name) as (
    values ('r', 'select'), ('a', 'insert'), ('w', 'update'), ('d', 'delete')
)
select n.nspname, c.relname, r.name, cmds.name,
       pg_catalog.array_agg(p.polname::text order by p.polname)
from pg_catalog.pg_policy as p
join pg_catalog.pg_class as c on c.oid = p.polrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join cmds on p.polcmd in (cmds.cmd, '*')
join unnest(%(roles)s::text[]) as r(name) on pg_catalog.to_regrole(r.name) is not null
where p.polpermissive and n.nspname = any(%(schemas)s)
  and (p.polroles @> array[0::oid] or pg_catalog.to_regrole(r.name)::oid = any(p.polroles))
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
group by n.nspname, c.relname, r.name, cmds.name
having count(*) > 1
order by 1, 2, 3, 4
"""


def check_multiple_permissive(conn: Conn, scope: Scope) -> list[Finding]:
    """At most one permissive policy per table, role and command (splinter 0006)."""
    params = {"schemas": list(scope.schemas), "roles": POLICY_ROLES}
    return [
        Finding(
            "multiple-permissive-policies",
            f"{schema}.{table} for {role} {command}",
            f"{len(policies)} permissive policies ({', '.join(policies)}) apply: each is "
            "evaluated for every row, and the loosest one decides",
            f"-- merge {', '.join(policies)} into one policy for {command} to {role} "
            "whose condition joins theirs with OR; then drop the others",
        )
        for schema, table, role, command, policies in conn.execute(_MULTIPLE_PERMISSIVE, params)
    ]


_RLS_WITHOUT_POLICY = """
select n.nspname, c.relname
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and c.relrowsecurity and n.nspname = any(%(schemas)s)
  and not exists (select from pg_catalog.pg_policy as p where p.polrelid = c.oid)
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by 1, 2
"""


def check_rls_without_policy(conn: Conn, scope: Scope) -> list[Finding]:
    """A table under RLS has at least one policy (splinter 0008)."""
    return [
        Finding(
            "rls-no-policy",
            f"{schema}.{table}",
            "row level security is on but no policy exists: every role but the owner sees "
            "nothing, which is seldom what was meant",
            render(
                conn,
                sql.SQL("create policy {} on {} for select to authenticated using (...);").format(
                    sql.Identifier("Rows readable by their owner"), ident((schema, table))
                ),
            )
            + "  -- or say in a comment that only definer functions read it",
        )
        for schema, table in conn.execute(_RLS_WITHOUT_POLICY, {"schemas": list(scope.schemas)})
    ]


# -- 0009 duplicate_index ----------------------------------------------------------------

_DUPLICATE_INDEXES = """
select n.nspname, c.relname,
       pg_catalog.array_agg(x.relname::text order by x.relname)
from pg_catalog.pg_index as i
join pg_catalog.pg_class as x on x.oid = i.indexrelid
join pg_catalog.pg_class as c on c.oid = i.indrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s) and i.indisvalid
group by n.nspname, c.relname, i.indkey::text, i.indclass::text, i.indcollation::text,
         i.indoption::text, x.relam, i.indisunique,
         coalesce(pg_catalog.pg_get_expr(i.indexprs, i.indrelid), ''),
         coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '')
having count(*) > 1
order by 1, 2, 3
"""


def check_duplicate_indexes(conn: Conn, scope: Scope) -> list[Finding]:
    """No two identical indexes on one table (splinter 0009)."""
    findings = []
    for schema, table, indexes in conn.execute(
        _DUPLICATE_INDEXES, {"schemas": list(scope.schemas)}
    ):
        keep, *extra = indexes
        drops = " ".join(
            render(
                conn,
                sql.SQL("drop index concurrently if exists {};").format(ident((schema, name))),
            )
            for name in extra
        )
        findings.append(
            Finding(
                "duplicate-index",
                f"index {schema}.{keep} on {schema}.{table}",
                f"identical to {', '.join(extra)}: every write maintains both, reads use one",
                drops + "  -- keep the one a constraint or an indexes/ file names",
            )
        )
    return findings


# -- 0018 unsupported_reg_types, 0021 fkey_to_auth_unique --------------------------------

_REG_COLUMNS = """
select n.nspname, c.relname, a.attname, t.typname
from pg_catalog.pg_attribute as a
join pg_catalog.pg_class as c on c.oid = a.attrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join pg_catalog.pg_type as t on t.oid = a.atttypid
where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'm')
  and n.nspname = any(%(schemas)s)
  and t.typname in ('regcollation', 'regconfig', 'regdictionary', 'regnamespace',
                    'regoper', 'regoperator', 'regproc', 'regprocedure')
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by 1, 2, 3
"""


def check_reg_columns(conn: Conn, scope: Scope) -> list[Finding]:
    """No column stores a ``reg*`` type that ``pg_upgrade`` refuses (splinter 0018)."""
    return [
        Finding(
            "reg-type-column",
            f"column {schema}.{table}.{column}",
            f"type {typname} stores an OID that pg_upgrade cannot carry over: the database "
            "cannot be upgraded in place",
            render(
                conn,
                sql.SQL("alter table {} alter column {} type text;").format(
                    ident((schema, table)), sql.Identifier(column)
                ),
            ),
        )
        for schema, table, column, typname in conn.execute(
            _REG_COLUMNS, {"schemas": list(scope.schemas)}
        )
    ]


_FK_TO_AUTH_UNIQUE = """
select n.nspname, c.relname, k.conname
from pg_catalog.pg_constraint as k
join pg_catalog.pg_class as c on c.oid = k.conrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join pg_catalog.pg_class as x on x.oid = k.conindid
where k.contype = 'f' and n.nspname = any(%(schemas)s)
  and k.confrelid in (select c2.oid from pg_catalog.pg_class as c2
                      join pg_catalog.pg_namespace as n2 on n2.oid = c2.relnamespace
                      where n2.nspname = 'auth')
  and not exists (select from pg_catalog.pg_index as i
                  where i.indexrelid = k.conindid and i.indisprimary)
order by 1, 2, 3
"""


def check_fk_to_auth_unique(conn: Conn, scope: Scope) -> list[Finding]:
    """Foreign keys into ``auth`` reference primary keys (splinter 0021): Supabase may
    drop or change ``auth``'s other unique constraints in an upgrade."""
    return [
        Finding(
            "fk-to-auth-unique",
            f"constraint {display(conn, name)} on {schema}.{table}",
            "references a unique constraint of an auth table that is not its primary key: "
            "Supabase Auth may drop it in an upgrade, and the migration then fails",
            render(
                conn,
                sql.SQL("alter table {} drop constraint {};").format(
                    ident((schema, table)), sql.Identifier(name)
                ),
            )
            + "  -- and reference auth.users (id) instead",
        )
        for schema, table, name in conn.execute(
            _FK_TO_AUTH_UNIQUE, {"schemas": list(scope.schemas)}
        )
    ]
