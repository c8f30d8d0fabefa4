"""On a Supabase project: a project stand-in where Supabase's own object belongs.

Earlier texts of ``sql/0001`` and ``sql/0004`` decided by a comment's text what was theirs:
on an older Supabase project (its ``postgres`` still holding CREATE on ``auth`` and
``realtime`` and the owners' roles) they put the stand-in comment on Supabase's
``auth.users`` and ``realtime.messages``, then dropped Supabase's ``realtime.messages``
(partitioned, owned by ``supabase_realtime_admin``) and created a plain copy.

These checks run only where ``shim.supabase.is_supabase`` says the database is a Supabase
project, and compare each object of ``shim.supabase.OWNED_OBJECTS`` with Supabase's:

- ``supabase-stand-in``: the object is owned by another role than Supabase's (a copy
  someone else made in its place), or ``realtime.messages`` is not partitioned;
- ``supabase-comment``: Supabase's object carries the project's stand-in comment.

Each finding gives the SQL that restores Supabase's state where that is knowable. Those
statements need the object's owner (``supabase_admin`` for a replaced table: on
Supabase's platform, through Supabase support).
"""

from __future__ import annotations

from psycopg import sql

from shim.doctor.model import Check, Conn, Finding, Scope, render
from shim.supabase import OWNED_OBJECTS, SupabaseObject, is_supabase
from shim.supabase.shape import MESSAGES_TABLE

STAND_IN_COMMENT = "Stand-in for Supabase"

_DESCRIBE = {
    "schema": """select pg_catalog.pg_get_userbyid(n.nspowner), null::"char",
                        pg_catalog.obj_description(n.oid, 'pg_namespace')
                 from pg_catalog.pg_namespace as n where n.nspname = %s""",
    "table": """select pg_catalog.pg_get_userbyid(c.relowner), c.relkind,
                       pg_catalog.obj_description(c.oid, 'pg_class')
                from pg_catalog.pg_class as c where c.oid = pg_catalog.to_regclass(%s)""",
    "function": """select pg_catalog.pg_get_userbyid(p.proowner), null::"char",
                          pg_catalog.obj_description(p.oid, 'pg_proc')
                   from pg_catalog.pg_proc as p where p.oid = pg_catalog.to_regprocedure(%s)""",
}

# Supabase's realtime.messages, for the restore script: Realtime recreates its daily
# partitions itself once the table exists again.
_MESSAGES = f"""alter table realtime.messages rename to messages_eventlive_copy;
alter index if exists realtime.messages_pkey rename to messages_eventlive_copy_pkey;
alter index if exists realtime.messages_inserted_at_topic_index
    rename to messages_eventlive_copy_topic_index;
{MESSAGES_TABLE}
alter table realtime.messages owner to {{owner}};
-- then, as postgres: eventlive db migrate (re-creates eventlive's policies on it); drop
-- realtime.messages_eventlive_copy once its rows (if any) are no longer wanted."""


def _restore(conn: Conn, obj: SupabaseObject) -> str:
    if obj.identity == "realtime.messages":
        return _MESSAGES.format(owner=render(conn, sql.Identifier(obj.owner)))
    return (
        f"-- not restorable from here: {obj.kind} {obj.identity} must be Supabase's own "
        f"(owner {obj.owner}); ask Supabase support to restore it"
    )


def _comment_fix(conn: Conn, obj: SupabaseObject) -> str:
    value = sql.Literal(obj.comment) if obj.comment is not None else sql.SQL("null")
    statement = sql.SQL("comment on {} {} is {};").format(
        sql.SQL(obj.kind), sql.SQL(obj.identity), value
    )
    return render(conn, statement) + f"  -- as {obj.owner}"


def check_supabase_objects(conn: Conn, _scope: Scope) -> list[Finding]:
    """Supabase's objects are Supabase's: owner, shape and comment (module docstring)."""
    if not is_supabase(conn):
        return []
    findings = []
    for obj in OWNED_OBJECTS:
        row = conn.execute(_DESCRIBE[obj.kind], (obj.identity,)).fetchone()
        if row is None:
            continue  # missing: nothing of ours stands there
        owner, relkind, comment = row
        unpartitioned = obj.identity == "realtime.messages" and relkind != "p"
        if owner != obj.owner or unpartitioned:
            shape = " and not partitioned by inserted_at" if unpartitioned else ""
            findings.append(
                Finding(
                    "supabase-stand-in",
                    obj.identity,
                    f"owned by {owner}, not by Supabase's {obj.owner}{shape}: a copy stands "
                    f"where Supabase's own {obj.kind} belongs (earlier eventlive migrations "
                    "replaced realtime.messages on older projects)",
                    _restore(conn, obj),
                )
            )
        elif isinstance(comment, str) and comment.startswith(STAND_IN_COMMENT):
            findings.append(
                Finding(
                    "supabase-comment",
                    obj.identity,
                    "Supabase's object carries eventlive's stand-in comment (written by an "
                    "earlier sql/0001 on an older project)",
                    _comment_fix(conn, obj),
                )
            )
    return findings


SUPABASE_CHECKS: tuple[Check, ...] = (
    Check(("supabase-stand-in", "supabase-comment"), check_supabase_objects),
)

__all__ = ["SUPABASE_CHECKS", "check_supabase_objects"]
