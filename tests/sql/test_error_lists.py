"""Each function comment's "Errors:" list is what the function can raise, read from the
migrated database's catalog so that it cannot drift: the (status, reason) pairs named in
the comment equal those of the ``raise`` statements in the function's body
(``pg_proc.prosrc``) and, transitively, in the bodies of the ``eventlive`` helpers it
calls. A helper raises each of its errors whatever its arguments (functions/00_helpers.sql
says so), which makes the call graph an exact account.

Two indirect forms are read too: PostgREST's ``raise sqlstate 'PGRST'`` (status and
reason in its JSON message, eventlive.check_rate_limit), and a raise of a reason held
in a variable (api.presence_ping): its reasons are the ``return '<reason>'`` values of
the text-returning helpers the function calls (eventlive.ping_core), their SQLSTATEs
what the helper with an ``out sqlstate`` (eventlive.ping_error) answers for each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

Pair = tuple[int, str]

RAISE = re.compile(r"\braise\b(.*?);", re.IGNORECASE | re.DOTALL)
CALL = re.compile(r"\beventlive\.(\w+)\s*\(", re.IGNORECASE)
LITERAL = r"'([a-z][a-z0-9_]*)'"


def status_of(sqlstate: str) -> int:
    """PostgREST's status for the SQLSTATEs our functions raise (PTnnn, class 22)."""
    if match := re.fullmatch(r"PT(\d{3})", sqlstate):
        return int(match.group(1))
    if sqlstate.startswith("22"):
        return 400
    raise AssertionError(f"no status known for SQLSTATE {sqlstate}: teach status_of")


def listed_errors(comment: str) -> set[Pair] | None:
    """The pairs of a comment's "Errors:" (or "Errors in this order:") sentence; None
    without one. Items are comma-separated; ``403 banned`` names a status, a bare
    ``invalid_title`` takes the previous item's; ``(401 user_not_found when ...)`` inside
    an item is one more pair; other words in parentheses are prose."""
    match = re.search(
        r"\bErrors[^:]*:(.*?)\.(?:\n|$)", comment.split("\n@", maxsplit=1)[0], re.DOTALL
    )
    if match is None:
        return None
    items, depth, start, text = [], 0, 0, match.group(1)
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    pairs: set[Pair] = set()
    status = None
    for raw in items:
        item = raw.strip()
        head = re.match(r"(\d{3})\s+([a-z][a-z0-9_]*)", item)
        if head:
            status = int(head.group(1))
            pairs.add((status, head.group(2)))
        elif re.match(r"[a-z]+_[a-z0-9_]+\b", item) and status is not None:
            pairs.add((status, item.split()[0]))
        for inner in re.findall(r"\(([^)]*)\)", item):
            pairs |= {(int(s), r) for s, r in re.findall(r"\b(\d{3})\s+([a-z][a-z0-9_]*)", inner)}
    return pairs


@dataclass
class Function:
    name: str  # regprocedure text
    source: str  # prosrc without comments
    returns_reason: bool  # returns text: an error reason (eventlive.ping_core)
    maps_reasons: bool  # has an out parameter sqlstate (eventlive.ping_error)


def catalog(conn: psycopg.Connection[Any]) -> dict[str, list[Function]]:
    """The functions of api and eventlive by (schema-qualified) name."""
    rows = conn.execute(
        """
        select n.nspname || '.' || p.proname, p.oid::regprocedure::text, p.prosrc,
            p.prorettype = 'text'::regtype and not p.proretset,
            coalesce('sqlstate' = any(p.proargnames), false)
        from pg_proc as p
        join pg_namespace as n on n.oid = p.pronamespace
        where n.nspname in ('api', 'eventlive')
        """
    ).fetchall()
    out: dict[str, list[Function]] = {}
    for qualified, name, source, returns_reason, maps_reasons in rows:
        clean = re.sub(r"--[^\n]*", "", source)
        out.setdefault(qualified, []).append(Function(name, clean, returns_reason, maps_reasons))
    return out


def own_raises(fn: Function) -> tuple[set[Pair], bool]:
    """The pairs of the body's own raise statements, and whether one raises a reason
    held in a variable."""
    pairs: set[Pair] = set()
    dynamic = False
    for statement in RAISE.findall(fn.source):
        if re.search(r"sqlstate\s+'PGRST'", statement, re.IGNORECASE):
            code = re.search(r"'code',\s*'(PT\d{3})'", statement)
            reason = re.search(r"'details',\s*" + LITERAL, statement)
            assert code, f"{fn.name}: a PGRST raise without a code"
            assert reason, f"{fn.name}: a PGRST raise without details"
            pairs.add((status_of(code.group(1)), reason.group(1)))
            continue
        code = re.search(r"errcode\s*=\s*'([0-9A-Z]{5})'", statement)
        reason = re.search(r"detail\s*=\s*" + LITERAL, statement)
        if code and reason:
            pairs.add((status_of(code.group(1)), reason.group(1)))
        elif re.search(r"errcode\s*=\s*\w+\.sqlstate", statement) and re.search(
            r"detail\s*=\s*v_\w+", statement
        ):
            dynamic = True
        else:
            raise AssertionError(f"{fn.name}: a raise this test cannot read: {statement!r}")
    return pairs, dynamic


