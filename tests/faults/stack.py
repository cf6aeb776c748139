"""The fault suite's deployment: two API instances on a private Redis and a private PostgreSQL.

Everything runs on loopback as processes the tests own: the Redis server (killed, restarted
empty on the same port, paused, flushed, demoted, filled), the PostgreSQL server (stopped and
started), and the two API server processes (killed, terminated). Nothing sleeps to wait:
readiness is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.e2e.servers import ServerProcess, add_merchant, production_keys, running_server
from tests.services import PrivatePostgres, RedisCluster, _stop, free_port, wait_until

#: The API's dependency deadlines in this suite: the service's default.
DEPENDENCY_TIMEOUT_S = 1.0


class PrivateRedis:
    """A redis-server of the suite's own, on a fixed port, which it may kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: self.client().ping(), timeout=20, what="private redis")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            _stop(self.process)


@dataclass
class Stack:
    """What a fault test drives."""

    redis: PrivateRedis
    postgres: PrivatePostgres
    database_url: str
    env: dict[str, str]
    merchant_key: str
    workdir: Path
    servers: list[ServerProcess] = field(default_factory=list)

    def start_server(self, name: str) -> ServerProcess:
        server = self._servers.enter_context(running_server(self.env, self.workdir, name))
        self.servers.append(server)
        return server

    _servers: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    instances: int = 2,
    cluster: RedisCluster | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """A private Redis (or the given Cluster) and PostgreSQL, the database migrated, a
    merchant, ``instances`` API server processes (with ``extra_env`` over the suite's)."""
    redis_server = PrivateRedis(workdir)
    postgres = PrivatePostgres().initdb()
    try:
        if cluster is None:
            redis_server.start()
            redis_env = {"REDIS_URL": redis_server.url}
        else:
            nodes = ",".join(f"{host}:{port}" for host, port in cluster.nodes)
            redis_env = {"REDIS_CLUSTER_ENABLED": "true", "REDIS_CLUSTER_NODES": nodes}
        postgres.start()
        database_url = f"{postgres.url.rpartition('/')[0]}/zeropay"
        env = {
            **redis_env,
            "DATABASE_URL": database_url,
            "DB_POOL_MIN": "1",
            "DB_POOL_SIZE": "10",
            "PBKDF2_ITERATIONS": "1000",
            "CRYPTO_WORKERS": "1",
            "AUDIT_FLUSH_INTERVAL": "200",
            "AUDIT_RECLAIM_IDLE_MS": "2000",
            "REDIS_TIMEOUT_MS": str(int(DEPENDENCY_TIMEOUT_S * 1000)),
            "DB_TIMEOUT_MS": str(int(DEPENDENCY_TIMEOUT_S * 1000)),
            "RATE_LIMIT_GLOBAL": "1000000",
            "RATE_LIMIT_PER_IP": "1000000",
            "RATE_LIMIT_PER_USER": "1000000",
            "RATE_LIMIT_PER_MERCHANT": "1000000",
            # The load's wrong answers are a merchant's sessions failing: not under test here.
            "MERCHANT_FAILURES_PER_HOUR": "1000000",
            "LOG_LEVEL": "WARNING",
            **production_keys(),
            **(extra_env or {}),
        }
        merchant_key = add_merchant(env)  # migrate (creating the database) and add a merchant
        stack = Stack(
            redis=redis_server,
            postgres=postgres,
            database_url=database_url,
            env=env,
            merchant_key=merchant_key,
            workdir=workdir,
        )
        with stack._servers:
            for i in range(instances):
                stack.start_server(f"api-{i}")
            yield stack
    finally:
        redis_server.stop()
        postgres.remove()
