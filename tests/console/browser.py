"""A real browser for the tests: Debian's ``chromium`` driven by Playwright (its own
browser download is not used). Not a test module; the fixture is in the test modules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("EVENTLIVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def launch() -> Iterator[Any]:
    """A headless chromium; skips (saying why) when it or Playwright is not installed."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()
