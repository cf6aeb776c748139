"""Real services for the tests: the machine's Redis and PostgreSQL, and what the tests start.

The machine's Redis and PostgreSQL (or those named by ``ZEROPAY_TEST_REDIS_URL`` and
``ZEROPAY_TEST_DATABASE_URL``) are shared, so each test uses its own key prefix or its own
database and removes it afterwards. A Redis Cluster and PgBouncer are started here on free
loopback ports and stopped by PID. Nothing sleeps to wait: readiness is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

REDIS_URL = os.environ.get("ZEROPAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "ZEROPAY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, redis.RedisError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A port for a cluster node: at most 55535, with its bus port (port + 10000) free too."""
    for _ in range(1000):
        port = 20_000 + secrets.randbelow(25_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise OSError("no free port pair for a cluster node")


def unique_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"t{secrets.token_hex(5)}"


def delete_prefix(url: str, prefix: str) -> None:
    """Remove every key of a test's prefix (tests only: SCAN is never on a request path)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(client: redis.Redis) -> bool:
    return bool(client.ping())


@contextlib.contextmanager
def running_private_redis(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own (which it may kill): yields its URL and process."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
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
        client = redis.Redis(host="127.0.0.1", port=port)
        wait_until(functools.partial(_answers, client), timeout=20, what="private redis")
        yield f"redis://127.0.0.1:{port}/0", process
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
    processes = []
    try:
        for port in ports:
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir(parents=True)
            processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node_dir),
                        "--logfile",
                        str(node_dir / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
        for port in ports:
            node = redis.Redis(host="127.0.0.1", port=port)
            wait_until(functools.partial(_answers, node), timeout=20, what="cluster node")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=60,
        )

        def converged() -> bool:
            for port in ports:
                info = redis.Redis(host="127.0.0.1", port=port).cluster("info")
                if (
                    info["cluster_state"] != "ok"
                    or int(info["cluster_known_nodes"]) != len(ports)
                    or int(info["cluster_slots_ok"]) != 16384
                ):
                    return False
            return True

        wait_until(converged, timeout=30, what="redis cluster")
        yield RedisCluster(
            nodes=tuple(("127.0.0.1", p) for p in ports),
            pids=tuple(proc.pid for proc in processes),
        )
    finally:
        for process in processes:
            _stop(process)


@contextlib.contextmanager
def temporary_database(admin_url: str = DATABASE_URL) -> Iterator[str]:
    """A fresh PostgreSQL database for one test or module, dropped afterwards."""
    import asyncio

    import asyncpg

    name = f"zp_test_{secrets.token_hex(5)}"
    base, _, _ = admin_url.rpartition("/")

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


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(found, os.X_OK):
        raise FileNotFoundError("pgbouncer is not installed (scripts/test installs it)")
    return found


@contextlib.contextmanager
def running_pgbouncer(database_url: str) -> Iterator[str]:
    """PgBouncer in transaction mode in front of ``database_url``; yields its URL.

    Its files live in a directory of their own under /tmp: PgBouncer refuses to run as root,
    and the ``postgres`` user it runs as cannot enter pytest's private temporary folders.
    """
    import tempfile
    from urllib.parse import urlparse

    target = urlparse(database_url)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="zeropay-pgbouncer-"))
    user = target.username or "postgres"
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 200\n"
        "default_pool_size = 25\nmin_pool_size = 0\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    command = [pgbouncer_binary(), str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        for item in (workdir, *workdir.iterdir()):
            shutil.chown(item, "postgres")
        command = [pgbouncer_binary(), "-u", "postgres", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                log = (
                    (workdir / "pgbouncer.log").read_text()
                    if (workdir / "pgbouncer.log").exists()
                    else ""
                )
                raise RuntimeError(f"pgbouncer exited: {log[-500:]}")
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(listening, timeout=20, what="pgbouncer")
        yield f"postgresql://{user}@127.0.0.1:{port}{target.path}"
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in /tmp), which it may stop and start."""

    def __init__(self) -> None:
        import glob
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise FileNotFoundError("PostgreSQL server binaries are not installed")
        self._bin = Path(found[-1]).parent
        self.workdir = Path(tempfile.mkdtemp(prefix="zeropay-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        subprocess.run(
            [
                *self._as,
                str(self._bin / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    def replica(self) -> PrivatePostgres:
        """A streaming-replication standby of this server (pg_basebackup -R), not started."""
        standby = PrivatePostgres.__new__(PrivatePostgres)
        standby._bin, standby._as = self._bin, self._as
        standby.workdir = Path(str(self.workdir) + "-replica")
        standby.workdir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(standby.workdir, "postgres")
        standby.data = standby.workdir / "data"
        standby.port = free_port()
        standby.url = f"postgresql://postgres@127.0.0.1:{standby.port}/postgres"
        subprocess.run(
            [
                *self._as,
                str(self._bin / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        return standby

    def start(self) -> None:
        subprocess.run(
            [
                *self._as,
                str(self._bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(self.workdir / "server.log"),
                "-o",
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir}",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    def stop(self) -> None:
        subprocess.run(
            [
                *self._as,
                str(self._bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-m",
                "fast",
                "stop",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
