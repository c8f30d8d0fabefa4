"""PostgREST's SQLSTATE -> HTTP status table (docs: references/errors) and which
database messages may reach the client."""

from __future__ import annotations

import pytest

from shim.http.errors import is_public_sqlstate, status_for_sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("08006", 503),
        ("08P01", 503),
        ("09000", 500),
        ("0L000", 403),
        ("0P000", 403),
        ("23503", 409),
        ("23505", 409),
        ("23502", 400),
        ("23514", 400),
        ("25006", 405),
        ("25001", 500),
        ("28000", 403),
        ("28P01", 403),
        ("2D000", 500),
        ("38000", 500),
        ("39000", 500),
        ("3B000", 500),
        ("40001", 500),
        ("40P01", 500),
        ("53400", 500),
        ("53300", 503),
        ("53100", 503),
        ("54000", 500),
        ("55P03", 500),
        ("57014", 500),
        ("58000", 500),
        ("F0000", 500),
        ("HV000", 500),
        ("P0001", 400),
        ("P0002", 500),
        ("XX000", 500),
        ("42883", 404),
        ("42P01", 404),
        ("42P17", 500),
        ("22P02", 400),
        ("22023", 400),
        ("42703", 400),
        ("PT403", 403),
        ("PT409", 409),
        ("PT503", 503),
    ],
)
def test_sqlstate_maps_to_postgrest_status(sqlstate: str, status: int) -> None:
    assert status_for_sqlstate(sqlstate, anonymous=False) == status


def test_insufficient_privilege_is_401_for_anon_and_403_otherwise() -> None:
    assert status_for_sqlstate("42501", anonymous=True) == 401
    assert status_for_sqlstate("42501", anonymous=False) == 403


@pytest.mark.parametrize("sqlstate", ["P0001", "PT409", "22P02", "23505", "42501", "57014"])
def test_messages_of_deliberate_errors_are_public(sqlstate: str) -> None:
    assert is_public_sqlstate(sqlstate)


@pytest.mark.parametrize("sqlstate", ["XX000", "42703", "42601", "0A000", "58030"])
def test_messages_of_internal_errors_are_hidden(sqlstate: str) -> None:
    assert not is_public_sqlstate(sqlstate)
