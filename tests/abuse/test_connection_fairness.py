"""One host cannot starve everyone of connections.

Found by attack: with 1,500 idle sockets from one address, other clients waited 17-20 s; with
3,000, their connects timed out; slow bodies gave 8-10.7 s waits (one global bound of 1,000
connections, no bound per peer, a 20 s keep-alive).

Here one address opens 3,000 connections, idle or each in the middle of a slow request, on
the defaults; another client's requests are still answered, and the server holds no more of
the first address's connections than its bound per peer. (How long the other client waits is
measured by ``python -m benchmarks.connections``, not asserted: this machine is shared.)
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import ServerProcess, running_server, still_open
from tests.services import wait_until
from zeropay_server.config import DEFAULT_MAX_CONNECTIONS_PER_PEER

HOLDERS = 3_000
#: A hang detector, not a performance bound.
PATIENCE = 10.0
SLOW = b"POST /v1/session/revoke HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server({}, tmp_path_factory.mktemp("fair")) as running:
        yield running


def _address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


@contextlib.contextmanager
def _held(server: ServerProcess, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    """``HOLDERS`` connections from 127.0.0.2, each sent ``first_bytes``."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(HOLDERS):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.settimeout(PATIENCE)
            try:
                sock.connect(_address(server))
                if first_bytes:
                    sock.sendall(first_bytes)
            except OSError:
                sock.close()  # refused or reset: the server would not hold it
                continue
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _answered(server: ServerProcess) -> int:
    """Another client's request, on a connection of its own: the status it got."""
    with socket.create_connection(_address(server), timeout=PATIENCE) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head = sock.recv(64)
    return int(head.split()[1])


@pytest.mark.slow
@pytest.mark.parametrize("first_bytes", [b"", SLOW], ids=["idle", "slow-body"])
def test_one_address_holding_3000_connections_starves_nobody(
    server: ServerProcess, first_bytes: bytes
) -> None:
    with _held(server, first_bytes) as sockets:
        wait_until(
            lambda: still_open(sockets) <= DEFAULT_MAX_CONNECTIONS_PER_PEER,
            timeout=PATIENCE,
            what="connections beyond the peer's bound closed",
        )
        assert [_answered(server) for _ in range(20)] == [200] * 20
    assert "connection failed" not in server.log.read_text()


def test_the_bound_is_per_address(tmp_path: Path) -> None:
    with running_server({"HTTP_MAX_CONNECTIONS_PER_PEER": "3"}, tmp_path) as server:
        held = []
        for _ in range(5):
            sock = socket.socket()
            sock.bind(("127.0.0.3", 0))
            sock.connect(_address(server))
            held.append(sock)
        wait_until(lambda: still_open(held) == 3, timeout=PATIENCE, what="two refused")
        assert _answered(server) == 200  # from 127.0.0.1, another address
        for sock in held:
            sock.close()
