"""Backends for the contract suite, each opened inside the test's own Trio run.

Loop-bound clients (redis-py, asyncpg) are created inside ``trio_asyncio.open_loop()`` in the
test body's context manager, never in a fixture shared across Trio runs: they belong to the
loop that created them (docs/stack.md, "Serving"), and pytest-trio 0.8 with Hypothesis hands
later examples the first example's fixture value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio_asyncio

from adapters.bridge import aio, bridged
from adapters.memory import MemoryStore
from adapters.ports import DurableStore, StateStore
from adapters.postgres import PostgresStore
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from tests.services import (
    REDIS_URL,
    RedisCluster,
    delete_prefix,
    running_pgbouncer,
    running_redis_cluster,
    temporary_database,
    unique_prefix,
)

STATE_BACKENDS = ["memory", "redis", "cluster"]
DURABLE_BACKENDS = ["memory", "postgres", "pgbouncer"]


@dataclasses.dataclass
class ShiftedClock:
    """Wall time plus an offset a test moves forward: the memory store's injected clock."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


#: The clock of each open memory store (by id), which :func:`after` moves.
_CLOCKS: dict[int, ShiftedClock] = {}


async def after(store: Any, ms: int, holds: Callable[[], Awaitable[bool]]) -> None:
    """Assert that ``holds()`` becomes true ``ms`` from now: exactly on the memory store, by
    moving its clock past that moment, and on Redis, whose clock a test cannot move, by
    polling with a deadline."""
    clock = _CLOCKS.get(id(store))
    if clock is not None:
        assert not await holds(), "not before its time"
        clock.offset += (ms + 1) / 1000
        assert await holds()
        return
    with trio.fail_after(10):
        while not await holds():
            await trio.sleep(0.01)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with running_redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def migrated_database() -> Iterator[str]:
    import asyncio

    with temporary_database() as url:

        async def migrate() -> None:
            store = await PostgresStore.connect(url, min_size=1, max_size=2)
            try:
                await store.migrate(today=dt.date.today())
            finally:
                await store.aclose()

        asyncio.run(migrate())
        yield url


@pytest.fixture(scope="session")
def pgbouncer_url(migrated_database: str) -> Iterator[str]:
    with running_pgbouncer(migrated_database) as url:
        yield url


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    kind = request.param
    cluster = request.getfixturevalue("redis_cluster") if kind == "cluster" else None
    return {"kind": kind, "cluster": cluster}


@pytest.fixture
def durable_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    kind = request.param
    url = None
    if kind == "postgres":
        url = request.getfixturevalue("migrated_database")
    elif kind == "pgbouncer":
        url = request.getfixturevalue("pgbouncer_url")
    return {"kind": kind, "url": url}


@contextlib.asynccontextmanager
async def open_state_store(
    backend: dict[str, Any], *, timeout: float = 10
) -> AsyncIterator[StateStore]:
    """A Trio-callable store implementing AdmissionPort, SessionPort and AuditStreamPort."""
    kind = backend["kind"]
    if kind == "memory":
        clock = ShiftedClock()
        memory = MemoryStore(clock=clock)
        _CLOCKS[id(memory)] = clock
        try:
            yield memory
        finally:
            del _CLOCKS[id(memory)]
        return
    prefix = unique_prefix()
    async with trio_asyncio.open_loop():
        if kind == "redis":
            store = await aio(RedisStore.connect)(url=REDIS_URL, keys=KeySpace(prefix))
        else:
            store = await aio(RedisStore.connect)(
                cluster_nodes=backend["cluster"].nodes, keys=KeySpace(prefix)
            )
        try:
            yield from_trio(store, timeout=timeout)
        finally:
            await aio(store.aclose)()
    if kind == "redis":
        delete_prefix(REDIS_URL, prefix)


@contextlib.asynccontextmanager
async def open_durable_store(backend: dict[str, Any]) -> AsyncIterator[DurableStore]:
    """A Trio-callable store implementing EnrollmentPort and AuditLogPort."""
    if backend["kind"] == "memory":
        yield MemoryStore(clock=time.time)
        return
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(backend["url"], min_size=1, max_size=4)
        try:
            yield bridged(store, dependency="postgresql", timeout=10)
        finally:
            await aio(store.aclose)()
