"""Hypercorn's HTTP/1.1 connections, served with a bound and a clean shutdown.

Hypercorn's ``worker_serve`` accepts without limit, so a flood of connections exhausts the
process's descriptors (accepts then fail and the log floods), and on shutdown a keep-alive
client is not told to go away. This is the same driver with both fixed, built from
Hypercorn's own pieces (its lifespan, worker context and per-connection ``TCPServer``):

- at most ``max_connections`` connections are open at once; further ones wait in the kernel's
  listen backlog until one closes (a capacity limiter taken before each accept);
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

import errno
import logging
import re
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

    async def restart(self, task_group: Any, action: object) -> None:
        self._idle_since = trio.current_time()
        if self._scope is None:
            self._scope = trio.CancelScope()
            task_group._nursery.start_soon(self._watch, self._scope)

    async def stop(self) -> None:
        self._idle_since = None

    def finish(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _watch(self, scope: trio.CancelScope) -> None:
        timeout = self._server.config.keep_alive_timeout
        terminated = self._server.context.terminated
        with scope:
            while True:
                since = self._idle_since
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

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
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


async def serve_http(
    app: Any,
    config: Config,
    *,
    sockets: Sockets,
    shutdown_trigger: Callable[[], Awaitable[object]],
    max_connections: int,
    on_draining: Callable[[], None],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (an ASGI app wrapped by ``hypercorn.utils.wrap_app``) on ``sockets``
    (listening already) until ``shutdown_trigger`` returns, then drain and return."""
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, config, state)
    context = WorkerContext(None)
    limiter = trio.CapacityLimiter(max_connections)

    async def connection(stream: trio.SocketStream, token: object) -> None:
        try:
            await _TCPServer(app, config, context, ConnectionState(state.copy()), stream)
        except Exception:
            log.exception("connection failed")
        finally:
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
            connections.start_soon(connection, stream, token)

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
