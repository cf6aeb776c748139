"""Connections a slow, odd or departing client leaves behind, over raw sockets
against a real server process (the embedded default: this is about HTTP, not storage)."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import ServerProcess, running_server
from tests.services import wait_until

#: A hang detector, not a performance bound: every answer here takes milliseconds.
PATIENCE = 10.0


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (content-length framed); raises TimeoutError on a hang."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a response")
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _close_wait_sockets(port: int) -> int:
    """Server-side sockets of ``port`` in CLOSE-WAIT (the peer closed; we never did)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                if int(local.split(":")[1], 16) == port and state == "08":
                    count += 1
    return count


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server({"HTTP_MAX_CONNECTIONS": "8"}, tmp_path) as running:
        yield running


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/session/revoke"),  # answered 401 without a body-reading handler step
        ("DELETE", "/v1/enrollment/delete/123e4567-e89b-42d3-a456-426614174000"),
        ("POST", "/no/such/route"),  # 404
        ("PUT", "/v1/verification/initiate"),  # 405
    ],
)
def test_a_body_sent_after_its_headers_never_wedges_the_connection(
    server: ServerProcess, method: str, path: str
) -> None:
    body = b'{"session_id": "x"}'
    for _ in range(3):
        sock = _connect(server)
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        time.sleep(0.05)  # two packets: the wedge needs the body to arrive late
        sock.sendall(body)
        first, _, _ = _read_response(sock)
        assert 400 <= first < 500
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        second, _, answer = _read_response(sock)
        assert (second, answer) == (200, b'{"status": "ok"}')
        sock.close()
    port = int(server.url.rsplit(":", 1)[1])
    wait_until(lambda: _close_wait_sockets(port) == 0, timeout=PATIENCE, what="no CLOSE-WAIT")


def test_an_oversized_body_is_refused_and_its_connection_closed(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/verification/verify HTTP/1.1\r\nHost: t\r\n")
        sock.sendall(b"Content-Length: 20000\r\n\r\n")  # and never the body
        status, headers, _ = _read_response(sock)
        assert (status, headers["connection"]) == (413, "close")
        assert _closed_by_server(sock)


#: A request whose body is still on its way: the connection is busy, not idle.
_UNFINISHED = (
    b"POST /v1/session/revoke HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{"
)


def _alive(sock: socket.socket) -> bool:
    """Whether the server still holds the connection open (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def _busy(server: ServerProcess, count: int) -> list[socket.socket]:
    """``count`` connections each in the middle of a request. One the server took for idle
    (accepted before its bytes were read) and closed to make room is opened again."""
    held: list[socket.socket] = []

    def settled() -> bool:
        for sock in [s for s in held if not _alive(s)]:
            held.remove(sock)
            sock.close()
        while len(held) < count:
            sock = _connect(server)
            sock.sendall(_UNFINISHED)
            held.append(sock)
        return all(_alive(s) for s in held)

    wait_until(settled, timeout=PATIENCE, what="connections busy")
    return held


def test_connections_beyond_the_bound_wait_while_every_one_is_busy(
    server: ServerProcess,
) -> None:
    held = _busy(server, 8)
    waiting = _connect(server)  # accepted by the kernel, not yet by the server
    waiting.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
    waiting.settimeout(0.5)
    with pytest.raises(TimeoutError):
        waiting.recv(1)
    held.pop().close()
    waiting.settimeout(PATIENCE)
    assert _read_response(waiting)[0] == 200
    for sock in [*held, waiting]:
        sock.close()
    assert "accept failed" not in server.log.read_text()


def test_near_the_bound_idle_connections_make_room_for_a_new_client(
    server: ServerProcess,
) -> None:
    idle = []
    for _ in range(8):
        sock = _connect(server)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock)[0] == 200
        idle.append(sock)
    newcomer = _connect(server)
    newcomer.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _read_response(newcomer)[0] == 200  # the longest-idle connections made room
    assert not _alive(idle[0])
    assert _alive(idle[-1])
    for sock in [*idle, newcomer]:
        sock.close()


def test_sigterm_closes_keep_alive_connections_instead_of_leaving_them_hanging(
    server: ServerProcess,
) -> None:
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(_connect(server)) for _ in range(3)]
        for sock in idle:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _read_response(sock)[0] == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for sock in idle:
            # A request the server took before it saw the signal is answered; one after, gets
            # "Connection: close" or finds the connection closed. Either way the server then
            # closes the connection: nothing is left to hang.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                assert _read_response(sock)[0] == 200
            assert _closed_by_server(sock)
        assert server.process.wait(timeout=PATIENCE) == 0
        assert time.monotonic() - started < PATIENCE
    # The embedded default runs only the background tasks it has work for: none restarted.
    assert "restarting" not in server.log.read_text()


def test_the_keep_alive_timer_closes_an_idle_connection_and_spares_a_busy_one(
    tmp_path: Path,
) -> None:
    """One idle timer per connection (zeropay_server.listener._IdleTimer): each request
    pushes the deadline back, and an idle connection is closed when it passes."""
    with running_server({"HTTP_KEEP_ALIVE_TIMEOUT": "2"}, tmp_path) as running:
        with _connect(running) as idle, _connect(running) as busy:
            idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _read_response(idle)[0] == 200
            opened = time.monotonic()
            answered = 0
            while time.monotonic() - opened < 5:  # 2.5 timeouts, a request every 0.1 s
                busy.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
                assert _read_response(busy)[0] == 200
                answered += 1
                time.sleep(0.1)  # the client's pace, not a wait for the server
            idle.settimeout(PATIENCE)
            assert _closed_by_server(idle)  # closed after 2 s (read at once: it already was)
            assert answered >= 20
        port = int(running.url.rsplit(":", 1)[1])
        wait_until(lambda: _close_wait_sockets(port) == 0, timeout=PATIENCE, what="no CLOSE-WAIT")
