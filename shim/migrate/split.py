"""Split a SQL file into statements, for files that must run one statement at a time.

``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction block, and a multi-statement
string sent at once runs as one implicit transaction, so ``indexes/`` files are sent
statement by statement. The splitter cuts on ``;`` at top level only, skipping over
what can hide a ``;``:

- single-quoted strings (``''`` escapes) and ``E'...'`` strings (backslash escapes too);
- double-quoted identifiers;
- dollar-quoted strings (``$$...$$``, ``$tag$...$tag$``);
- ``--`` line comments and ``/* */`` block comments (nested, as Postgres allows).

It does not understand ``begin atomic ... end`` function bodies (their inner ``;`` would
split); such bodies belong in ``functions/``, which run whole. Statements made only of
comments and whitespace are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")


@dataclass(frozen=True)
class Statement:
    """One statement: its text (without the ``;``) and where it starts in the file."""

    text: str
    offset: int  # index of the statement's first character in the file text

    def line(self, source: str) -> int:
        """1-based line of the statement's first character in ``source``."""
        return source.count("\n", 0, self.offset) + 1


def split_statements(text: str) -> list[Statement]:
    """The top-level statements of ``text``, in order, stripped of surrounding whitespace.

    Raises ``ValueError`` for an unterminated string, identifier, dollar quote or comment.
    """
    statements: list[Statement] = []
    start = 0
    has_code = False  # the current chunk holds something other than comments
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and text.startswith("/*", i):
            i = _skip_block_comment(text, i)
            continue
        if c == ";":
            _emit(statements, text, start, i, has_code)
            start, has_code, i = i + 1, False, i + 1
            continue
        if not c.isspace():
            has_code = True
        if c in "'\"":
            i = skip_quoted(text, i)
        elif c == "$" and not _ident_before(text, i):
            match = _DOLLAR_TAG.match(text, i)
            if match is None:
                i += 1  # a positional parameter such as $1
                continue
            tag = match.group()
            end = text.find(tag, match.end())
            if end < 0:
                raise ValueError(f"unterminated dollar quote {tag} at offset {i}")
            i = end + len(tag)
        else:
            i += 1
    _emit(statements, text, start, n, has_code)
    return statements


def _emit(out: list[Statement], text: str, start: int, end: int, has_code: bool) -> None:
    if not has_code:
        return
    chunk = text[start:end]
    stripped = chunk.strip()
    out.append(Statement(stripped, start + (len(chunk) - len(chunk.lstrip()))))


def _ident_before(text: str, i: int) -> bool:
    """True when the character before ``i`` continues an identifier (so ``$`` or ``E`` at
    ``i`` is part of a name like ``a$b`` or ``typE``)."""
    return i > 0 and _IDENT_CHAR.match(text[i - 1]) is not None


def skip_quoted(text: str, i: int, *, strict: bool = True) -> int:
    """Index just past the string literal (``'...'``, ``E'...'`` with backslash escapes)
    or quoted identifier (``"..."``) that starts at ``i``; doubled quotes are escapes.

    Unterminated: ``ValueError`` when ``strict``, else the end of ``text`` (for text that
    Postgres itself produced, such as a deparsed policy expression).
    """
    quote = text[i]
    backslash = quote == "'" and i > 0 and text[i - 1] in "eE" and not _ident_before(text, i - 1)
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and text[j + 1] == quote:  # doubled quote: an escaped quote
                j += 2
                continue
            return j + 1
        j += 1
    if not strict:
        return n
    raise ValueError(f"unterminated {quote}-quoted text at offset {i}")


def _skip_block_comment(text: str, i: int) -> int:
    depth = 0
    j = i
    n = len(text)
    while j < n:
        if text.startswith("/*", j):
            depth += 1
            j += 2
        elif text.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    raise ValueError(f"unterminated block comment at offset {i}")


def chunks(text: str) -> list[tuple[int, str]]:
    """A transactional file as (offset, text) to send: statement by statement, so that an
    error without a position (e.g. "must be owner of table users") still names its line;
    the whole text at once when it does not split (Postgres then reports the error)."""
    try:
        statements = split_statements(text)
    except ValueError:
        return [(0, text)]
    return [(s.offset, s.text) for s in statements]
