"""deploy/compose: each of the design document's stages is a valid compose file (checked
with Debian's docker-compose, no daemon needed), whose services, ports and variables match
what the server reads; and deploy/haproxy/haproxy.cfg is valid."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = DEPLOY / "compose"
STAGES = ("mvp", "scaled", "redis-cluster", "pgbouncer-replica")
CONFIG_SOURCE = Path(__file__).parents[2] / "zeropay_server" / "config.py"


def binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/sbin/{name}"
    assert os.access(found, os.X_OK), f"{name} is missing (scripts/test installs it)"
    return found


def server_variables() -> set[str]:
    """Every environment variable name the server's configuration mentions."""
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', CONFIG_SOURCE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each stage as docker-compose resolves it (anchors merged, variables interpolated),
    with a stand-in for the untracked env file."""
    work = tmp_path_factory.mktemp("compose")
    for item in COMPOSE.iterdir():
        shutil.copy(item, work / item.name)
    env = (COMPOSE / "zeropay.env.example").read_text()
    (work / "zeropay.env").write_text(env.replace("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=x"))
    stages = {}
    for stage in STAGES:
        done = subprocess.run(
            [binary("docker-compose"), "--env-file", "zeropay.env", "-f", f"{stage}.yml", "config"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        stages[stage] = yaml.safe_load(done.stdout)
    return stages


def _target(published: str | dict[str, Any]) -> str:
    """The container port of a published port, in either of compose's forms."""
    if isinstance(published, dict):
        return str(published["target"])
    return published.split("/")[0].rsplit(":", 1)[-1]


def zeropay_services(config: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in config["services"].items() if "build" in s}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_gives_the_server_only_variables_it_reads(
    resolved: dict[str, dict[str, Any]], stage: str
) -> None:
    known = server_variables()
    servers = zeropay_services(resolved[stage])
    assert servers
    for name, service in servers.items():
        environment = service["environment"]
        # POSTGRES_PASSWORD comes with the env file, for the URLs' interpolation.
        assert sorted(set(environment) - known - {"POSTGRES_PASSWORD"}) == [], name
        assert "DATABASE_URL" in environment, name
        assert "REDIS_URL" in environment or environment.get("REDIS_CLUSTER_ENABLED") == "true"
        bind_port = environment["ZEROPAY_BIND"].rsplit(":", 1)[1]
        for published in service.get("ports", []):
            assert _target(published) == bind_port, name
        for dependency in service.get("depends_on", {}):
            assert dependency in resolved[stage]["services"], (name, dependency)


@pytest.mark.parametrize("stage", STAGES[1:])
def test_the_load_balancer_routes_to_every_instance_of_the_stage(
    resolved: dict[str, dict[str, Any]], stage: str
) -> None:
    services = resolved[stage]["services"]
    routed = {
        value.rsplit(":", 1)[0]
        for key, value in services["haproxy"]["environment"].items()
        if key.startswith("ZEROPAY_API_")
    }
    assert set(zeropay_services(resolved[stage])) <= routed
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in
               services["haproxy"]["volumes"]]  # fmt: skip
    assert any("haproxy/haproxy.cfg:" in v for v in volumes)


def test_no_secret_is_committed() -> None:
    example = (COMPOSE / "zeropay.env.example").read_text()
    assigned = re.findall(r"^([A-Z_]+)=(.*)$", example, flags=re.MULTILINE)
    secret = {"ZEROPAY_MASTER_KEYS", "ZEROPAY_PEPPER", "ZEROPAY_RECEIPT_SIGNING_KEY"}
    assert {name for name, _ in assigned} >= secret | {"POSTGRES_PASSWORD"}
    assert all(value in ("", "1:") for name, value in assigned if name in secret)
    for stage in STAGES:
        text = (COMPOSE / f"{stage}.yml").read_text()
        values = re.findall(r"^\s*\w*PASSWORD\w*:\s*(.+)$", text, flags=re.MULTILINE)
        in_urls = re.findall(r"postgresql://[^:/\s]+:([^@\n]+)@", text)
        assert values
        assert in_urls
        assert all(v.strip('"').startswith("${POSTGRES_PASSWORD") for v in values + in_urls)


def test_the_haproxy_config_the_stack_runs_is_valid() -> None:
    env = {
        **os.environ,
        "ZEROPAY_LB_ADDR": "127.0.0.1:8080",
        "ZEROPAY_STATS_ADDR": "127.0.0.1:8404",
        **{f"ZEROPAY_API_{i}": f"127.0.0.1:{18080 + i}" for i in range(1, 5)},
    }
    check = subprocess.run(
        [binary("haproxy"), "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "/health/ready" in (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
