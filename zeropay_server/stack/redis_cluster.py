"""Redis Cluster nodes on loopback: each a cluster-enabled redis-server, joined by
``redis-cli --cluster create``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import redis


def node_command(port: int, node_dir: Path, node_timeout_ms: int = 5000) -> list[str]:
    """A cluster node's command line (no persistence: the stack's data is throwaway).

    ``cluster-require-full-coverage no``: while a master is down (until its replica takes
    over), the other masters keep serving their own slots. With Redis's default, the whole
    cluster answers CLUSTERDOWN from the moment one master is marked failed, and one
    master's failover stops every user."""
    node_dir.mkdir(parents=True, exist_ok=True)
    return [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no",
        "--save", "", "--appendonly", "no",
        "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log"),
    ]  # fmt: skip


def answers(port: int) -> bool:
    return bool(redis.Redis(host="127.0.0.1", port=port).ping())


def create(ports: Sequence[int], replicas: int) -> None:
    """Join the nodes: ``len(ports) / (1 + replicas)`` masters, each with ``replicas``."""
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
         "--cluster-replicas", str(replicas), "--cluster-yes"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60,
    )  # fmt: skip


def converged(ports: Sequence[int]) -> bool:
    """Every node sees every other and all 16384 slots served."""
    for port in ports:
        info = redis.Redis(host="127.0.0.1", port=port).cluster("info")
        if (
            info["cluster_state"] != "ok"
            or int(info["cluster_known_nodes"]) != len(ports)
            or int(info["cluster_slots_ok"]) != 16384
        ):
            return False
    return True
