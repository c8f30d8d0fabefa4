"""Fixtures of the realtime tests (helpers in ``live_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from live_support import Live, start_live


@pytest.fixture
def live(eventlive_db: Any) -> Iterator[Live]:
    """The shim with its realtime hub over a fresh migrated clone."""
    yield from start_live(eventlive_db)
