"""What ``adapters.redis_cluster`` assumes of redis-py's Cluster client, checked: if a
release changes it, this fails loudly instead of the Cluster failing over badly."""

from __future__ import annotations

import inspect

from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio.cluster import RedisCluster

from adapters.redis_cluster import _CommandTableOnce, cluster_client


def test_redis_py_reads_its_command_table_where_the_shim_expects() -> None:
    assert AsyncCommandsParser.__slots__ == ("commands", "node")
    assert list(inspect.signature(AsyncCommandsParser.initialize).parameters) == ["self", "node"]
    # The client re-reads the table from its default node on every topology refresh.
    assert "commands_parser.initialize" in inspect.getsource(RedisCluster.initialize)


async def test_the_command_table_is_read_once_and_commands_go_at_most_once() -> None:
    client = cluster_client([("127.0.0.1", 1)], max_connections=4)
    assert isinstance(client.commands_parser, _CommandTableOnce)
    assert client.retry.get_retries() == 0
    parser = _CommandTableOnce()
    parser.commands = {"get": {}}

    class Dead:
        async def execute_command(self, *args: object) -> object:
            raise AssertionError("the table was asked for again")

    await parser.initialize(Dead())  # type: ignore[arg-type]
    assert parser.commands == {"get": {}}
    assert isinstance(parser.node, Dead)
