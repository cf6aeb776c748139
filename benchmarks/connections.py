"""How long another client waits while one address holds many connections open.

    python -m benchmarks.connections [--holders 3000] [--requests 50] [--base REV]

Starts the embedded-default server on loopback (this tree, and with ``--base`` the same
server from a checkout of REV, side by side in one run), opens ``--holders`` connections from
127.0.0.2 (idle: connected, nothing sent; slow: a request whose body never finishes), then
times ``--requests`` requests from 127.0.0.1, each on a new connection, as a second client
would make them. Prints the second client's latency (P50, P99, max; a connect that times out
counts as the timeout) and how many of the first address's connections the server held.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.servers import ServerProcess, running_server, still_open

SLOW = b"POST /v1/session/revoke HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"
TIMEOUT = 30.0


@contextlib.contextmanager
def _tree(rev: str | None) -> Iterator[Path]:
    """This tree, or a detached worktree of ``rev`` (removed afterwards)."""
    root = Path(__file__).resolve().parents[1]
    if rev is None:
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="zeropay-base-") as where:
        add = ["git", "worktree", "add", "--quiet", "--detach", where, rev]
        subprocess.run(add, cwd=root, check=True)
        try:
            yield Path(where)
        finally:
            remove = ["git", "worktree", "remove", "--force", where]
            subprocess.run(remove, cwd=root, check=False)


def _address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _hold(server: ServerProcess, count: int, first: bytes) -> list[socket.socket]:
    """Open ``count`` connections from 127.0.0.2 at once and keep those the kernel completed
    within a few seconds (the rest wait in a full backlog: the starvation itself)."""
    pending = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(_address(server))
        pending.append(sock)
    deadline = time.monotonic() + 5.0
    held: list[socket.socket] = []
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in pending}
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            sock = by_fd.pop(fd)
            poller.unregister(fd)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                held.append(sock)
            else:
                sock.close()
    pending = list(by_fd.values())
    held.extend(pending)  # still connecting: they hold a place in the backlog
    for sock in held if first else ():
        with contextlib.suppress(OSError):
            sock.send(first)
    return held


def _second_client(server: ServerProcess, requests: int) -> list[float]:
    waits = []
    for _ in range(requests):
        started = time.perf_counter()
        try:
            with socket.create_connection(_address(server), timeout=TIMEOUT) as sock:
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                sock.recv(64)
        except OSError:
            pass
        waits.append(time.perf_counter() - started)
    return waits


def measure(tree: Path, holders: int, requests: int, first: bytes) -> dict[str, float]:
    """One measurement against the server of ``tree`` (run from there: ``-m`` puts the
    working directory first on the server's path)."""
    env = {"PYTHONPATH": str(tree), "PBKDF2_ITERATIONS": "1000"}
    here = Path.cwd()
    os.chdir(tree)
    try:
        return _measure(env, holders, requests, first)
    finally:
        os.chdir(here)


def _measure(env: dict[str, str], holders: int, requests: int, first: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work, running_server(env, Path(work)) as server:
        held = _hold(server, holders, first)
        try:
            time.sleep(1.0)  # the server takes (or refuses) them
            waits = sorted(_second_client(server, requests))
            kept = still_open(held)
        finally:
            for sock in held:
                sock.close()
    return {
        "p50_ms": 1000 * statistics.median(waits),
        "p99_ms": 1000 * waits[min(len(waits) - 1, int(0.99 * len(waits)))],
        "max_ms": 1000 * waits[-1],
        "held": kept,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.connections",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--holders", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--base", help="a commit to measure beside this tree")
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    print(f"one address holds {args.holders} connections; another makes {args.requests} requests")
    print(f"{'tree':10} {'holders':10} {'P50 ms':>9} {'P99 ms':>9} {'max ms':>9} {'held':>6}")
    trees = [("this", None)] + ([("base", args.base)] if args.base else [])
    for name, rev in trees:
        with _tree(rev) as tree:
            for kind, first in (("idle", b""), ("slow-body", SLOW)):
                r = measure(tree, args.holders, args.requests, first)
                print(
                    f"{name:10} {kind:10} {r['p50_ms']:9.1f} {r['p99_ms']:9.1f} "
                    f"{r['max_ms']:9.1f} {r['held']:6.0f}",
                    flush=True,
                )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
