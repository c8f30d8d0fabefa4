"""Settings from the environment: defaults, parsing, and the documented variables."""

from __future__ import annotations

import pytest

from shim import envconfig
from shim.http.settings import ENV_DOC, Settings


def test_defaults_need_no_configuration() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.schemas == ("api",)
    assert s.jwt_aud == "authenticated"
    assert s.jwt_roles == ("anon", "authenticated", "service_role")
    # a busy database: requests wait their turn up to 5 s (a failing one: 503 in 0.5 s)
    assert s.pool_timeout == 2.0
    assert s.token_cache == 600_000  # a whole audience (500,000 viewers) and more
    assert s.coalesce is True
    assert s.max_body == 65536
    assert s.cors_origins == ("*",)
    assert s.prepare is True


def test_environment_overrides_and_empty_values() -> None:
    s = Settings.from_env(
        {
            "DATABASE_URL": "host=db",
            "EVENTLIVE_SCHEMAS": "api, api_v2",
            "JWT_AUD": "",
            "EVENTLIVE_POOL_MAX": "20",
            "EVENTLIVE_POOL_TIMEOUT": "0.25",
            "EVENTLIVE_ACCESS_LOG": "0",
            "EVENTLIVE_CORS_ORIGINS": "",
            "EVENTLIVE_PREPARE": "0",
            "JWT_SECRET": "",
        }
    )
    assert s.database_url == "host=db"
    assert s.schemas == ("api", "api_v2")
    assert s.jwt_aud is None  # empty turns the audience check off
    assert s.jwt_secret is None
    assert (s.pool_max, s.pool_timeout) == (20, 0.25)
    assert s.access_log is False
    assert s.cors_origins == ()
    assert s.prepare is False


def test_every_variable_read_is_documented_and_every_documented_one_is_read() -> None:
    """The variables ``from_env`` reads are the declared ones (``shim.envconfig``), and
    ``ENV_DOC`` documents exactly those, in their order."""
    declared = [var.env for var in envconfig.variables(Settings)]
    assert list(ENV_DOC) == declared
    for var in envconfig.variables(Settings):
        if var.cast in (envconfig.TEXT, envconfig.LIST):
            assert getattr(Settings.from_env({var.env: "garbage"}), var.field) != var.default
            continue
        with pytest.raises(envconfig.SettingsError) as caught:
            Settings.from_env({var.env: "garbage"})
        assert caught.value.variable == var.env  # read, and named when unreadable
