"""Round trips to a standalone Redis on Trio's own sockets: the request path without a bridge.

Every request step is one round trip of script calls (:meth:`ScriptRunner._send`). Through
trio-asyncio each one costs a crossing into asyncio, an asyncio task and redis-py's pool
(BENCHMARKS.md, "What bounds initiate"): about half of an initiate's CPU above the bare
Quart-Trio route. Here the round trip is what it is on the wire: the calls encoded in one
write (:func:`adapters.resp.pack`) on a pooled non-blocking socket, and the replies read back
through hiredis, the C parser redis-py itself uses, with redis-py's error classes, so that
:func:`adapters.redis_errors.is_unavailable` and the NOSCRIPT reload read its errors exactly as
they read redis-py's.

The pool behaves as redis-py's does where it matters to faults:

- an idle connection is checked before it is reused (a non-blocking peek: a connection the
  server closed, say on a restart, is dropped and a new one opened, so nobody is refused for a
  restart that is over);
- a round trip interrupted midway (cancelled at its deadline, or broken) may leave replies
  unread, so its connection is closed, never handed to the next caller with them;
- transport failures are ``redis.exceptions.ConnectionError`` (a 503), never a bare Trio error.

Only plain TCP or a Unix socket, RESP2, with an optional password and database: what
:meth:`TrioRedisPool.for_client` finds in a redis-py client's settings. Anything else (TLS, RESP3)
is left to redis-py behind the bridge. The number of connections is bounded by the caller (the
store's gate), as redis-py's pool is.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rexc
import trio
from redis._parsers.base import BaseParser

from . import resp


@dataclass(frozen=True)
class ServerAddress:
    """Where a standalone Redis listens and how a connection logs in."""

    host: str = "127.0.0.1"
    port: int = 6379
    #: A Unix socket's path instead of host and port.
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_name: str | None = None

    def login(self) -> list[tuple[str, ...]]:
        """The commands a new connection sends before its first round trip."""
        commands: list[tuple[str, ...]] = []
        if self.password is not None:
            user = () if self.username is None else (self.username,)
            commands.append(("AUTH", *user, self.password))
        if self.client_name is not None:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        if self.db:
            commands.append(("SELECT", str(self.db)))
        return commands


def _reply_error(message: str) -> Exception:
    """An error reply as redis-py raises it (``NOSCRIPT`` → NoScriptError, ``OOM``, ...)."""
    error: Exception = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


class _Connection:
    """One socket and its reply parser; used by one task at a time."""

    __slots__ = ("_reader", "_socket")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._socket = sock
        self._reader = hiredis.Reader(protocolError=rexc.InvalidResponse, replyError=_reply_error)

    def usable(self) -> bool:
        """Whether the connection can carry a request: neither closed by the server nor holding
        bytes nobody asked for (a non-blocking peek, as redis-py's pool checks)."""
        try:
            self._socket.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # b"": the server closed it; anything else: stray bytes

    async def round_trip(self, packed: bytes, count: int) -> list[Any]:
        """Write ``packed`` and read ``count`` replies (an error reply is an exception
        instance in its place). Checkpoints at least once, as every Trio operation does."""
        sock, reader = self._socket, self._reader
        waited = False
        view = memoryview(packed)
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                waited = True
        replies: list[Any] = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is not False:
                replies.append(reply)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                waited = True
                continue
            if not data:
                raise rexc.ConnectionError("Redis closed the connection")
            reader.feed(data)
        if not waited:  # answered without a pause: still a schedule point, never cancelled
            await trio.lowlevel.cancel_shielded_checkpoint()
        return replies

    def close(self) -> None:
        self._socket.close()


class TrioRedisPool:
    """Connections to one standalone Redis, for round trips from Trio (LIFO: the warmest
    connection first)."""

    def __init__(self, address: ServerAddress) -> None:
        self.address = address
        self._idle: list[_Connection] = []
        self._closed = False

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> TrioRedisPool | None:
        """A pool to the server ``client`` talks to, with its login; ``None`` where this pool
        cannot speak as the client does (TLS, RESP3, another connection class)."""
        pool = client.connection_pool
        settings: dict[str, Any] = pool.connection_kwargs
        if settings.get("protocol") not in (None, 2, "2"):
            return None
        address = ServerAddress(
            db=int(settings.get("db") or 0),
            username=settings.get("username"),
            password=settings.get("password"),
            client_name=settings.get("client_name"),
        )
        if pool.connection_class is aioredis.Connection:
            host, port = settings.get("host", "localhost"), int(settings.get("port", 6379))
            return cls(replace(address, host=host, port=port))
        if pool.connection_class is aioredis.UnixDomainSocketConnection:
            return cls(replace(address, path=settings["path"]))
        return None

    async def round_trip(self, packed: bytes, count: int) -> list[Any]:
        """Send ``packed`` (``count`` commands) on one connection and return the replies."""
        connection = await self._acquire()
        try:
            replies = await connection.round_trip(packed, count)
        except BaseException as exc:
            connection.close()
            if isinstance(exc, OSError):
                raise rexc.ConnectionError("the connection to Redis broke") from exc
            raise
        if self._closed:
            connection.close()
        else:
            self._idle.append(connection)
        return replies

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise rexc.ConnectionError("the Redis pool is closed")
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return await self._connect()

    async def _connect(self) -> _Connection:
        address = self.address
        try:
            if address.path is not None:
                stream: trio.SocketStream = await trio.open_unix_socket(address.path)
            else:
                stream = await trio.open_tcp_stream(address.host, address.port)
        except OSError as exc:
            raise rexc.ConnectionError(f"cannot connect to Redis: {exc.strerror}") from exc
        # The stream set TCP_NODELAY; the connection takes its descriptor and drives it with
        # Trio's readiness waits directly, without the stream's layers.
        raw = stream.socket
        connection = _Connection(
            socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        )
        login = address.login()
        if login:
            try:
                replies = await connection.round_trip(resp.pack(login), len(login))
            except BaseException:
                connection.close()
                raise
            for reply in replies:
                if isinstance(reply, Exception):
                    connection.close()
                    raise reply
        return connection

    def close(self) -> None:
        """Close the idle connections; connections in use close when their round trip ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
