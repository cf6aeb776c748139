"""redis-py's Cluster client, made so that one master's failure fails only that master's
commands.

redis-py marks its topology stale when a node fails, and re-reads it on the next command of
*any* node: the slots (from any node that answers), then the Redis command table, asked of its
default node. While that default node is the master that died, every re-read fails, and with it
every command of every node, and the client closes all its connections: one master's failover
became every request's 503 for seconds. The command table of a running cluster does not change,
so it is fetched once (:class:`_CommandTableOnce`); the topology is still re-read every time.

This reaches into redis-py's command parser, so it is contained here and pinned by a test
(``tests/adapters/test_redis_cluster.py``) that fails loudly if redis-py changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class _CommandTableOnce(AsyncCommandsParser):
    """redis-py's command parser, asking the cluster for its command table only the first
    time (it follows the default node after that, for the rare command whose keys only the
    server can find)."""

    __slots__ = ()

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if node is not None:
            self.node = node
        if not self.commands:
            await super().initialize(node)


def cluster_client(
    nodes: Sequence[tuple[str, int]], *, max_connections: int, **options: Any
) -> RedisCluster:
    """A Cluster client over ``nodes`` that sends each command at most once: a command whose
    connection broke may have run (and reached the replica before its master died), and
    redis-py's default resend after re-reading the topology would count a request twice or
    refuse a fresh nonce as reused. The error is a 503; the next request meets the re-read
    topology."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=max_connections,
        retry=Retry(NoBackoff(), retries=0),
        **options,
    )
    client.commands_parser = _CommandTableOnce()
    return client
