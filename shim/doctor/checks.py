"""The rules ``eventlive doctor`` checks, one catalog query each.

Every check takes a read-only connection whose ``search_path`` is empty (so that
``regclass`` / ``regprocedure`` text and deparsed expressions come out schema-qualified)
and the ``Scope`` to look at, and returns ``Finding``s: a stable check id, the object, what
is wrong, and the SQL that fixes it. Schema names travel as query parameters; the fix
SQL is composed with ``psycopg.sql`` so that every identifier is quoted as it must be.

Deliberately not checked: ``force row level security``. RLS binds every role but the
table owner (and superusers / ``bypassrls`` roles); our owner is the migration role,
whose ``security definer`` functions are meant to pass RLS and do their own checks, so
forcing it would break them and protect nothing. What does matter is a role that
requests run as owning a table (RLS would not bind the very role it is meant for, and
it could disable it): ``rls-owner-bypass``.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from shim.doctor.index_checks import check_fk_indexes, check_invalid_indexes
from shim.doctor.model import Check, Conn, Finding, Scope, display, ident, render
from shim.doctor.policy_forms import unwrapped_calls, wrap_calls

__all__ = ["CHECKS", "Check", "Finding", "Scope", "run_checks"]

# Roles that requests run as (Supabase's and ours): RLS must bind them.
API_ROLES: tuple[str, ...] = ("anon", "authenticated", "authenticator")
REALTIME_MESSAGES = "realtime.messages"


# -- row level security -------------------------------------------------------------------

_RLS = """
select n.nspname, c.relname, c.relrowsecurity,
       pg_catalog.pg_get_userbyid(c.relowner) as owner,
       exists (select from unnest(%(api_roles)s::text[]) as r(name)
               where case when pg_catalog.to_regrole(r.name) is null then false  -- no such role
                          else pg_catalog.pg_has_role(r.name, c.relowner, 'MEMBER') end
       ) as api_owned
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where c.relkind in ('r', 'p')
  and (n.nspname = any(%(schemas)s) or c.oid = pg_catalog.to_regclass(%(realtime)s))
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
order by n.nspname, c.relname
"""


def check_rls(conn: Conn, scope: Scope) -> list[Finding]:
    """Every table of the managed schemas (and ``realtime.messages``) has RLS enabled and
    is not owned by a role requests run as."""
    findings = []
    params = {
        "schemas": list(scope.schemas),
        "realtime": REALTIME_MESSAGES,
        "api_roles": list(API_ROLES),
    }
    for schema, table, enabled, owner, api_owned in conn.execute(_RLS, params):
        name = ident((schema, table))
        obj = f"{schema}.{table}"
        if not enabled:
            findings.append(
                Finding(
                    "rls-disabled",
                    obj,
                    "row level security is off: every role granted access sees and changes every row",
                    render(
                        conn,
                        sql.SQL("alter table {} enable row level security;").format(name),
                    )
                    + "  -- then create policies for the roles that need rows",
                )
            )
        if api_owned:
            findings.append(
                Finding(
                    "rls-owner-bypass",
                    obj,
                    f"owned by {owner}, a role requests run as (or can become): an owner "
                    "bypasses row level security unless forced, and may disable it or drop "
                    "the table",
                    render(conn, sql.SQL("alter table {} owner to postgres;").format(name))
                    + "  -- or the role that runs migrations",
                )
            )
    return findings


_POLICIES = """
select n.nspname, c.relname, p.polname,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid),
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid),
       p.polroles = array[0::oid] as to_public
