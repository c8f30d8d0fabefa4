"""The README states facts that live in the code once: the configuration table is the
settings' own documentation, and the exit codes are the CLI's. These tests keep them equal
(on failure they print the rows to paste)."""

from __future__ import annotations

import re
from pathlib import Path

from shim import cli, pg, realtime
from shim.http import settings
from shim.serve import devtoken
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


def test_first_minute_eventlive_commands_are_the_clis() -> None:
    """Every ``eventlive ...`` command the first minute states parses, and the roles it
    lists are the token command's (tests/test_first_minute.py runs them for real)."""
    section = _section("First minute")
    commands = re.findall(r"\$\((eventlive [^)]*)\)|`(eventlive [a-z][^`]*)`", section)
    stated = {c for pair in commands for c in pair if c}
    assert "eventlive token --role service_role --exp 12h" in stated
    assert "eventlive db down" in stated
    parser = cli._parser()
    for command in stated:
        args = parser.parse_args(command.split()[1:])
        assert hasattr(args, "run"), command
    roles = re.search(r"`--role`\s+(.+?), `--sub", section, flags=re.DOTALL)
    assert roles is not None
    assert tuple(re.split(r"\s*(?:\(default\))?\s*\|\s*", roles[1].strip())) == devtoken.ROLES


def test_verify_sample_is_the_current_output_shape() -> None:
    """The sample is a real run of today's verify: every step it shows is one verify has
    (shim/verify/flows.py), all 11 OK, none "not available" any more."""
    section = _section("Knowing it works: verify, status, the client")
    start = section.index("```\neventlive verify — ")
    sample = section[start : section.index("```", start + 3)]
    steps = re.findall(r"^  (?:registrant|admin|non-registrant)\s+(.+?)\s{2,}OK\s", sample, re.M)
    assert len(steps) == 11
    flows = (README.parent / "shim" / "verify" / "flows.py").read_text()
    assert [s for s in steps if f'"{s}"' not in flows] == []
    assert "DoD-4   OK     11/11 steps OK" in sample
    assert "n/a" not in sample
