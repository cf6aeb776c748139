"""Hypercorn's HTTP/1.1 connections, served with a bound and a clean shutdown.

Hypercorn's ``worker_serve`` accepts without limit, so a flood of connections exhausts the
process's descriptors (accepts then fail and the log floods), and on shutdown a keep-alive
client is not told to go away. This is the same driver with both fixed, built from
Hypercorn's own pieces (its lifespan, worker context and per-connection ``TCPServer``):

- at most ``max_connections`` connections are open at once; further ones wait in the kernel's
  listen backlog until one closes (a capacity limiter taken before each accept);
- connections are shared fairly (:class:`Fairness`): one address holds at most
  ``max_per_peer`` of them (a further one is accepted and closed at once, so it never sits in
  the backlog ahead of other clients), trusted proxies excepted; when the bound is near, the
  longest-idle keep-alive connections are closed to make room, and idle time is cut to
  :data:`PRESSED_KEEP_ALIVE` seconds;
- on shutdown the listeners close first, then ``on_draining`` runs (the app answers
  ``Connection: close`` from then on), then idle keep-alive connections are closed at once,
  and in-flight requests get ``graceful_timeout`` to finish before they are cancelled;
- a connection's own failure is logged and ends that connection only;
- the app's ``send`` is shielded from cancellation (:func:`shielded_sends`);
- the keep-alive idle timer is one task per connection (:class:`_IdleTimer`), not a task
  started and cancelled around every request;
- a response's head and body go out in one write (:class:`_TCPServer`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.events import Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr

log = logging.getLogger("zeropay.http")

#: accept(2) errors that mean "out of descriptors or memory for now": wait and try again
#: (as ``trio.serve_listeners`` does), never crash.
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_CAPACITY_PAUSE = 0.1


def shielded_sends(app: Any) -> Any:
    """``app`` with every ``send`` it makes shielded from cancellation.

    When a response goes out before its request body has fully arrived (a 413, a 408),
    Hypercorn closes the connection from inside that ``send``, after queueing
    ``http.disconnect`` for the app. Quart-Trio answers the disconnect by cancelling the
    request's nursery, which is the task doing the ``send``: the close is cancelled halfway,
    and the socket stays open (CLOSE-WAIT once the client leaves) with its connection
    wedged. Hypercorn already shields its socket writes, so the shield adds no new way to
    block; it only lets the close finish.
    """

    async def shielded_app(scope: Any, receive: Any, send: Any) -> None:
        async def shielded_send(message: Any) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, shielded_send)

    return shielded_app


class _IdleTimer:
    """Hypercorn's keep-alive idle timer, without a task per request.

    Hypercorn's ``TrioSingleTask`` cancels the timer task when a request arrives and starts
    a new one (under a lock, through ``nursery.start``) when it has been answered: two task
    switches and a task creation per request, about 5 % of a request's CPU. Here one watcher
    per connection sleeps until the idle deadline and, when it wakes, looks at when the
    connection last became idle: ``restart`` and ``stop`` only note the time. Same outcome
    as Hypercorn's: a connection idle for ``keep_alive_timeout`` is closed, an idle one is
    closed as soon as the server terminates, and a busy one finishes its request (whose
    answer then carries ``Connection: close``). ``finish`` ends the watcher at once (the
    peer has gone, so nothing is left to time)."""

    def __init__(self, server: _TCPServer) -> None:
        self._server = server
        self._idle_since: float | None = None
        self._scope: trio.CancelScope | None = None
        self._served = False

    async def restart(self, task_group: Any, action: object) -> None:
        self._idle_since = trio.current_time()
        self._server.fairness.idle(self._server, served=self._served)
        if self._scope is None:
            self._scope = trio.CancelScope()
            task_group._nursery.start_soon(self._watch, self._scope)

    async def stop(self) -> None:
        self._idle_since = None
        self._served = True
        self._server.fairness.busy(self._server)

    def finish(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _watch(self, scope: trio.CancelScope) -> None:
        fairness = self._server.fairness
        terminated = self._server.context.terminated
        with scope:
            while True:
                since = self._idle_since
                timeout = fairness.keep_alive_timeout()  # shorter under pressure
                wake_at = trio.current_time() + timeout if since is None else since + timeout
                if since is not None and trio.current_time() >= wake_at:
                    break  # idle for the whole timeout
                with trio.move_on_at(wake_at):
                    await terminated.wait()
                    if self._idle_since is None:
                        return  # busy: its answer closes the connection
                    break  # idle when the server terminated
            with trio.CancelScope(shield=True):
                await self._server.close_idle()


#: Keep-alive idle seconds once the connections in use pass :data:`PRESSURE_SHARE` of the bound:
#: long enough for a client's next request in a burst, short enough to free the slot.
PRESSED_KEEP_ALIVE = 1.0
#: The share of ``max_connections`` in use from which keep-alive idle time is cut.
PRESSURE_SHARE = 0.75
#: The share of ``max_connections`` kept free for new clients by closing idle connections.
ROOM_SHARE = 0.05


class Fairness:
    """Who holds the connections: open connections per peer address, and the idle ones,
    longest idle first.

    One address may hold ``max_per_peer`` connections (0: no bound), except a trusted proxy
    (``trusted``), whose connections are its many clients'. Near the global bound the idle
    ones go first (:meth:`make_room`), and keep-alive idle time shrinks
    (:meth:`keep_alive_timeout`), so a host holding connections open cannot starve others.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_peer: int,
        keep_alive_timeout: float,
        trusted: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self._keep_alive = keep_alive_timeout
        self._trusted = trusted
        self.per_peer: dict[str, int] = {}
        # Idle connections, longest idle first: since when, and whether they served a request
        # (a keep-alive connection) or were never sent one.
        self._idle: dict[_TCPServer, tuple[float, bool]] = {}
        self.open = 0
        self._closing = 0  # idle connections told to close, not closed yet
        #: Where evictions run (the connections' nursery, set when serving starts).
        self.nursery: trio.Nursery | None = None

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``; ``False`` if it is over its bound."""
        held = self.per_peer.get(peer, 0)
        if self.max_per_peer and held >= self.max_per_peer and not self._trusted(peer):
            return False
        self.per_peer[peer] = held + 1
        self.open += 1
        return True

    def closed(self, peer: str, server: _TCPServer | None) -> None:
        left = self.per_peer.get(peer, 1) - 1
        if left > 0:
            self.per_peer[peer] = left
        else:
            self.per_peer.pop(peer, None)
        self.open -= 1
        if server is not None:
            self._idle.pop(server, None)

    def idle(self, server: _TCPServer, *, served: bool) -> None:
        self._idle.pop(server, None)
        self._idle[server] = (trio.current_time(), served)
        self.make_room()

    def busy(self, server: _TCPServer) -> None:
        self._idle.pop(server, None)

    def keep_alive_timeout(self) -> float:
        """The idle time a keep-alive connection gets now."""
        if self.open >= PRESSURE_SHARE * self.max_connections:
            return min(self._keep_alive, PRESSED_KEEP_ALIVE)
        return self._keep_alive

    def make_room(self) -> None:
        """Close the longest-idle connections while fewer than :data:`ROOM_SHARE` of the
        bound (at least one) are free: a new client is never kept waiting by connections
        that only wait themselves."""
        nursery, room = self.nursery, max(1, int(ROOM_SHARE * self.max_connections))
        if nursery is None or self.max_connections - self.open + self._closing >= room:
            return  # the common case, at once
        # A connection never sent a request is spared for PRESSED_KEEP_ALIVE: it may be a
        # client that has just connected (the newcomer the room is for).
        patience = trio.current_time() - PRESSED_KEEP_ALIVE
        for server, (since, served) in list(self._idle.items()):
            if self.max_connections - self.open + self._closing >= room:
                return
            if served or since <= patience:
                del self._idle[server]
                self._closing += 1
                nursery.start_soon(self._evict, server)

    async def _evict(self, server: _TCPServer) -> None:
        try:
            with trio.CancelScope(shield=True):
                await server.close_idle()
        finally:
            self._closing -= 1


#: How a final (not 1xx) HTTP/1.1 response head begins, as h11 writes it.
_FINAL_HEAD = re.compile(rb"HTTP/1\.1 [2-5]")


class _TCPServer(TCPServer):
    """Hypercorn's connection with :class:`_IdleTimer`, closed as soon as the peer has gone,
    writing each response in one system call.

    Hypercorn keeps the keep-alive idle timer running after the peer's EOF and closes the
    socket only when that timer ends, so every connection a client closes sits in
    CLOSE-WAIT for the keep-alive timeout. Once reading has ended there is nothing to wait
    for: stop the timer (an in-flight request still finishes).

    Hypercorn writes a response's head and its body with a ``send`` each. On loopback a
    ``send`` also runs the receiver's TCP path in the sender's time, so the second one cost
    as much CPU as a Redis round trip's write. Here a final response head is held until the
    next write (its body, or the empty end of a body-less message) or any other event, and
    goes out with it. A 1xx head (``100 Continue``, which the client waits for before it
    sends the body) is never held; empty writes are skipped."""

    def __init__(self, fairness: Fairness, *args: Any) -> None:
        super().__init__(*args)
        self.fairness = fairness
        self.idle_task = self._idle_timer = _IdleTimer(self)  # type: ignore[assignment]
        self._held_head: bytes | None = None

    async def protocol_send(self, event: Event) -> None:
        held, self._held_head = self._held_head, None
        if isinstance(event, RawData):
            data = event.data if held is None else held + event.data
            if held is None and _FINAL_HEAD.match(data):
                self._held_head = data  # its body follows at once
            elif data:
                await super().protocol_send(RawData(data=data))
            return
        if held is not None:
            await super().protocol_send(RawData(data=held))
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        await super()._read_data()
        self._idle_timer.finish()

    async def close_idle(self) -> None:
        await self._initiate_server_close()


def _peer(stream: trio.SocketStream) -> str:
    """The connection's peer address (``-`` if it has already gone)."""
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "-"
    return str(address[0]) if isinstance(address, tuple) else "-"