from pg_catalog.pg_policy as p
join pg_catalog.pg_class as c on c.oid = p.polrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s) or c.oid = pg_catalog.to_regclass(%(realtime)s)
order by n.nspname, c.relname, p.polname
"""


def check_policies(conn: Conn, scope: Scope) -> list[Finding]:
    """Policies call auth functions and settings once per statement, and name their roles."""
    findings = []
    params = {"schemas": list(scope.schemas), "realtime": REALTIME_MESSAGES}
    for schema, table, policy, qual, check, to_public in conn.execute(_POLICIES, params):
        obj = f"policy {display(conn, policy)} on {schema}.{table}"
        alter = sql.SQL("alter policy {} on {}").format(
            sql.Identifier(policy), ident((schema, table))
        )
        bare = [c.text for c in unwrapped_calls(qual or "") + unwrapped_calls(check or "")]
        if bare:
            clauses = [alter]
            if qual:
                clauses.append(sql.SQL("using ({})").format(sql.SQL(wrap_calls(qual))))
            if check:
                clauses.append(sql.SQL("with check ({})").format(sql.SQL(wrap_calls(check))))
            findings.append(
                Finding(
                    "policy-bare-call",
                    obj,
                    f"calls {', '.join(dict.fromkeys(bare))} once per row: wrap each in "
                    "(select ...) so Postgres runs it once per statement (initplan)",
                    render(conn, sql.SQL(" ").join(clauses)) + ";",
                )
            )
        if to_public:
            findings.append(
                Finding(
                    "policy-to-public",
                    obj,
                    "applies to PUBLIC (every role, anon included): name the roles it is for",
                    render(conn, sql.SQL("{} to authenticated;").format(alter))
                    + "  -- or the roles it is meant for",
                )
            )
    return findings


# -- security definer functions ----------------------------------------------------------

_DEFINERS = """
select p.oid::pg_catalog.regprocedure::text, p.prokind,
       (select pg_catalog.string_agg(s, ', ') from unnest(p.proconfig) as s
        where s like 'search\\_path=%%')
from pg_catalog.pg_proc as p
join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
where p.prosecdef and n.nspname = any(%(schemas)s)
  and not coalesce(p.proconfig @> array['search_path=""'], false)
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                    and e.objid = p.oid and e.deptype = 'e')
order by 1
"""


def check_definers(conn: Conn, scope: Scope) -> list[Finding]:
    """``security definer`` functions pin ``search_path`` to empty."""
    findings = []
    for signature, kind, setting in conn.execute(_DEFINERS, {"schemas": scope.all_schemas}):
        keyword = "procedure" if kind == "p" else "function"
        now = f"has {setting}" if setting else "does not set search_path"
        findings.append(
            Finding(
                "definer-search-path",
                f"{keyword} {signature}",
                f"security definer {now}: a caller's objects can shadow the names it uses",
                f"alter {keyword} {signature} set search_path = '';"
                "  -- and schema-qualify every name in its body",
            )
        )
    return findings


# -- grants ------------------------------------------------------------------------------

_PUBLIC_EXECUTE = """
select p.oid::pg_catalog.regprocedure::text, p.prokind, n.nspname
from pg_catalog.pg_proc as p
join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
where n.nspname = any(%(schemas)s)
  and (p.proacl is null  -- null: the default privileges, under which PUBLIC may execute
       or exists (select from pg_catalog.aclexplode(p.proacl) as a
                  where a.grantee = 0 and a.privilege_type = 'EXECUTE'))
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                    and e.objid = p.oid and e.deptype = 'e')
order by 1
"""


def check_public_execute(conn: Conn, scope: Scope) -> list[Finding]:
    """No function of the managed or API schemas is executable by PUBLIC."""
    findings = []
    schemas = scope.all_schemas
    for signature, kind, schema in conn.execute(_PUBLIC_EXECUTE, {"schemas": schemas}):
        keyword = "procedure" if kind == "p" else "function"
        findings.append(
            Finding(
                "public-execute",
                f"{keyword} {signature}",
                "PUBLIC may execute it (the default for a new function): so may anon and "
                "every future role",
                f"revoke execute on {keyword} {signature} from public;"
                "  -- grant execute to the roles that need it; and once per schema: "
                + render(
                    conn,
                    sql.SQL(
                        "alter default privileges in schema {} revoke execute on functions "
                        "from public;"
                    ).format(sql.Identifier(schema)),
                ),
            )
        )
    return findings


# Table, sequence, column and schema privileges held directly by one grantee: a role's
# name, or 'public' (grantee 0 in an ACL). A role that does not exist holds nothing.
_GRANTS = """
with grantee as (
    select case when %(grantee)s::text = 'public' then 0::oid
                else pg_catalog.to_regrole(%(grantee)s::text)::oid end as oid
)
select 'schema' as kind, n.nspname as schema, null::name as rel, null::name as col,
       pg_catalog.string_agg(a.privilege_type, ', ' order by a.privilege_type) as privileges
