"""The audit flusher reads in batches under a steady load, not once per event.

On the in-memory store (the flusher is the same Trio code over any :class:`AuditStreamPort`)
and Trio's autojumping MockClock, so the load's timing is exact and the test takes no
wall-clock time: a producer appends one event every 5 ms (200 events/s) for 10 s of virtual
time, and the reads the flusher made are counted. Redis reads and reclaims cost a round trip
each, so this ratio is the one ``python -m benchmarks.cpu`` prints per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from adapters.audit import POLL_INTERVAL, AuditFlusher
from adapters.memory import MemoryStore
from adapters.ports import StreamEntry
from tests.adapters.helpers import event, new_user

RATE = 200
SECONDS = 10


class CountingStream:
    """The memory store's stream side, counting reads and reclaims."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.reads = self.reclaims = 0

    async def append(self, entry: object) -> None:
        raise AssertionError("the flusher never appends")

    async def read_batch(
        self, consumer: str, count: int, reclaim_idle_ms: int, *, reclaim: bool = True
    ) -> list[StreamEntry]:
        self.reads += 1
        self.reclaims += reclaim
        return await self.store.read_batch(consumer, count, reclaim_idle_ms, reclaim=reclaim)

    async def acknowledge(self, entries: Sequence[StreamEntry]) -> None:
        await self.store.acknowledge(entries)

    async def backlog(self) -> int:
        return await self.store.backlog()


async def test_a_steady_load_is_read_a_few_times_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    stream = CountingStream(store)
    flusher = AuditFlusher(stream, store, consumer="api-1", batch_size=100, flush_interval=5.0)
    appended = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        for _ in range(RATE * SECONDS):
            await store.append(event(new_user()))
            appended += 1
            await trio.sleep(1 / RATE)
        with trio.fail_after(10):  # virtual seconds: the last partial batch is flushed on time
            while flusher.statistics().events_written < appended:
                await trio.sleep(POLL_INTERVAL)
        nursery.cancel_scope.cancel()
    assert flusher.statistics().events_written == appended == RATE * SECONDS
    assert await store.backlog() == 0
    # Paced at POLL_INTERVAL: 2 reads/s while the streams keep draining, 4 when each read
    # fills the buffer exactly (as here: 100 events per pause) and is followed at once by
    # one that finds the rest: 0.02 per event at 200/s, where reading again as soon as a
    # read found anything made it 0.06.
    assert stream.reads / appended <= 0.025
    assert stream.reclaims <= SECONDS * 1000 // 30_000 + 1  # once per reclaim_idle_ms


async def test_a_backlog_is_read_without_pausing(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    for _ in range(1_000):
        await store.append(event(new_user()))
    stream = CountingStream(store)
    flusher = AuditFlusher(stream, store, consumer="api-1", batch_size=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        started = trio.current_time()
        while flusher.statistics().events_written < 1_000:
            await trio.sleep(0.01)
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    # Full reads follow each other at once: ten batches take less than one pause each.
    assert elapsed < 10 * POLL_INTERVAL
    assert flusher.statistics().batches == 10


class HeldLog:
    """The memory store's audit table, whose first write waits until released: a flush
    caught halfway, as a shutdown's drain can find the running flusher."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.writing = trio.Event()
        self.release = trio.Event()

    async def write_events(self, events: Sequence[Any]) -> int:
        if not self.writing.is_set():
            self.writing.set()
            await self.release.wait()
        return await self.store.write_events(events)

    async def user_trail(self, user_id: str, limit: int) -> list[Any]:
        return await self.store.user_trail(user_id, limit)


async def test_a_drain_waits_for_the_flush_in_progress_and_writes_each_event_once() -> None:
    store = MemoryStore()
    log = HeldLog(store)
    flusher = AuditFlusher(store, log, consumer="c", batch_size=2, flush_interval=0.001)
    user = new_user()
    for _ in range(5):
        await store.append(event(user))
    drained: list[int] = []

    async def drain() -> None:
        drained.append(await flusher.drain())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.step)
        await log.writing.wait()  # the running flusher is halfway through a flush
        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        log.release.set()
    assert len(await store.user_trail(user, 100)) == 5
    assert flusher.statistics().events_written == 5
    assert drained == [3]  # what the step had not written yet
    assert await store.backlog() == 0
