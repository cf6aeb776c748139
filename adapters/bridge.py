"""Calling the asyncio adapters from Trio.

The Redis and PostgreSQL clients are asyncio libraries; the server is Trio. trio-asyncio runs
an asyncio loop inside Trio, and :class:`TrioBridge` turns each coroutine method of an adapter
into a Trio coroutine: one ``aio_as_trio`` crossing per port call (each crossing costs about
40 microseconds and one asyncio Task, docs/stack.md, "trio-asyncio"; which is why a port
method is a whole request step). The deadline is set here, on the Trio side: a call that has
not answered in ``timeout`` seconds is cancelled (asyncpg cancels the query on the server;
redis-py drops the connection) and raises :class:`~adapters.errors.DependencyUnavailable`.

An adapter may also offer a Trio face (``native``): an object whose coroutine methods named in
``native_methods`` already run on Trio (the Redis store's request path on its own Trio pool,
:mod:`adapters.redis_trio`). Those are awaited directly, with no crossing and no asyncio
task, under the same deadline and observation; everything else crosses.

Only for use inside ``trio_asyncio.open_loop()``; the adapters must be created inside the same
loop (``await bridge.aio(RedisStore.connect)(...)``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import trio
import trio_asyncio

from .errors import DependencyUnavailable

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


log = logging.getLogger("zeropay.bridge")


@contextlib.asynccontextmanager
async def open_loop() -> AsyncIterator[Any]:
    """``trio_asyncio.open_loop()`` for a long-running server.

    trio-asyncio's default handler re-raises every error asyncio reports as unhandled (a
    future whose exception nobody retrieved, say asyncpg's when a query was cancelled midway)
    inside its nursery, which ends the loop and the process with it: one library's stray
    future must not take a server down. Here such errors are logged, by type only (the
    context can hold query text), and the loop goes on.
    """
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_unhandled)
        yield loop


def _log_unhandled(loop: Any, context: dict[str, Any]) -> None:
    exception = context.get("exception")
    log.warning(
        "asyncio reported an unhandled error",
        extra={
            "fields": {
                "error": type(exception).__name__ if exception is not None else None,
                "what": str(context.get("message", ""))[:80],
            }
        },
    )


def aio(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """An asyncio coroutine function as a Trio one (no deadline)."""
    wrapped: Callable[P, Awaitable[R]] = trio_asyncio.aio_as_trio(function)
    return wrapped


class TrioBridge:
    """Proxy an asyncio adapter: coroutine methods become Trio coroutines with a deadline.

    ``observe``, if given, is called with each call's duration in seconds (a metric).
    ``native_methods`` are awaited on ``native`` (the adapter's Trio face) without crossing."""

    def __init__(
        self,
        target: object,
        *,
        dependency: str,
        timeout: float,
        observe: Callable[[float], None] | None = None,
        native: object | None = None,
        native_methods: frozenset[str] = frozenset(),
    ) -> None:
        self._target = target
        self._dependency = dependency
        self._timeout = timeout
        self._observe = observe
        self._native = native
        self._native_methods = native_methods if native is not None else frozenset()
        self._cache: dict[str, Any] = {}

    @property
    def target(self) -> object:
        """The adapter behind the bridge."""
        return self._target

    def __getattr__(self, name: str) -> Any:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        if name in self._native_methods:
            crossing = getattr(self._native, name)
        else:
            crossing = trio_asyncio.aio_as_trio(attribute)
        dependency, timeout, observe = self._dependency, self._timeout, self._observe

        @functools.wraps(attribute)
        async def call(*args: Any, **kwargs: Any) -> Any:
            started = trio.current_time()
            try:
                with trio.move_on_after(timeout):
                    return await crossing(*args, **kwargs)
                raise DependencyUnavailable(dependency)
            finally:
                if observe is not None:
                    observe(trio.current_time() - started)

        self._cache[name] = call
        return call


def bridged(
    target: T,
    *,
    dependency: str,
    timeout: float,
    observe: Callable[[float], None] | None = None,
    native: T | None = None,
    native_methods: frozenset[str] = frozenset(),
) -> T:
    """``target`` behind a :class:`TrioBridge`, typed as ``target`` itself: each coroutine
    method keeps its signature (only the loop it runs on and the deadline change), so
    assigning the result to a port (``state: StateStore = bridged(redis, ...)``) has mypy
    check that the adapter satisfies it."""
    return cast(
        T,
        TrioBridge(
            target,
            dependency=dependency,
            timeout=timeout,
            observe=observe,
            native=native,
            native_methods=native_methods,
        ),
    )
