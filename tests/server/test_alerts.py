"""deploy/prometheus/alerts.yml: valid, unit-tested, and about metrics the service exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.server.harness import running_app

RULES = Path(__file__).parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing (scripts/test installs Debian's prometheus package)"
    return found


def test_rules_are_valid_and_fire_at_the_design_documents_thresholds() -> None:
    check = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 25 rules found" in check.stdout
    unit = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


async def test_every_metric_the_rules_use_is_exported() -> None:
    used = set(re.findall(r"\b(zeropay_[a-z_]+)", (RULES / "alerts.yml").read_text()))
    async with running_app() as h:
        exported = (await h.call("GET", "/metrics")).text
    names = {re.sub(r"_(bucket|total)$", "", n) for n in used}
    missing = [n for n in sorted(names) if n not in exported]
    assert len(names) >= 10
    assert missing == []