def raised_errors(conn: psycopg.Connection[Any], root: Function) -> set[Pair]:
    """What ``root`` can raise: its raises and those of every eventlive helper it calls,
    transitively; a dynamic raise resolved through the reason and mapping helpers."""
    functions = catalog(conn)
    seen: set[str] = set()
    stack = [root]
    pairs: set[Pair] = set()
    reasons: set[str] = set()
    mappers: list[Function] = []
    dynamic = False
    while stack:
        fn = stack.pop()
        if fn.name in seen:
            continue
        seen.add(fn.name)
        own, is_dynamic = own_raises(fn)
        pairs |= own
        dynamic |= is_dynamic
        for callee_name in CALL.findall(fn.source):
            for callee in functions.get(f"eventlive.{callee_name.lower()}", []):
                if callee.returns_reason:
                    reasons |= set(re.findall(r"\breturn\s+" + LITERAL, callee.source))
                if callee.maps_reasons:
                    mappers.append(callee)
                stack.append(callee)
    if dynamic:
        assert reasons, f"{root.name}: raises a reason from a variable, no helper returns one"
        assert len({m.name for m in mappers}) == 1, (
            f"{root.name}: one mapping helper, not {mappers}"
        )
        mapper = mappers[0].name.split("(")[0]
        for reason in reasons:
            row = conn.execute(f"select sqlstate from {mapper}(%s)", (reason,)).fetchone()  # noqa: S608 - a catalog name
            assert row is not None, f"{mapper} has no row for {reason}"
            assert row[0] is not None, f"{mapper} has no SQLSTATE for {reason}"
            pairs.add((status_of(row[0]), reason))
    return pairs


def drift(conn: psycopg.Connection[Any]) -> dict[str, dict[str, list[Pair]]]:
    """Per function with an "Errors:" list (and per api function that raises without
    one): the pairs listed but not raised, and raised but not listed."""
    rows = conn.execute(
        """
        select p.oid::regprocedure::text, n.nspname, coalesce(obj_description(p.oid, 'pg_proc'), '')
        from pg_proc as p
        join pg_namespace as n on n.oid = p.pronamespace
        where n.nspname in ('api', 'eventlive')
        """
    ).fetchall()
    functions = {f.name: f for fs in catalog(conn).values() for f in fs}
    out = {}
    for name, schema, comment in rows:
        listed = listed_errors(comment)
        if listed is None and schema != "api":
            continue
        raised = raised_errors(conn, functions[name])
        listed = listed or set()
        if listed != raised:
            out[name] = {
                "listed, never raised": sorted(listed - raised),
                "raised, not listed": sorted(raised - listed),
            }
    return out


def test_every_errors_list_is_what_its_function_can_raise(
    admin_conn: psycopg.Connection[Any],
) -> None:
    assert drift(admin_conn) == {}


def test_the_derivation_follows_helpers_variables_and_postgrest_raises(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """Guards against a checker that finds nothing: the reasons come through each path."""
    functions = {f.name: f for fs in catalog(admin_conn).values() for f in fs}
    send = raised_errors(admin_conn, functions["api.chat_send(bigint,text,uuid)"])
    assert {
        (401, "not_authenticated"),  # eventlive.require_sign_in
        (404, "webinar_not_found"),  # eventlive.require_webinar
        (403, "webinar_closed"),  # eventlive.require_entry_open
        (401, "user_not_found"),  # room_role_is_staff -> require_user, two helpers down
        (403, "chat_disabled"),  # its own body
        (429, "rate_limited"),  # raise sqlstate 'PGRST' in check_rate_limit
    } <= send
    ping = raised_errors(admin_conn, functions["api.presence_ping(bigint,uuid)"])
    assert (400, "invalid_session_id") in ping  # ping_core's return, ping_error's 22023
    assert (409, "session_superseded") in ping
    reader = raised_errors(admin_conn, functions["api.participants(bigint,uuid,integer)"])
    assert (400, "invalid_max_rows") in reader
    assert (400, "invalid_after_seq") not in reader  # its cursor is a user id


def test_the_comment_parser_reads_the_conventions_forms() -> None:
    assert listed_errors(
        "Does x. Errors in this order: 401 not_authenticated, 403 not_registered (401"
        " user_not_found when gone), 403 banned, (replay returns the stored one), 400"
        " invalid_a, invalid_b, 429 rate_limited with Retry-After (5 per 30 s; staff exempt)."
        "\n@cache 2"
    ) == {
        (401, "not_authenticated"),
        (403, "not_registered"),
        (401, "user_not_found"),
        (403, "banned"),
        (400, "invalid_a"),
        (400, "invalid_b"),
        (429, "rate_limited"),
    }
    assert listed_errors("No list here.") is None


def test_a_wrong_list_is_caught(admin_conn: psycopg.Connection[Any]) -> None:
    """A function whose comment forgets a helper's error and names one it cannot raise."""
    admin_conn.execute(
        """
        create function api.zz_drift(webinar_id bigint) returns void
        language plpgsql stable security definer set search_path = '' as $$
        begin
            perform eventlive.require_staff(zz_drift.webinar_id);
            raise exception using errcode = '22023', message = 'No.', detail = 'zz_refused';
        end
        $$;
        comment on function api.zz_drift(bigint) is
        'Test. Errors: 404 webinar_not_found, 403 not_staff, 401 user_not_found, 400 zz_refused, 409 zz_never.';
        """
    )
    assert drift(admin_conn) == {
        "api.zz_drift(bigint)": {
            "listed, never raised": [(409, "zz_never")],
            "raised, not listed": [(401, "not_authenticated")],
        }
    }
