"""One declaration per variable (``shim.envconfig``): it builds the shim's and the hub's
settings, reads switches and numbers strictly (a bad value stops ``eventlive serve`` with
the variable named, no traceback), and is what the README's Configuration rows say,
defaults included."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from shim_support import TcpProxy, bearer, serve

from shim import envconfig
from shim.envconfig import BOOL, FLOAT, INT, LIST, TEXT, SettingsError, Var
from shim.http.settings import Settings
from shim.realtime import HubSettings
from shim.serve import demo

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECRET = "settings-table-secret-of-at-least-32-bytes!"
TABLE = envconfig.variables(Settings) + envconfig.variables(HubSettings)
OWNER: dict[str, type[Any]] = {
    var.env: cls for cls in (Settings, HubSettings) for var in envconfig.variables(cls)
}


# -- strict reading --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("False", False),
        ("false", False),
        ("OFF", False),
        ("no", False),
        ("0", False),
        (" No ", False),
        ("True", True),
        ("ON", True),
        ("yes", True),
        ("1", True),
    ],
)
def test_switches_are_read_in_any_case(text: str, value: bool) -> None:
    assert Settings.from_env({"EVENTLIVE_COALESCE": text}).coalesce is value
    assert Settings.from_env({"EVENTLIVE_ENTRY_BATCH": text}).entry_batch is value
    assert Settings.from_env({"EVENTLIVE_ACCESS_LOG": text}).access_log is value
    assert Settings.from_env({"EVENTLIVE_PREPARE": text}).prepare is value
    assert HubSettings.from_env({"EVENTLIVE_REALTIME": text}).enabled is value


@pytest.mark.parametrize("text", ["maybe", "2", "disabled", "f", "-1", "0.0"])
def test_a_switch_that_is_neither_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"EVENTLIVE_COALESCE": text})
    assert caught.value.variable == "EVENTLIVE_COALESCE"
    message = str(caught.value)
    assert message.startswith(f"EVENTLIVE_COALESCE={text!r} ")
    for word in (*envconfig.TRUE, *envconfig.FALSE):
        assert word in message
    with pytest.raises(SettingsError, match=r"^EVENTLIVE_REALTIME="):
        HubSettings.from_env({"EVENTLIVE_REALTIME": text})


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("EVENTLIVE_POOL_MAX", "ten", "an integer"),
        ("EVENTLIVE_POOL_MAX", "1.5", "an integer"),
        ("EVENTLIVE_POOL_TIMEOUT", "2s", "a number"),
        ("EVENTLIVE_POOL_TIMEOUT", "nan", "a number"),
        ("EVENTLIVE_HEADER_TIMEOUT", "inf", "a number"),
        ("EVENTLIVE_REALTIME_QUEUE", "lots", "an integer"),
        ("EVENTLIVE_REALTIME_TICK", "soon", "a number"),
    ],
)
def test_a_bad_number_is_refused_naming_the_variable(name: str, text: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OWNER[name].from_env({name: text})
    assert caught.value.variable == name
    assert str(caught.value) == f"{name}={text!r} is not valid: expected {expected}"


def test_empty_means_unset_unless_the_row_says_otherwise() -> None:
    empty = Settings.from_env({var.env: "" for var in envconfig.variables(Settings)})
    expected = Settings(jwt_aud=None, cors_origins=())  # the two rows that say "empty = off"
    assert empty == expected
    assert HubSettings.from_env({var.env: " " for var in envconfig.variables(HubSettings)}) == (
        HubSettings()
    )
    assert Settings.from_env({"EVENTLIVE_SCHEMAS": " , "}).schemas == ("api",)


def _sample(var: Var) -> tuple[str, Any]:
    """A text for ``var`` and the value it must give: never the default."""
    if var.cast is BOOL:
        return ("off", False) if var.default else ("on", True)
    if var.cast is INT:
        return str(var.default + 7), var.default + 7
    if var.cast is FLOAT:
        return str(var.default + 0.5), var.default + 0.5
    if var.cast is LIST:
        return "x_one, x_two", ("x_one", "x_two")
    assert var.cast is TEXT
    return "sample-text", "sample-text"


@pytest.mark.parametrize("var", TABLE, ids=[var.env for var in TABLE])
def test_every_variable_sets_its_field(var: Var) -> None:
    cls = OWNER[var.env]
    text, value = _sample(var)
    built = cls.from_env({var.env: text})
    assert getattr(built, var.field) == value != var.default
    assert getattr(cls.from_env({}), var.field) == var.default == getattr(cls(), var.field)


def test_the_table_names_each_variable_and_field_once() -> None:
    envs = [var.env for var in TABLE]
    assert len(envs) == len(set(envs))
    for cls in (Settings, HubSettings):
        fields = [var.field for var in envconfig.variables(cls)]
        assert len(fields) == len(set(fields))


# -- the README -------------------------------------------------------------------------


def _readme_rows() -> dict[str, str]:
    text = README.read_text()
    start = text.index("\n## Configuration\n")
    section = text[start : text.index("\n## ", start + 1)]
    return dict(re.findall(r"^\| `([A-Z_]+)` \| (.*) \|$", section, flags=re.MULTILINE))


@pytest.mark.parametrize("var", TABLE, ids=[var.env for var in TABLE])
def test_every_readme_row_states_the_tables_default(var: Var) -> None:
    """The README's default, read as the variable would be, is the declared default; a
    variable without one does not claim one."""
    row = _readme_rows()[var.env]
    assert row.startswith(var.doc), row
    said = re.fullmatch(r" \((.*)\)", row.removeprefix(var.doc))
    if var.shown_default == "":
        assert said is None if not var.note else said and said.group(1) == var.note, row
        return
    assert said is not None, f"{var.env}: the README gives no default: {row}"
    readme_default = said.group(1).split(";")[0].strip()
    assert readme_default == var.shown_default, row
    assert var.cast.parse(readme_default) == var.default


def test_every_table_variable_has_its_readme_row() -> None:
    assert {var.env for var in TABLE} <= set(_readme_rows())


# -- start-up ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("EVENTLIVE_COALESCE", "maybe"),
        ("EVENTLIVE_POOL_MAX", "ten"),
        ("EVENTLIVE_REALTIME", "sometimes"),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_to_start_on_a_bad_value_and_names_it(
    name: str, text: str, workers: int
) -> None:
    """``eventlive serve``: one line on stderr naming the variable, exit 2, no traceback,
    with one worker or several (whose supervisor would otherwise exit 0)."""
    env = {
        "PATH": "/usr/bin:/bin",
        # Never reached: the settings are read before anything connects.
        "DATABASE_URL": "postgresql://authenticator@127.0.0.1:1/none",
        name: text,
    }
    argv = [sys.executable, "-m", "shim.cli", "serve", "--port", str(_free_port())]
    proc = subprocess.run(
        [*argv, "--workers", str(workers)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"error: {name}={text!r} is not valid: expected " in proc.stderr, proc.stderr
    assert "Uvicorn running" not in proc.stderr + proc.stdout


def test_the_app_factory_refuses_a_bad_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from shim.serve.app import app_from_env

    monkeypatch.setenv("EVENTLIVE_COALESCE", "maybe")
    with pytest.raises(SettingsError, match=r"^EVENTLIVE_COALESCE='maybe' is not valid"):
        app_from_env()


# -- EVENTLIVE_COALESCE=False really turns coalescing off --------------------------------


@pytest.fixture
def api_db(eventlive_db: Any) -> Any:
    """The migrated clone with the demo webinar (149402, auto entry)."""
    demo.prepare(eventlive_db.admin_dsn, SECRET)
    return eventlive_db


def _env(dsn: str, coalesce: str) -> dict[str, str]:
    """What an operator sets: one connection, so coalesced pings must share statements."""
    return {
        "DATABASE_URL": dsn,
        "EVENTLIVE_SCHEMAS": "api",
        "JWT_SECRET": SECRET,
        "EVENTLIVE_POOL_MIN": "1",
        "EVENTLIVE_POOL_MAX": "1",
        "EVENTLIVE_COALESCE_SLOTS": "1",
        "EVENTLIVE_ACCESS_LOG": "Off",
        "EVENTLIVE_HOUSEKEEPING_INTERVAL": "0",
        "EVENTLIVE_COALESCE": coalesce,
    }


@pytest.mark.anyio
@pytest.mark.parametrize(("coalesce", "on"), [("False", False), ("NO", False), ("True", True)])
async def test_coalesce_false_turns_coalescing_off_in_the_app(
    api_db: Any, coalesce: str, on: bool
) -> None:
    """Counted at a TCP proxy as in test_coalesce.py: with EVENTLIVE_COALESCE=False eight
    concurrent pings on one connection take a round trip each (no batch), and the app has
    no coalescer; with True (the contrast) they take fewer round trips than pings."""
    users = [str(uuid.uuid4()) for _ in range(8)]
    with psycopg.connect(api_db.admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) select unnest(%s::uuid[])", (users,))
    base = f"/api/webinars/{demo.DEMO_WEBINAR}"
    built = Settings.from_env(_env(api_db.dsn, coalesce))
    assert (built.coalesce, built.access_log) == (on, False)
    proxy = TcpProxy(api_db.dsn)
    try:
        settings = Settings.from_env(_env(proxy.dsn, coalesce))
        async with serve(settings) as client:
            service = client._transport.app.state.service  # type: ignore[attr-defined]
            assert (service.database.coalescer is not None) is on
            sessions = []
            for user in users:
                r = await client.post(
                    f"{base}/access/track", headers=bearer(demo.dev_token(SECRET, user))
                )
                assert r.status_code == 200, r.text
                sessions.append(r.json()["session_id"])
            with psycopg.connect(api_db.admin_dsn, autocommit=True) as conn:
                conn.execute(
                    "update eventlive.presence set last_seen_at = now() - interval '1 hour'"
                )
            proxy.reset()
            answers: list[httpx.Response] = await asyncio.gather(
                *(
                    client.post(
                        f"{base}/presence/ping",
                        headers=bearer(demo.dev_token(SECRET, user)),
                        json={"session_id": session},
                    )
                    for user, session in zip(users, sessions, strict=True)
                )
            )
            assert [r.status_code for r in answers] == [204] * 8
            if on:
                assert proxy.bursts < 8
            else:
                assert proxy.bursts >= 8
    finally:
        proxy.close()
