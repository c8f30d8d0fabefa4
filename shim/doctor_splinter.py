"""``eventlive doctor``'s equivalents of Supabase's database linter (splinter).

A DBA deploying on Supabase sees splinter's lints in the dashboard's security and
performance advisors; our own tool must catch the same things first. Each check below
is written from the lint's documented intent (github.com/supabase/splinter, ``lints/``),
scoped to the schemas ``eventlive doctor`` looks at (``Scope``), with the SQL that fixes
it. The lints already covered by ``shim.doctor_checks`` keep their ids there:
0001 unindexed foreign keys -> ``fk-without-index``, 0003 auth_rls_initplan ->
``policy-bare-call``, 0007 / 0013 policies or tables without RLS -> ``rls-disabled``,
0011 for ``security definer`` functions -> ``definer-search-path``.

Not checked, and why:

- 0005 unused_index, 0020 table_bloat: statistics of a running database, not properties
  of a schema (on a freshly migrated database every index is "unused").
- 0022 extension_versions_outdated, 0025 storage buckets, 0019 pgmq, 0026 / 0027
  pg_graphql: Supabase services and extensions we do not use.
- 0029 authenticated_security_definer_function_executable: our API *is* ``security
  definer`` functions granted to ``authenticated`` that do their own checks (DESIGN §4),
  proven by the RPC attack matrix (tests/test_rls_rpc.py). Splinter reports it only for
  schemas listed in ``pgrst.db_schemas``; on Supabase with ``api`` exposed it lists every
  api function, by design. Its ``anon`` twin (0028) is checked: ``definer-anon-execute``.
"""

from __future__ import annotations

from psycopg import sql

from shim.doctor_checks import Check, Conn, Finding, Scope, _display, _ident, _render

# -- 0011 function_search_path_mutable ---------------------------------------------------

_MUTABLE_PATH = """
select p.oid::pg_catalog.regprocedure::text, p.prokind
from pg_catalog.pg_proc as p
join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
where n.nspname = any(%(schemas)s) and not p.prosecdef  -- definers: definer-search-path
  and p.prokind in ('f', 'p')
  and not exists (select from unnest(p.proconfig) as s where s like 'search\\_path=%%')
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                    and e.objid = p.oid and e.deptype = 'e')
order by 1
"""


def check_function_search_path(conn: Conn, scope: Scope) -> list[Finding]:
    """Every function of our schemas pins ``search_path`` (splinter 0011)."""
    findings = []
    for signature, kind in conn.execute(_MUTABLE_PATH, {"schemas": scope.all_schemas}):
        keyword = "procedure" if kind == "p" else "function"
        findings.append(
            Finding(
                "function-search-path",
                f"{keyword} {signature}",
                "search_path is not set: names in its body resolve through the caller's "
                "search_path, which the caller may point at its own objects",
                f"alter {keyword} {signature} set search_path = '';"
                "  -- and schema-qualify every name in its body",
            )
        )
    return findings


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
            _render(
                conn,
                sql.SQL("alter table {} add primary key (...);").format(_ident((schema, table))),
            )
            + "  -- name the columns that identify a row",
        )
        for schema, table in conn.execute(_NO_PRIMARY_KEY, {"schemas": list(scope.schemas)})
    ]


# -- 0006 multiple_permissive_policies, 0008 rls_enabled_no_policy -----------------------

