"""``eventlive doctor``'s equivalents of Supabase's database linter (splinter).

A DBA deploying on Supabase sees splinter's lints in the dashboard's security and
performance advisors; our own tool must catch the same things first. Each check below
is written from the lint's documented intent (github.com/supabase/splinter, ``lints/``),
scoped to the schemas ``eventlive doctor`` looks at (``Scope``), with the SQL that fixes
it (the lints about tables, policies and indexes are in ``shim.doctor.splinter_tables``).
The lints already covered by ``shim.doctor.checks`` keep their ids there:
0001 unindexed foreign keys -> ``fk-without-index``, 0003 auth_rls_initplan ->
``policy-bare-call``, 0007 / 0013 policies or tables without RLS -> ``rls-disabled``,
0011 for ``security definer`` functions -> ``definer-search-path``.

Not checked, and why:

- 0005 unused_index, 0020 table_bloat: statistics of a running database, not properties
  of a schema (on a freshly migrated database every index is "unused").
- 0022 extension_versions_outdated, 0025 storage buckets, 0019 pgmq, 0026 / 0027
  pg_graphql: Supabase services and extensions we do not use.
- 0029 authenticated_security_definer_function_executable: our API *is* ``security
  definer`` functions granted to ``authenticated`` that do their own checks, proven by
  the RPC attack matrix (tests/sql/test_rls_rpc.py). Splinter reports it only for
  schemas listed in ``pgrst.db_schemas``; on Supabase with ``api`` exposed it lists every
  api function, by design. Its ``anon`` twin (0028) is checked: ``definer-anon-execute``.
"""

from __future__ import annotations

from psycopg import sql

from shim.doctor.model import Check, Conn, Finding, Scope, display, ident, render
from shim.doctor.splinter_tables import (
    POLICY_ROLES,
    check_duplicate_indexes,
    check_fk_to_auth_unique,
    check_multiple_permissive,
    check_primary_keys,
    check_reg_columns,
    check_rls_without_policy,
)

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
            render(
                conn,
                sql.SQL("alter view {} set (security_invoker = on);").format(ident((schema, view))),
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
        relation = ident((schema, name))
        if kind in _API_KIND:
            check, label, why = _API_KIND[kind]
            keyword = "materialized view" if kind == "m" else "foreign table"
            fix = sql.SQL("alter {} {} set schema {};").format(
                sql.SQL(keyword), relation, sql.Identifier("eventlive")
            )
            findings.append(
                Finding(
                    check,
                    f"{label} {schema}.{name}",
                    f"in an exposed schema: {why}",
                    render(conn, fix) + "  -- and read it through an api function",
                )
            )
        elif reads_users:
            findings.append(
                Finding(
                    "auth-users-exposed",
                    f"view {schema}.{name}",
                    "a view of auth.users in an exposed schema: user e-mails and metadata "
                    "are one select away",
                    render(conn, sql.SQL("drop view {};").format(relation))
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
            f"extension {display(conn, name)}",
            "installed in schema public: its functions and types sit on every role's "
            "default search_path, where they shadow or can be shadowed",
            render(
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
    params = {"schemas": list(scope.schemas), "roles": POLICY_ROLES[:2]}
    for schema, table, policy, cmd, permissive, roles, qual, check, request_roles in conn.execute(
        _POLICY_TEXT, params
    ):
        obj = f"policy {display(conn, policy)} on {schema}.{table}"
        drop = render(
            conn,
            sql.SQL("drop policy {} on {};").format(sql.Identifier(policy), ident((schema, table))),
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
