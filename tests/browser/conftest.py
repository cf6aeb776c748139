"""The browser tier: Debian's Chromium, driven by Playwright (never a downloaded browser).

``.ci/run`` (through ``scripts/test``) installs the ``chromium`` package; where it cannot be
installed the tier is skipped, and the run's header says so in capitals.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("ZEROPAY_CHROMIUM", "/usr/bin/chromium"))
#: Where the tests leave their screenshots (a test artefact, never committed).
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".run" / "screenshots"


def pytest_report_header() -> str:
    if CHROMIUM.exists():
        return f"browser tests: {CHROMIUM}; screenshots in {SCREENSHOTS}"
    return f"BROWSER TESTS WILL BE SKIPPED: NO CHROMIUM AT {CHROMIUM} (apt-get install chromium)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"NO BROWSER: {CHROMIUM} is missing; the pages were NOT tested")
    for item in items:
        if "tests/browser" in str(item.path):
            item.add_marker(skip)
