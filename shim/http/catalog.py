"""The routable functions, read from pg_catalog at start and on reload.

A function is routable when it lives in an exposed schema, is a plain function
(``prokind = 'f'``), and at least one API role may use its schema and execute it.
``Catalog.load`` is the only catalog query; requests read the immutable ``Catalog``
object the app holds, which a reload replaces whole (NOTIFY ``eventlive_reload`` or
SIGHUP). The cache marker is ``@cache <seconds> [public] [room]`` on a line of the
function's comment: ``private, max-age`` per caller, or ``public`` for results shared by
every caller (only for functions whose answer does not depend on who asks); ``room`` keeps
an answer only until the webinar's next room event (``shim.http.cache.RoomClock``).

``@readers schema.fn(arg, ...)`` on another line makes a cached answer shared by everyone
the database says may read it: the call is made together with ``schema.fn`` (same
transaction, same caller, named arguments of the function), which returns
``{"roles": [...], "users": [...]}`` or null when the caller is not a reader itself, and
the shim serves that answer to those roles and users until it expires
(``shim.http.calls``). For answers that are the same for every reader: a webinar's stats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg
from psycopg import sql

RELOAD_CHANNEL = "eventlive_reload"

_CATALOG_SQL = """
select n.nspname, p.proname, p.provolatile::text, p.proretset,
       format_type(p.prorettype, null), p.prorettype = 'void'::regtype,
       p.prorettype in ('json'::regtype, 'jsonb'::regtype),
       p.proargnames, p.proargmodes::text[], p.pronargdefaults,
       array(select format_type(t, null) from unnest(p.proargtypes::oid[]) with ordinality u(t, i)
             order by i),
       pg_catalog.obj_description(p.oid, 'pg_proc')
  from pg_catalog.pg_proc p
  join pg_catalog.pg_namespace n on n.oid = p.pronamespace
 where n.nspname = any(%(schemas)s) and p.prokind = 'f'
   and exists (select from unnest(%(roles)s::text[]) r(name)
                where pg_catalog.has_schema_privilege(r.name, n.oid, 'USAGE')
                  and pg_catalog.has_function_privilege(r.name, p.oid, 'EXECUTE'))
 order by n.nspname, p.proname, p.oid
"""

# Role-level statement_timeout (ALTER ROLE ... SET) does not follow SET ROLE, so the
# shim applies it itself, like PostgREST does with role settings.
_ROLE_SETTINGS_SQL = """
select r.rolname, s.setconfig
  from pg_catalog.pg_db_role_setting s
  join pg_catalog.pg_roles r on r.oid = s.setrole
 where r.rolname = any(%(roles)s)
   and s.setdatabase in (0, (select oid from pg_catalog.pg_database
                              where datname = current_database()))
 order by s.setdatabase
"""

_CACHE_MARK = re.compile(r"@cache\s+(\d+)(\s+public)?(\s+room)?", re.IGNORECASE)
_READERS_MARK = re.compile(
    r"@readers\s+([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\(\s*([a-z_][a-z0-9_]*(?:\s*,\s*[a-z_][a-z0-9_]*)*)?\s*\)",
    re.IGNORECASE,
)
_INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One input argument: its name, SQL type text (from format_type) and default-ness."""

    name: str
    type: str
    has_default: bool

    @property
    def base(self) -> str:
        """The element type for arrays, else the type itself."""
        return self.type[:-2] if self.is_array else self.type

    @property
    def is_array(self) -> bool:
        """One-dimensional array type (``format_type`` writes ``x[]``)."""
        return self.type.endswith("[]")


