"""The audit trail loses nothing and doubles nothing, through real faults.

Real Redis streams, real PostgreSQL. Each test counts what reached ``audit_log`` against what
was appended: every event exactly once. Nothing sleeps to wait; outcomes are polled with a
deadline (the flusher's own polling interval is its production behaviour).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from adapters.audit import AuditFlusher
from adapters.bridge import aio, bridged
from adapters.postgres import PostgresStore
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from tests.adapters.helpers import event, new_user
from tests.services import (
    REDIS_URL,
    PrivatePostgres,
    delete_prefix,
    private_postgres,
    unique_prefix,
)
from zeropay_proto.audit import AuditEvent

DEADLINE = 60


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@contextlib.asynccontextmanager
async def open_stores(database_url: str) -> AsyncIterator[tuple[Any, Any, PostgresStore]]:
    prefix = unique_prefix()
    async with trio_asyncio.open_loop():
        stream = await aio(RedisStore.connect)(url=REDIS_URL, keys=KeySpace(prefix))
        log = await aio(PostgresStore.connect)(database_url, min_size=1, max_size=4)
        await aio(log.migrate)(today=dt.date.today())
        try:
            yield (
                from_trio(stream, timeout=10),
                bridged(log, dependency="postgresql", timeout=5),
                log,
            )
        finally:
            await aio(stream.aclose)()
            await aio(log.aclose)()
    delete_prefix(REDIS_URL, prefix)


async def stored_ids(database_url: str, events: list[AuditEvent]) -> list[str]:
    async def fetch() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT event_id::text FROM audit_log WHERE event_id = ANY($1::uuid[])",
                [e.event_id for e in events],
            )
        finally:
            await conn.close()
        return [r[0] for r in rows]

    result: list[str] = await aio(fetch)()
    return result


async def wait_for(predicate: Any, what: str) -> None:
    with trio.fail_after(DEADLINE):
        while not await predicate():
            await trio.sleep(0.05)


class HangingAcknowledge:
    """A stream whose acknowledge never returns: the flusher dies between write and ack."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reached = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def acknowledge(self, entries: Any) -> None:
        self.reached.set()
        await trio.sleep_forever()


async def test_flusher_killed_between_write_and_acknowledge_loses_and_doubles_nothing(
    postgres_server: PrivatePostgres,
) -> None:
    async with open_stores(postgres_server.url) as (stream, log, _):
        events = [event(new_user()) for _ in range(250)]
        for e in events:
            await stream.append(e)
        doomed_stream = HangingAcknowledge(stream)
        doomed = AuditFlusher(doomed_stream, log, consumer="doomed", batch_size=100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed.run)
            with trio.fail_after(DEADLINE):
                await doomed_stream.reached.wait()
            nursery.cancel_scope.cancel()  # killed after writing its first batch
        assert doomed.statistics().events_written == 0  # it never got to count the write
        assert len(await stored_ids(postgres_server.url, events)) == 100

        heir = AuditFlusher(stream, log, consumer="heir", batch_size=100, flush_interval=0.2,
                            reclaim_idle_ms=300)  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heir.run)

            async def drained() -> bool:
                return bool(await stream.backlog() == 0 and heir.statistics().buffered == 0)

            await wait_for(drained, "stream drained")
            nursery.cancel_scope.cancel()
        stored = await stored_ids(postgres_server.url, events)
        assert sorted(stored) == sorted(e.event_id for e in events)  # none lost, none doubled
        stats = heir.statistics()
        assert stats.events_written == 150
        assert stats.duplicates_skipped == 100  # the reclaimed batch, written again harmlessly


async def test_a_second_flusher_takes_over_what_a_dead_one_had_read(
    postgres_server: PrivatePostgres,
) -> None:
    async with open_stores(postgres_server.url) as (stream, log, _):
        events = [event(new_user()) for _ in range(120)]
        for e in events:
            await stream.append(e)
        taken = await stream.read_batch("dead", 1000, 60_000)  # read, never written or acked
        assert len(taken) == 120
        heir = AuditFlusher(stream, log, consumer="heir", batch_size=100, flush_interval=0.2,
                            reclaim_idle_ms=300)  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heir.run)

            async def drained() -> bool:
                return bool(await stream.backlog() == 0)

            await wait_for(drained, "stream drained")
            nursery.cancel_scope.cancel()
        stored = await stored_ids(postgres_server.url, events)
        assert sorted(stored) == sorted(e.event_id for e in events)
        assert heir.statistics().duplicates_skipped == 0


async def test_events_wait_in_the_stream_while_postgres_is_down(
    postgres_server: PrivatePostgres,
) -> None:
    async with open_stores(postgres_server.url) as (stream, log, _):
        events: list[AuditEvent] = []
        flusher = AuditFlusher(stream, log, consumer="survivor", batch_size=50, flush_interval=0.2)

        async def produce(count: int) -> None:
            for _ in range(count):
                e = event(new_user())
                await stream.append(e)
                events.append(e)
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher.run)
            await produce(100)

            async def some_written() -> bool:
                return flusher.statistics().events_written > 0

            await wait_for(some_written, "first batch written")
            await trio.to_thread.run_sync(postgres_server.stop)
            await produce(150)  # events keep coming while PostgreSQL is down

            async def failing() -> bool:
                return flusher.statistics().failures > 0

            await wait_for(failing, "flusher noticed the outage")
            written_during_outage = flusher.statistics().events_written
            await trio.to_thread.run_sync(postgres_server.start)
            await produce(50)

            async def all_written() -> bool:
                return bool(
                    flusher.statistics().events_written == len(events)
                    and await stream.backlog() == 0
                )

            await wait_for(all_written, "every event written")
            nursery.cancel_scope.cancel()
        stored = await stored_ids(postgres_server.url, events)
        assert len(events) == 300
        assert written_during_outage < 300
        assert sorted(stored) == sorted(e.event_id for e in events)
        assert flusher.statistics().duplicates_skipped == 0


async def test_drain_flushes_everything_readable(postgres_server: PrivatePostgres) -> None:
    async with open_stores(postgres_server.url) as (stream, log, _):
        events = [event(new_user()) for _ in range(230)]
        for e in events:
            await stream.append(e)
        flusher = AuditFlusher(stream, log, consumer="closing", batch_size=100)
        assert await flusher.drain() == 230
        assert await stream.backlog() == 0
        assert len(await stored_ids(postgres_server.url, events)) == 230


def test_flusher_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        AuditFlusher(object(), object(), consumer="x", batch_size=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        AuditFlusher(object(), object(), consumer="x", flush_interval=0)  # type: ignore[arg-type]
