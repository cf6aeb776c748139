"""Real services for the tests: the machine's Redis and PostgreSQL, and what the tests start.

The machine's Redis and PostgreSQL (or those named by ``ZEROPAY_TEST_REDIS_URL`` and
``ZEROPAY_TEST_DATABASE_URL``) are shared, so each test uses its own key prefix or its own
database and removes it afterwards. A Redis Cluster, PgBouncer and private PostgreSQL servers
are started here on free loopback ports, with the pieces ``zeropay-server stack`` starts the
production topology with (:mod:`zeropay_server.stack`), and stopped by PID. Nothing sleeps to
wait: readiness is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from zeropay_server.stack import processes, redis_cluster
from zeropay_server.stack.postgres import PrivatePostgres, pgbouncer_binary, pgbouncer_command
from zeropay_server.stack.processes import free_cluster_port, free_port

__all__ = [
    "DATABASE_URL",
    "REDIS_URL",
    "PrivatePostgres",
    "RedisCluster",
    "delete_prefix",
    "free_cluster_port",
    "free_port",
    "pgbouncer_binary",
    "private_postgres",
    "running_pgbouncer",
    "running_private_redis",
    "running_redis_cluster",
    "temporary_database",
    "unique_prefix",
    "wait_until",
]

REDIS_URL = os.environ.get("ZEROPAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "ZEROPAY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout`` seconds (an HTTP error
    counts as not yet, beside the stack's own starting errors)."""
    processes.wait_until(
        predicate,
        timeout=timeout,
        what=what,
        errors=(*processes.STARTING_ERRORS, httpx.HTTPError),
    )


#: Every Redis key prefix and PostgreSQL database this test process made, with the test that
#: made it: at the end of the run none may be left in the shared servers (tests/conftest.py).
MADE_PREFIXES: dict[str, str] = {}
MADE_DATABASES: dict[str, str] = {}


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]


def unique_prefix() -> str:
    """A Redis key prefix no other test uses."""
    prefix = f"t{secrets.token_hex(5)}"
    MADE_PREFIXES[prefix] = _current_test()
    return prefix


@contextlib.contextmanager
def own_prefix(url: str = REDIS_URL) -> Iterator[str]:
    """A prefix of the test's own, whose keys are deleted when the block ends: start the
    servers and stores that use it inside the block, so that they have stopped by then."""
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        delete_prefix(url, prefix)


def leftover_keys(url: str, prefixes: Iterable[str]) -> dict[str, int]:
    """How many keys each of ``prefixes`` still has in the Redis at ``url`` (tests only)."""
    client = redis.Redis.from_url(url)
    try:
        counts = {
            prefix: sum(1 for _ in client.scan_iter(match=f"{{{prefix}:*", count=1000))
            for prefix in prefixes
        }
    finally:
        client.close()
    return {prefix: count for prefix, count in counts.items() if count}


def delete_prefix(url: str, prefix: str) -> None:
    """Remove every key of a test's prefix (tests only: SCAN is never on a request path)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


_stop = processes.stop


def _answers(client: redis.Redis) -> bool:
    return bool(client.ping())


@contextlib.contextmanager
def running_private_redis(
    workdir: Path, *, unix_socket: bool = False
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own (which it may kill): yields its URL and process. With
    ``unix_socket`` it listens on a Unix socket in ``workdir`` only (no TCP port)."""
    port = 0 if unix_socket else free_port()
    path = workdir / "redis.sock"
    listen = ["--unixsocket", str(path), "--unixsocketperm", "700"] if unix_socket else []
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            *listen,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        if unix_socket:
            client = redis.Redis(unix_socket_path=str(path))
            url = f"unix://{path}?db=0"
        else:
            client = redis.Redis(host="127.0.0.1", port=port)
            url = f"redis://127.0.0.1:{port}/0"
        wait_until(functools.partial(_answers, client), timeout=20, what="private redis")
        client.close()
        yield url, process
    finally:
        _stop(process)


@dataclass(frozen=True)
class RedisCluster:
    nodes: tuple[tuple[str, int], ...]
    pids: tuple[int, ...]


@contextlib.contextmanager
def running_redis_cluster(
    workdir: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 5000
) -> Iterator[RedisCluster]:
    """Start ``masters`` cluster-enabled redis-server processes, each with ``replicas``
    replicas, and join them."""
    ports = [free_cluster_port() for _ in range(masters * (1 + replicas))]
    processes_started = []
    try:
        for port in ports:
            command = redis_cluster.node_command(port, workdir / f"node-{port}", node_timeout_ms)
            processes_started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        for port in ports:
            wait_until(functools.partial(redis_cluster.answers, port), timeout=20, what="node")
        redis_cluster.create(ports, replicas)
        wait_until(
            functools.partial(redis_cluster.converged, ports), timeout=30, what="redis cluster"
        )
        yield RedisCluster(
            nodes=tuple(("127.0.0.1", p) for p in ports),
            pids=tuple(proc.pid for proc in processes_started),
        )
    finally:
        for process in processes_started:
            _stop(process)


def leftover_databases(admin_url: str, names: Iterable[str]) -> list[str]:
    """Which of the databases ``names`` still exist (tests only)."""
    import asyncio

    import asyncpg

    async def existing() -> list[str]:
        conn = await asyncpg.connect(admin_url)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY ($1::text[])", list(names)
            )
        finally:
            await conn.close()
        return sorted(r["datname"] for r in rows)

    return asyncio.run(existing())


@contextlib.contextmanager
def temporary_database(admin_url: str = DATABASE_URL) -> Iterator[str]:
    """A fresh PostgreSQL database for one test or module, dropped afterwards."""
    import asyncio

    import asyncpg

    name = f"zp_test_{secrets.token_hex(5)}"
    base, _, _ = admin_url.rpartition("/")
    if admin_url == DATABASE_URL:
        MADE_DATABASES[name] = _current_test()

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def running_pgbouncer(database_url: str) -> Iterator[str]:
    """PgBouncer in transaction mode in front of ``database_url``; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="zeropay-pgbouncer-"))
    port = free_port()
    command, url = pgbouncer_command(workdir, database_url, port)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                log = workdir / "pgbouncer.log"
                raise RuntimeError(
                    f"pgbouncer exited: {log.read_text()[-500:] if log.exists() else ''}"
                )
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(listening, timeout=20, what="pgbouncer")
        yield url
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().initdb()
    try:
        server.start()
        yield server
    finally:
        server.remove()
