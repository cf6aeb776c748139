"""Server processes for the end-to-end tests: started on free loopback ports, stopped by PID."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.services import free_port, wait_until


def production_keys() -> dict[str, str]:
    """Configured (not generated) keys, as production requires."""

    def b64(n: int) -> str:
        return base64.b64encode(secrets.token_bytes(n)).decode()

    return {
        "ZEROPAY_MASTER_KEYS": f"1:{b64(32)}",
        "ZEROPAY_PEPPER": b64(32),
        "ZEROPAY_RECEIPT_SIGNING_KEY": b64(32),
        "ZEROPAY_RECEIPT_KEY_ID": "e2e-1",
    }


def production_env(
    redis_url: str, prefix: str, database_url: str, **settings: str
) -> dict[str, str]:
    """A server's environment on Redis (under ``prefix``) and PostgreSQL, with configured
    keys and a cheap derivation (the count does not change the logic), and ``settings``."""
    return {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": database_url,
        "PBKDF2_ITERATIONS": "1000",
        "CRYPTO_WORKERS": "1",
        **production_keys(),
        **settings,
    }


def fresh() -> dict[str, str]:
    """A state-changing request's replay headers: a new nonce, the time now."""
    return {"X-Nonce": str(uuid.uuid4()), "X-Timestamp": str(int(time.time() * 1000))}


#: A fixed merchant key for embedded-mode servers (ZEROPAY_DEMO_MERCHANT_KEY).
DEMO_MERCHANT_KEY = "zpk_0123456789ab_" + "A" * 43


def command(env: Mapping[str, str], *words: str) -> subprocess.CompletedProcess[str]:
    """``zeropay-server WORDS...`` with ``env`` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "zeropay_server", *words],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def add_merchant(env: Mapping[str, str], merchant_id: str = "e2e-shop") -> str:
    """Migrate the database and add a merchant key, the operator's way (``zeropay-server
    migrate`` and ``zeropay-server merchants add``); returns the key the command printed."""
    for words in (["migrate"], ["merchants", "add", merchant_id]):
        done = command(env, *words)
        assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("zpk_"), done.stdout
    return key


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def still_open(sockets: list[socket.socket]) -> int:
    """How many of a client's connections the server still holds open (no EOF, no reset)."""
    alive = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            alive += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200


@contextlib.contextmanager
def running_server(
    env: Mapping[str, str], workdir: Path, name: str = "server"
) -> Iterator[ServerProcess]:
    port = free_port()
    log = workdir / f"{name}.log"
    full_env = {**os.environ, **env, "ZEROPAY_BIND": f"127.0.0.1:{port}"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "zeropay_server"], env=full_env, stdout=sink, stderr=sink
        )
    server = ServerProcess(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            return _ready(server.url)

        wait_until(up, timeout=60, what=f"server {name}")
        yield server
    finally:
        server.stop()