from pg_catalog.pg_namespace as n, pg_catalog.aclexplode(n.nspacl) as a
where n.nspname = any(%(schemas)s) and a.grantee = (select oid from grantee)
group by n.nspname
union all
select case c.relkind when 'S' then 'sequence' else 'table' end, n.nspname, c.relname, null,
       pg_catalog.string_agg(a.privilege_type, ', ' order by a.privilege_type)
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace,
     pg_catalog.aclexplode(c.relacl) as a
where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
  and a.grantee = (select oid from grantee)
  and not exists (select from pg_catalog.pg_depend as e  -- not an extension's
                  where e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    and e.objid = c.oid and e.deptype = 'e')
group by c.relkind, n.nspname, c.relname
union all
select 'column', n.nspname, c.relname, t.attname,
       pg_catalog.string_agg(a.privilege_type, ', ' order by a.privilege_type)
from pg_catalog.pg_attribute as t
join pg_catalog.pg_class as c on c.oid = t.attrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace,
     pg_catalog.aclexplode(t.attacl) as a
where n.nspname = any(%(schemas)s) and not t.attisdropped and a.grantee = (select oid from grantee)
group by n.nspname, c.relname, t.attname
order by 2, 3 nulls first, 4 nulls first
"""


def _grant_findings(
    conn: Conn, scope: Scope, *, grantee: str, check: str, why: str
) -> list[Finding]:
    findings = []
    rows = conn.execute(_GRANTS, {"schemas": list(scope.schemas), "grantee": grantee})
    role = sql.SQL(grantee) if grantee == "public" else sql.Identifier(grantee)
    who = grantee.upper() if grantee == "public" else grantee
    for kind, schema, rel, col, privileges in rows:
        if kind == "schema":
            obj, target = f"schema {schema}", sql.SQL("schema {}").format(sql.Identifier(schema))
            revoke = sql.SQL("revoke all on {} from {};").format(target, role)
        elif kind == "column":
            obj = f"column {schema}.{rel}.{col}"
            revoke = sql.SQL("revoke all ({}) on table {} from {};").format(
                sql.Identifier(col), ident((schema, rel)), role
            )
        else:
            obj = f"{kind} {schema}.{rel}"
            revoke = sql.SQL("revoke all on {} {} from {};").format(
                sql.SQL(kind), ident((schema, rel)), role
            )
        findings.append(
            Finding(check, obj, f"{who} holds {privileges}: {why}", render(conn, revoke))
        )
    return findings


def check_public_grants(conn: Conn, scope: Scope) -> list[Finding]:
    """PUBLIC holds no privilege on the managed schemas or anything in them."""
    return _grant_findings(
        conn,
        scope,
        grantee="public",
        check="public-grant",
        why="every role, anon included, holds it too",
    )


def check_anon_grants(conn: Conn, scope: Scope) -> list[Finding]:
    """``anon`` holds no privilege on the managed schemas or anything in them."""
    return _grant_findings(
        conn,
        scope,
        grantee="anon",
        check="anon-grant",
        why="requests without a token reach private data only through API functions",
    )


# -- indexes -----------------------------------------------------------------------------

CHECKS: tuple[Check, ...] = (
    Check(("rls-disabled", "rls-owner-bypass"), check_rls),
    Check(("policy-bare-call", "policy-to-public"), check_policies),
    Check(("definer-search-path",), check_definers),
    Check(("public-execute",), check_public_execute),
    Check(("public-grant",), check_public_grants),
    Check(("anon-grant",), check_anon_grants),
    Check(("fk-without-index",), check_fk_indexes),
    Check(("invalid-index",), check_invalid_indexes),
)


def run_checks(conn: Conn, scope: Scope, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Every check's findings, in check order."""
    findings: list[Finding] = []
    for check in checks:
        findings.extend(check.run(conn, scope))
    return findings