def _abort(stream: trio.SocketStream) -> None:
    """Close a refused connection at once: an RST (SO_LINGER 0), so that no socket lingers
    in TIME-WAIT or FIN-WAIT for a client that floods."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(
            trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    stream.socket.close()


async def serve_http(
    app: Any,
    config: Config,
    *,
    sockets: Sockets,
    shutdown_trigger: Callable[[], Awaitable[object]],
    max_connections: int,
    on_draining: Callable[[], None],
    max_per_peer: int = 0,
    trusted_peer: Callable[[str], bool] = lambda _: False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (an ASGI app wrapped by ``hypercorn.utils.wrap_app``) on ``sockets``
    (listening already) until ``shutdown_trigger`` returns, then drain and return."""
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, config, state)
    context = WorkerContext(None)
    limiter = trio.CapacityLimiter(max_connections)
    fairness = Fairness(
        max_connections=max_connections,
        max_per_peer=max_per_peer,
        keep_alive_timeout=config.keep_alive_timeout,
        trusted=trusted_peer,
    )

    async def connection(stream: trio.SocketStream, token: object, peer: str) -> None:
        server: _TCPServer | None = None
        try:
            server = _TCPServer(
                fairness, app, config, context, ConnectionState(state.copy()), stream
            )
            await server
        except Exception:
            log.exception("connection failed")
        finally:
            fairness.closed(peer, server)
            limiter.release_on_behalf_of(token)

    async def accept(listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            token = object()
            await limiter.acquire_on_behalf_of(token)
            try:
                stream = await listener.accept()
            except OSError as exc:
                limiter.release_on_behalf_of(token)
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                log.warning("accept failed; pausing", extra={"fields": {"errno": exc.errno}})
                await trio.sleep(_CAPACITY_PAUSE)
                continue
            except BaseException:
                limiter.release_on_behalf_of(token)
                raise
            peer = _peer(stream)
            if not fairness.admit(peer):
                # Over its bound: closed at once (never left in the backlog ahead of others).
                limiter.release_on_behalf_of(token)
                _abort(stream)
                continue
            connections.start_soon(connection, stream, token, peer)
            fairness.make_room()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = [
            trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            for sock in sockets.insecure_sockets
        ]
        binds = [
            f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
            for sock in sockets.insecure_sockets
        ]
        async with trio.open_nursery() as connections:
            fairness.nursery = connections
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(accept, listener, connections)
                task_status.started(binds)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            on_draining()
            await context.terminated.set()  # idle keep-alive connections close now
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
