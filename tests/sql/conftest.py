"""Fixtures of the SQL API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_api_behaviour


@pytest.fixture(params=test_api_behaviour.PING_PATHS)
def ping_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once with single pings (api.presence_ping), once through the coalesced
    entry (eventlive.presence_ping_batch): both must answer alike."""
    test_api_behaviour.ping_path_now[0] = request.param
    yield request.param
    test_api_behaviour.ping_path_now[0] = "single"
