"""deploy/grafana/zeropay.json: the design document's panels, every query valid PromQL over
metric names that /metrics exposes, so that a renamed metric can never leave a dead panel."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.server.harness import running_app
from tests.server.test_alerts import promtool

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "zeropay.json"
#: The design document's panels, by a word of their titles.
PANELS = (
    "Request rate",
    "Latency",
    "Verification outcomes",
    "Active sessions",
    "Crypto pool",
    "Redis and PostgreSQL latency",
    "Audit backlog",
    "partition horizon",
)


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_has_the_design_documents_panels() -> None:
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]]
    missing = [p for p in PANELS if not any(p in title for title in titles)]
    assert missing == []


async def test_every_query_uses_only_metrics_the_service_exports() -> None:
    used = {name for query in queries() for name in re.findall(r"\b(zeropay_[a-z_]+)", query)}
    async with running_app() as h:
        exported = (await h.call("GET", "/metrics")).text
    names = {re.sub(r"_(bucket|total)$", "", n) for n in used}
    assert len(names) >= 12
    assert sorted(n for n in names if n not in exported) == []


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    rules = [{"record": f"zeropay:panel_query_{i}", "expr": q} for i, q in enumerate(queries())]
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))
    check = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout
