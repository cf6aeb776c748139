"""The fault suite's Redis Cluster: 3 masters with a replica each, a short node timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import RedisCluster, running_redis_cluster

#: How long a master may be silent before the others fail it over (Redis's default is 15 s).
NODE_TIMEOUT_MS = 2000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with running_redis_cluster(
        tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS
    ) as running:
        yield running
