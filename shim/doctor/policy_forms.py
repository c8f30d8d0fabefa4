"""Policy forms: finding ``auth.uid()``-style calls in a deparsed policy expression that
Postgres would evaluate once per row instead of once per statement, and wrapping them in
``(select ...)`` so they run once, as an initplan."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shim.migrate.split import skip_quoted

# Functions whose value is the same for every row: call them once per statement, as an
# initplan, by wrapping them in a scalar subquery -- ``(select auth.uid())``.
_GUARDED = re.compile(r"(?:auth\s*\.\s*(?:uid|jwt|role|email)|current_setting)\s*\(", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_SELECT_GROUP = re.compile(r"\(\s*select\b", re.IGNORECASE)


@dataclass(frozen=True)
class Call:
    """A guarded call in an expression: ``text[start:end]`` is the whole call."""

    start: int
    end: int
    text: str


@dataclass
class _Group:
    select: bool
    has_from: bool = False


def unwrapped_calls(expression: str) -> list[Call]:
    """Calls of ``auth.uid()/jwt()/role()/email()`` and ``current_setting(...)`` in a
    deparsed policy expression that are not evaluated once per statement.

    A call is fine when the innermost ``( SELECT ...)`` group around it has no FROM of its
    own: Postgres deparses ``(select auth.uid())`` as ``( SELECT auth.uid() AS uid)``, a
    scalar subquery it runs once, as an initplan. Bare calls, and calls inside a subquery
    that scans a table (``( SELECT 1 FROM t WHERE t.u = auth.uid())``), run once per
    row. String literals and quoted identifiers are skipped, ``IS DISTINCT FROM`` is not a
    FROM clause.
    """
    groups: list[_Group] = []
    stack: list[int] = []  # indexes into groups, innermost last
    pending: list[tuple[int, int, list[int]]] = []  # (call start, its "(" group, enclosing)
    calls: list[tuple[int, int, list[int]]] = []  # (start, end, enclosing groups)
    previous_word = ""
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch in "'\"":
            i = skip_quoted(expression, i, strict=False)
            continue
        if ch == "(":
            groups.append(_Group(bool(_SELECT_GROUP.match(expression, i))))
            stack.append(len(groups) - 1)
        elif ch == ")":
            if stack:
                closed = stack.pop()
                for entry in [p for p in pending if p[1] == closed]:
                    pending.remove(entry)
                    calls.append((entry[0], i + 1, entry[2]))
        elif (ch.isalpha() or ch == "_") and not _ident_char_before(expression, i):
            call = _GUARDED.match(expression, i)
            if call is not None:
                enclosing = list(stack)
                groups.append(_Group(select=False))
                stack.append(len(groups) - 1)
                pending.append((i, len(groups) - 1, enclosing))
                i = call.end()
                previous_word = ""
                continue
            word = _WORD.match(expression, i)
            if word is not None:
                lowered = word.group(0).lower()
                if lowered == "from" and previous_word != "distinct" and stack:
                    groups[stack[-1]].has_from = True
                previous_word = lowered
                i = word.end()
                continue
        i += 1
    found = []
    for start, end, enclosing in sorted(calls):
        selects = [groups[g] for g in enclosing if groups[g].select]
        if not selects or selects[-1].has_from:
            found.append(Call(start, end, expression[start:end]))
    return found


def wrap_calls(expression: str) -> str:
    """``expression`` with each call ``unwrapped_calls`` reports wrapped in ``(select ...)``."""
    calls = unwrapped_calls(expression)
    outer = [c for c in calls if not any(o.start < c.start and c.end <= o.end for o in calls)]
    for call in sorted(outer, key=lambda c: c.start, reverse=True):
        expression = f"{expression[: call.start]}(select {call.text}){expression[call.end :]}"
    return expression


def _ident_char_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in '_$."')