@dataclass
class Routine:
    """A routable function with its precomposed call statements (per argument subset)."""

    schema: str
    name: str
    volatility: str  # i | s | v
    returns_set: bool
    returns_void: bool
    returns_json: bool
    return_type: str
    args: tuple[Arg, ...]
    comment: str | None
    cache_seconds: int | None = None
    cache_public: bool = False
    # ``@cache <s> room``: the answer changes with the webinar's room events, so a cached
    # one is served only until the next event (NOTIFY eventlive_room), within the seconds.
    cache_room: bool = False
    # ``@readers``: (schema, function, argument names) of the readers function.
    readers: tuple[str, str, tuple[str, ...]] | None = None
    _statements: dict[tuple[str, ...], bytes] = field(default_factory=dict)
    _shared_statements: dict[tuple[str, ...], bytes] = field(default_factory=dict)

    @property
    def readonly(self) -> bool:
        """Stable or immutable: callable with GET, run read-only."""
        return self.volatility in ("s", "i")

    @cached_property
    def by_name(self) -> dict[str, Arg]:
        """Arguments by name."""
        return {a.name: a for a in self.args}

    @cached_property
    def required(self) -> frozenset[str]:
        """Names of the arguments without a default."""
        return frozenset(a.name for a in self.args if not a.has_default)

    def statement(self, names: tuple[str, ...]) -> bytes:
        """The call statement for the given argument names (catalog order), composed once.

        Names enter as identifiers; values as parameters ``$n`` cast to the declared types.
        """
        stmt = self._statements.get(names)
        if stmt is None:
            stmt = self._compose(names)
            self._statements[names] = stmt
        return stmt

    def shared_statement(self, names: tuple[str, ...]) -> bytes | None:
        """The call together with its ``@readers`` function, as one JSON text
        ``{"body": <answer>, "readers": <readers>}``; None when the function has no readers
        marker or a readers argument is not among ``names``."""
        if self.readers is None or not self.returns_json:
            return None
        schema, function, reader_args = self.readers
        if not set(reader_args) <= set(names):
            return None
        stmt = self._shared_statements.get(names)
        if stmt is None:
            position = {n: i for i, n in enumerate(names, 1)}
            readers = sql.SQL("{}.{}({})").format(
                sql.Identifier(schema),
                sql.Identifier(function),
                sql.SQL(", ").join(self._params([(n, position[n]) for n in reader_args])),
            )
            # [the answer as text, its readers]: the answer's own text, byte for byte.
            stmt = (
                sql.SQL("select pg_catalog.json_build_array(({})::text, {})::text")
                .format(self._call(names), readers)
                .as_bytes(None)
            )
            self._shared_statements[names] = stmt
        return stmt

    def _params(self, numbered: list[tuple[str, int]]) -> list[sql.Composable]:
        by_name = self.by_name
        # format_type() output is Postgres' own quoted type name, never client text.
        return [
            sql.SQL("{} => " + f"${i}" + "::{}").format(sql.Identifier(n), sql.SQL(by_name[n].type))
            for n, i in numbered
        ]

    def _call(self, names: tuple[str, ...]) -> sql.Composed:
        return sql.SQL("{}.{}({})").format(
            sql.Identifier(self.schema),
            sql.Identifier(self.name),
            sql.SQL(", ").join(self._params([(n, i) for i, n in enumerate(names, 1)])),
        )

    def _compose(self, names: tuple[str, ...]) -> bytes:
        call = self._call(names)
        if self.returns_void:
            stmt = sql.SQL("select {}").format(call)
        elif self.returns_set:
            stmt = sql.SQL("select coalesce(json_agg(_r), '[]')::text from {} _r").format(call)
        elif self.returns_json:
            stmt = sql.SQL("select {}::text").format(call)
        else:
            stmt = sql.SQL("select to_json({})::text").format(call)
        return stmt.as_bytes(None)


def int_range(type_name: str) -> tuple[int, int] | None:
    """Bounds of an integer type, None for other types."""
    return _INT_RANGES.get(type_name)


@dataclass(frozen=True)
class Catalog:
    """Routines by (schema, name) and the statement_timeout of each API role."""

    routines: dict[tuple[str, str], list[Routine]]
    role_timeouts: dict[str, str]
    loaded: bool = True

    def find(self, schema: str, name: str) -> list[Routine]:
        """Overloads of ``schema.name`` (empty when not routable)."""
        return self.routines.get((schema, name), [])

    def schema_routines(self, schema: str) -> list[Routine]:
        """All routines of ``schema`` (OpenAPI)."""
        return [r for (s, _), rs in self.routines.items() if s == schema for r in rs]


EMPTY = Catalog({}, {}, loaded=False)


def _routine(row: tuple[Any, ...]) -> Routine:
    (
        schema,
        name,
        vol,
        retset,
        rettype,
        is_void,
        is_json,
        argnames,
        modes,
        ndefaults,
        types,
        comment,
    ) = row
    if modes is None:
        names = list(argnames or [])[: len(types)]
    else:
        names = [n for n, m in zip(argnames or [], modes, strict=False) if m in ("i", "b", "v")]
    names += [""] * (len(types) - len(names))
    first_default = len(types) - (ndefaults or 0)
    args = tuple(
        Arg(n, t, i >= first_default) for i, (n, t) in enumerate(zip(names, types, strict=True))
    )
    routine = Routine(schema, name, vol, retset, is_void, is_json, rettype, args, comment)
    mark = _CACHE_MARK.search(comment or "")
    if mark:
        routine.cache_seconds = int(mark.group(1))
        routine.cache_public = bool(mark.group(2))
        routine.cache_room = bool(mark.group(3)) and "webinar_id" in {a.name for a in args}
    readers = _READERS_MARK.search(comment or "")
    if readers:
        arg_names = tuple(a.strip() for a in (readers.group(3) or "").split(",") if a.strip())
        if set(arg_names) <= {a.name for a in args}:
            routine.readers = (readers.group(1), readers.group(2), arg_names)
    return routine


async def load(
    conn: psycopg.AsyncConnection[Any],
    schemas: tuple[str, ...],
    roles: tuple[str, ...],
    default_timeout: str,
) -> Catalog:
    """Read the catalog over ``conn``; unnamed-argument functions are skipped (not callable
    by name, as in PostgREST)."""
    routines: dict[tuple[str, str], list[Routine]] = {}
    cur = await conn.execute(_CATALOG_SQL, {"schemas": list(schemas), "roles": list(roles)})
    for row in await cur.fetchall():
        routine = _routine(row)
        if any(not a.name for a in routine.args):
            continue
        routines.setdefault((routine.schema, routine.name), []).append(routine)
    timeouts = dict.fromkeys(roles, default_timeout)
    cur = await conn.execute(_ROLE_SETTINGS_SQL, {"roles": list(roles)})
    for role, config in await cur.fetchall():
        for item in config or []:
            key, _, value = item.partition("=")
            if key == "statement_timeout":
                timeouts[role] = value
    return Catalog(routines, timeouts)
