"""Processes on loopback: free ports, waiting for readiness, stopping by PID."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import redis

#: What a readiness probe may raise while its service is still starting.
STARTING_ERRORS: tuple[type[BaseException], ...] = (OSError, redis.RedisError)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    errors: tuple[type[BaseException], ...] = STARTING_ERRORS,
) -> None:
    """Poll ``predicate`` until it holds (``errors`` count as not yet), or raise
    TimeoutError after ``timeout`` seconds. Polling, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except errors:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindable(port: int) -> bool:
    """Whether ``port`` can be bound on loopback now."""
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
        if bindable(port) and bindable(port + 10_000):
            return port
    raise OSError("no free port pair for a cluster node")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie child counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> bool:
    """Send ``sig`` to ``pid`` and wait for it to go, then SIGKILL it; whether it had been
    running."""
    if not alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True