# The roles requests run as, as splinter checks them (it adds Supabase's dashboard_user).
_POLICY_ROLES = ["anon", "authenticated", "authenticator", "dashboard_user"]

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
    params = {"schemas": list(scope.schemas), "roles": _POLICY_ROLES}
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
            _render(
                conn,
                sql.SQL("create policy {} on {} for select to authenticated using (...);").format(
                    sql.Identifier("Rows readable by their owner"), _ident((schema, table))
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
            _render(
                conn,
                sql.SQL("drop index concurrently if exists {};").format(_ident((schema, name))),
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


# -- 0010 security_definer_view, 0002 / 0016 / 0017 relations exposed in the API ---------

_DEFINER_VIEWS = """
select n.nspname, c.relname
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where c.relkind = 'v' and n.nspname = any(%(schemas)s)
  and not coalesce(c.reloptions @> array['security_invoker=true']
                   or c.reloptions @> array['security_invoker=on'], false)
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by 1, 2
"""


def check_definer_views(conn: Conn, scope: Scope) -> list[Finding]:
    """Views run as their caller (splinter 0010): a view runs as its owner by default,
    so RLS of the tables it reads does not bind the caller."""
    return [
        Finding(
            "security-definer-view",
            f"view {schema}.{view}",
            "runs with its owner's rights (no security_invoker): row level security of "
            "the tables it reads does not apply to its callers",
            _render(
                conn,
                sql.SQL("alter view {} set (security_invoker = on);").format(
                    _ident((schema, view))
                ),
            ),
        )
        for schema, view in conn.execute(_DEFINER_VIEWS, {"schemas": scope.all_schemas})
    ]


_API_RELATIONS = """
select n.nspname, c.relname, c.relkind,
       exists (select from pg_catalog.pg_depend as d
               join pg_catalog.pg_rewrite as w on w.oid = d.objid
               where d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                 and w.ev_class = c.oid
                 and d.refobjid = pg_catalog.to_regclass('auth.users')) as reads_users
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where c.relkind in ('m', 'f', 'v') and n.nspname = any(%(api)s)
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by 1, 2
"""
_API_KIND = {
    "m": (
        "materialized-view-in-api",
        "materialized view",
        "a materialized view has no row "
        "level security: every role that may select it reads every row",
    ),
    "f": (
        "foreign-table-in-api",
        "foreign table",
        "a foreign table has no row level security: every role that may select it reads every row",
    ),
}


def check_api_relations(conn: Conn, scope: Scope) -> list[Finding]:
    """The exposed schemas hold no materialized view or foreign table (splinter 0016,
    0017) and no view of ``auth.users`` (0002)."""
    findings = []
    for schema, name, kind, reads_users in conn.execute(
        _API_RELATIONS, {"api": list(scope.api_schemas)}
    ):
        ident = _ident((schema, name))
        if kind in _API_KIND:
            check, label, why = _API_KIND[kind]
            keyword = "materialized view" if kind == "m" else "foreign table"
            fix = sql.SQL("alter {} {} set schema {};").format(
                sql.SQL(keyword), ident, sql.Identifier("eventlive")
            )
            findings.append(
                Finding(
                    check,
                    f"{label} {schema}.{name}",
                    f"in an exposed schema: {why}",
                    _render(conn, fix) + "  -- and read it through an api function",
                )
            )
        elif reads_users:
            findings.append(
                Finding(
                    "auth-users-exposed",
                    f"view {schema}.{name}",
                    "a view of auth.users in an exposed schema: user e-mails and metadata "
                    "are one select away",
                    _render(conn, sql.SQL("drop view {};").format(ident))
                    + "  -- expose what is needed through a function or a profiles table",
                )
            )
    return findings


# -- 0014 extension_in_public ------------------------------------------------------------

_PUBLIC_EXTENSIONS = """
select x.extname from pg_catalog.pg_extension as x
join pg_catalog.pg_namespace as n on n.oid = x.extnamespace
where n.nspname = 'public' order by 1
"""


def check_extensions_in_public(conn: Conn, scope: Scope) -> list[Finding]:
    """No extension is installed in ``public`` (splinter 0014)."""
    return [
        Finding(
            "extension-in-public",
            f"extension {_display(conn, name)}",
            "installed in schema public: its functions and types sit on every role's "
            "default search_path, where they shadow or can be shadowed",
            _render(
                conn,
                sql.SQL(
                    "create schema if not exists extensions; alter extension {} set schema "
                    "extensions;"
                ).format(sql.Identifier(name)),
            ),
        )
        for (name,) in conn.execute(_PUBLIC_EXTENSIONS)
    ]


# -- 0015 rls_references_user_metadata, 0024 rls_policy_always_true ----------------------

_POLICY_TEXT = """
select n.nspname, c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles,
       coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), ''),
       coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), ''),
       array(select pg_catalog.to_regrole(r)::oid from unnest(%(roles)s::text[]) as r
             where pg_catalog.to_regrole(r) is not null)
from pg_catalog.pg_policy as p
join pg_catalog.pg_class as c on c.oid = p.polrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where (n.nspname = any(%(schemas)s) or c.oid = pg_catalog.to_regclass('realtime.messages'))
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by 1, 2, 3
"""
_TRUE = {"true", "(true)", "1=1", "(1=1)"}


def _squeeze(expression: str) -> str:
    return "".join(expression.lower().split())


def check_policy_texts(conn: Conn, scope: Scope) -> list[Finding]:
    """No policy reads ``user_metadata`` from the token (splinter 0015: users edit it
    themselves), and no permissive write policy for request roles is always true (0024)."""
    findings = []
    params = {"schemas": list(scope.schemas), "roles": _POLICY_ROLES[:2]}
    for schema, table, policy, cmd, permissive, roles, qual, check, request_roles in conn.execute(
        _POLICY_TEXT, params
    ):
        obj = f"policy {_display(conn, policy)} on {schema}.{table}"
        drop = _render(
            conn,
            sql.SQL("drop policy {} on {};").format(
                sql.Identifier(policy), _ident((schema, table))
            ),
        )
        if "user_metadata" in qual or "user_metadata" in check:
            findings.append(
                Finding(
                    "policy-user-metadata",
                    obj,
                    "reads user_metadata from the token: any user can change their own "
                    "user_metadata, so it proves nothing",
                    drop + "  -- and decide with app_metadata or a table the user cannot write",
                )
            )
        for_requests = 0 in roles or bool(set(roles) & set(request_roles))
        if not (permissive and for_requests):
            continue
        using_true = cmd in ("w", "d", "*") and _squeeze(qual) in _TRUE
        check_true = _squeeze(check) in _TRUE or (
            not check and (cmd == "a" or (cmd in ("w", "*") and _squeeze(qual) in _TRUE))
        )
        if using_true or check_true:
            findings.append(
                Finding(
                    "policy-always-true",
                    obj,
                    "a permissive write policy for request roles whose condition is always "
                    "true: row level security lets every such write through",
                    drop + "  -- and write a condition on the row's owner or webinar",
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
            _render(
                conn,
                sql.SQL("alter table {} alter column {} type text;").format(
                    _ident((schema, table)), sql.Identifier(column)
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
            f"constraint {_display(conn, name)} on {schema}.{table}",
            "references a unique constraint of an auth table that is not its primary key: "
            "Supabase Auth may drop it in an upgrade, and the migration then fails",
            _render(
                conn,
                sql.SQL("alter table {} drop constraint {};").format(
                    _ident((schema, table)), sql.Identifier(name)
                ),
            )
            + "  -- and reference auth.users (id) instead",
        )
        for schema, table, name in conn.execute(
            _FK_TO_AUTH_UNIQUE, {"schemas": list(scope.schemas)}
        )
    ]


# -- 0028 anon_security_definer_function_executable --------------------------------------

_ANON_DEFINERS = """
select p.oid::pg_catalog.regprocedure::text, p.prokind
from pg_catalog.pg_proc as p
join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
where p.prosecdef and n.nspname = any(%(api)s)
  and pg_catalog.to_regrole('anon') is not null
  and pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE')
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                    and e.objid = p.oid and e.deptype = 'e')
order by 1
"""


def check_anon_definers(conn: Conn, scope: Scope) -> list[Finding]:
    """No ``security definer`` function of an exposed schema is executable by ``anon``
    (splinter 0028): anyone holding the public anon key could call it."""
    findings = []
    for signature, kind in conn.execute(_ANON_DEFINERS, {"api": list(scope.api_schemas)}):
        keyword = "procedure" if kind == "p" else "function"
        findings.append(
            Finding(
                "definer-anon-execute",
                f"{keyword} {signature}",
                "security definer and executable by anon: anyone with the public anon key "
                "runs it with its owner's rights",
                f"revoke execute on {keyword} {signature} from anon, public;",
            )
        )
    return findings


SPLINTER_CHECKS: tuple[Check, ...] = (
    Check(("function-search-path",), check_function_search_path),
    Check(("no-primary-key",), check_primary_keys),
    Check(("multiple-permissive-policies",), check_multiple_permissive),
    Check(("rls-no-policy",), check_rls_without_policy),
    Check(("duplicate-index",), check_duplicate_indexes),
    Check(("security-definer-view",), check_definer_views),
    Check(
        ("materialized-view-in-api", "foreign-table-in-api", "auth-users-exposed"),
        check_api_relations,
    ),
    Check(("extension-in-public",), check_extensions_in_public),
    Check(("policy-user-metadata", "policy-always-true"), check_policy_texts),
    Check(("reg-type-column",), check_reg_columns),
    Check(("fk-to-auth-unique",), check_fk_to_auth_unique),
    Check(("definer-anon-execute",), check_anon_definers),
)
