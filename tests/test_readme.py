"""The README states facts that live in the code once: the configuration table is the
settings' own documentation, and the exit codes are the CLI's. These tests keep them equal
(on failure they print the rows to paste)."""

from __future__ import annotations

import re
from pathlib import Path

from shim import cli, pg, realtime
from shim.http import settings
from shim.testing import plugin

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_configuration_table_is_the_settings_documentation() -> None:
    documented = {**settings.ENV_DOC, **realtime.ENV_DOC, **pg.ENV_DOC, **plugin.ENV_DOC}
    expected = [f"| `{name}` | {doc} |" for name, doc in documented.items()]
    rows = [
        line
        for line in _section("Configuration").splitlines()
        if re.match(r"\| `[A-Z_]+` \|", line)
    ]
    assert rows == expected, "README rows should be:\n" + "\n".join(expected)


def test_exit_codes_in_the_readme_are_the_clis() -> None:
    expected = [f"- `eventlive {command}`: {codes}" for command, codes in cli.EXIT_CODES.items()]
    rows = [line for line in _section("Exit codes").splitlines() if line.startswith("- `eventlive")]
    assert rows == expected, "README rows should be:\n" + "\n".join(expected)
