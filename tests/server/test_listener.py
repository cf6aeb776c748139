"""The listener's connection writes each response in one system call (zeropay_server.listener).

Driven directly with a recording stream: what matters is which bytes go out in which
``send_all``, which a client cannot see (the kernel may merge segments either way).
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import RawData, Updated
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from zeropay_server.listener import Fairness, _TCPServer

HEAD = b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\n"
BODY = b"{}"


class RecordingStream:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        await trio.lowlevel.checkpoint()


def connection() -> tuple[_TCPServer, RecordingStream]:
    stream = RecordingStream()
    app: Any = None
    config = Config()
    fairness = Fairness(
        max_connections=10, max_per_peer=0, keep_alive_timeout=config.keep_alive_timeout
    )
    server = _TCPServer(fairness, app, config, WorkerContext(None), ConnectionState({}), stream)
    return server, stream


async def test_a_head_and_its_body_go_out_together() -> None:
    server, stream = connection()
    await server.protocol_send(RawData(data=HEAD))
    assert stream.writes == []
    await server.protocol_send(RawData(data=BODY))
    await server.protocol_send(RawData(data=b""))  # h11's end of a content-length body
    assert stream.writes == [HEAD + BODY]


async def test_a_body_less_head_goes_out_with_the_end_of_its_message() -> None:
    server, stream = connection()
    head = b"HTTP/1.1 204 \r\n\r\n"
    await server.protocol_send(RawData(data=head))
    await server.protocol_send(RawData(data=b""))
    assert stream.writes == [head]


async def test_an_interim_head_is_never_held() -> None:
    server, stream = connection()
    await server.protocol_send(RawData(data=b"HTTP/1.1 100 \r\n\r\n"))
    assert stream.writes == [b"HTTP/1.1 100 \r\n\r\n"]  # the client waits for it


async def test_a_held_head_goes_out_before_any_other_event() -> None:
    server, stream = connection()
    await server.protocol_send(RawData(data=HEAD))
    await server.protocol_send(Updated(idle=False))
    assert stream.writes == [HEAD]


async def test_body_chunks_go_out_as_they_come() -> None:
    server, stream = connection()
    await server.protocol_send(RawData(data=b"2\r\n{}\r\n"))
    await server.protocol_send(RawData(data=b"0\r\n\r\n"))
    assert stream.writes == [b"2\r\n{}\r\n", b"0\r\n\r\n"]


def test_hypercorns_internals_the_listener_uses_are_still_there() -> None:
    """The listener subclasses Hypercorn's TCPServer and replaces its idle task: if a
    Hypercorn release renames what it relies on, this fails by name, not by a hang."""
    import inspect

    from hypercorn.trio.task_group import TaskGroup
    from hypercorn.trio.tcp_server import TCPServer

    assert callable(getattr(TCPServer, "_read_data", None))
    assert callable(getattr(TCPServer, "protocol_send", None))
    assert "idle_task" in inspect.getsource(TCPServer.__init__)
    assert "self._nursery" in inspect.getsource(TaskGroup)
