"""Settings declared once: each environment variable is one ``setting(...)`` field of a
frozen dataclass, its variable name, cast, default and documentation side by side (as in
Starlette's ``config("X", cast=bool, default=False)``). That one declaration builds the
object (``build``), its documentation with the real default (``env_doc``, the README's
Configuration rows) and nothing else needs to repeat it.

Values are read strictly: a switch is 1/true/on/yes or 0/false/off/no in any case, a
number must parse; anything else is a ``SettingsError`` naming the variable, at start-up.
An empty variable is an unset one, unless its field says what empty means (``if_empty``).

The lowest layer of the import contract: it imports nothing from ``shim``, so the HTTP
shim's and the realtime hub's settings both use it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
D = TypeVar("D")
S = TypeVar("S")

_KEY = "eventlive.env"
_UNSET: Any = object()  # ``if_empty`` not given: an empty variable is an unset one

TRUE = ("1", "true", "on", "yes")
FALSE = ("0", "false", "off", "no")


class SettingsError(ValueError):
    """A variable's value cannot be read; ``str(error)`` names it and what it accepts.

    ``eventlive serve`` prints it and exits with ``exit_code`` (bad input, like the other
    commands' 2) before any worker starts."""

    exit_code: int = 2

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"{variable}={value!r} is not valid: expected {expected}")
        self.variable = variable


def _not_blank(text: str) -> bool:
    return bool(text.strip())


@dataclass(frozen=True)
class Cast(Generic[T]):
    """How a variable's text becomes a value (``parse`` raises ValueError when it cannot)
    and how a value is written in the documentation (``show``)."""

    expected: str
    parse: Callable[[str], T]
    show: Callable[[T], str]
    given: Callable[[str], bool] = _not_blank  # False: the text counts as empty


def _switch(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ValueError(text)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _show_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def split(text: str) -> tuple[str, ...]:
    """Comma-separated items, stripped, empty ones dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


BOOL: Cast[bool] = Cast(
    f"one of {', '.join(TRUE)} (on) or {', '.join(FALSE)} (off), in any case",
    _switch,
    lambda value: "1" if value else "0",
)
INT: Cast[int] = Cast("an integer", int, str)
FLOAT: Cast[float] = Cast("a number", _number, _show_number)
TEXT: Cast[str] = Cast("text", str, str)
LIST: Cast[tuple[str, ...]] = Cast(
    "a comma-separated list", split, ",".join, given=lambda text: bool(split(text))
)


@dataclass(frozen=True)
class Var:
    """One row of a settings table: ``env`` sets ``field`` through ``cast``."""

    env: str
    field: str
    cast: Cast[Any]
    default: Any
    doc: str
    note: str = ""  # said after the default, in the same parentheses
    if_empty: Any = _UNSET

    @property
    def shown_default(self) -> str:
        """The default as the documentation writes it ('' when there is none to show)."""
        if self.default is None or self.default in ("", ()):
            return ""
        return str(self.cast.show(self.default))

    def documentation(self) -> str:
        """``doc (default; note)``: the README's meaning column."""
        said = "; ".join(part for part in (self.shown_default, self.note) if part)
        return f"{self.doc} ({said})" if said else self.doc

    def read(self, env: Mapping[str, str]) -> Any:
        raw = env.get(self.env)
        if raw is None:
            return self.default
        if not self.cast.given(raw):
            return self.default if self.if_empty is _UNSET else self.if_empty
        try:
            return self.cast.parse(raw)
        except ValueError:
            raise SettingsError(self.env, raw, self.cast.expected) from None


def setting(
    env: str,
    cast: Cast[T],
    default: D,
    doc: str,
    *,
    note: str = "",
    if_empty: Any = _UNSET,
) -> T | D:
    """A dataclass field read from ``env``: its default, cast and documentation, once."""
    var = Var(env, "", cast, default, doc, note, if_empty)
    return dataclasses.field(default=default, metadata={_KEY: var})


def variables(cls: type[Any]) -> tuple[Var, ...]:
    """The table of ``cls``: its ``setting`` fields in declaration order."""
    return tuple(
        dataclasses.replace(f.metadata[_KEY], field=f.name)
        for f in dataclasses.fields(cls)
        if _KEY in f.metadata
    )


def build(cls: type[S], env: Mapping[str, str] | None = None) -> S:
    """``cls`` from ``env`` (default ``os.environ``); unset variables keep their defaults,
    fields that are not settings keep theirs. Raises ``SettingsError``."""
    e = os.environ if env is None else env
    return cls(**{var.field: var.read(e) for var in variables(cls)})


def env_doc(cls: type[Any]) -> dict[str, str]:
    """Variable -> its README meaning, default included, in declaration order."""
    return {var.env: var.documentation() for var in variables(cls)}
