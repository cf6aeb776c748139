"""The audit flusher: from the Redis Streams to PostgreSQL, in batches, losing nothing.

A request appends its audit event to a stream before it answers (in the same atomic step as
the change it records, where there is one). This task, run in the server's nursery, reads
events through a consumer group, writes them in batches of ``AUDIT_BUFFER_SIZE`` (100) or
every ``AUDIT_FLUSH_INTERVAL`` (5 s), whichever comes first, and only then acknowledges them:

- killed between the write and the acknowledgement, its events stay pending and are written
  again by whoever reclaims them; ``ON CONFLICT (event_id) DO NOTHING`` makes that harmless;
- with PostgreSQL down, events wait in the stream (and in this task's buffer) and the write is
  retried with back-off until it succeeds;
- events a dead instance left pending for ``reclaim_idle_ms`` are claimed by a live one.

Trio code over the ports: the stream and the log may be the Redis and PostgreSQL adapters
behind :class:`~adapters.bridge.TrioBridge`, or the in-memory store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

from .errors import DependencyUnavailable
from .ports import AuditLogPort, AuditStreamPort, StreamEntry

#: Design document, "Async Audit Logging": bufferSize 100, flushInterval 5000 ms.
DEFAULT_AUDIT_BUFFER_SIZE = 100
DEFAULT_AUDIT_FLUSH_INTERVAL = 5.0
#: Pending this long, an event is presumed abandoned by a dead flusher and reclaimed.
DEFAULT_RECLAIM_IDLE_MS = 30_000
#: Pause after a read that emptied the streams (fewer entries than there was room for): under
#: a steady load the flusher reads twice a second, in batches, rather than once per event
#: (one XREADGROUP per request cost Redis and the event loop more than the events
#: themselves). Events wait at most this beside the 5 s flush interval.
POLL_INTERVAL = 0.5
RETRY_INTERVAL = 1.0


class Clock(Protocol):
    def __call__(self) -> float: ...


@dataclass(frozen=True, kw_only=True)
class FlusherStatistics:
    """What a flusher has done so far."""

    events_written: int
    duplicates_skipped: int
    batches: int
    failures: int
    buffered: int


class AuditFlusher:
    """Moves audit events from an :class:`AuditStreamPort` to an :class:`AuditLogPort`."""

    def __init__(
        self,
        stream: AuditStreamPort,
        log: AuditLogPort,
        *,
        consumer: str,
        batch_size: int = DEFAULT_AUDIT_BUFFER_SIZE,
        flush_interval: float = DEFAULT_AUDIT_FLUSH_INTERVAL,
        reclaim_idle_ms: int = DEFAULT_RECLAIM_IDLE_MS,
        clock: Clock = trio.current_time,
    ) -> None:
        if batch_size < 1 or flush_interval <= 0:
            raise ValueError("batch size and flush interval must be positive")
        self._stream = stream
        self._log = log
        self._consumer = consumer
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._reclaim_idle_ms = reclaim_idle_ms
        self._clock = clock
        self._buffer: dict[tuple[str, str], StreamEntry] = {}
        self._batch_started: float | None = None
        self._last_reclaim: float | None = None
        self._written = self._duplicates = self._batches = self._failures = 0
        # One writer of the buffer at a time: the running flusher's steps and a shutdown's
        # drain (which begins while the flusher may still be in a step) take turns.
        self._writing = trio.Lock()

    def statistics(self) -> FlusherStatistics:
        """A snapshot of the counters."""
        return FlusherStatistics(
            events_written=self._written,
            duplicates_skipped=self._duplicates,
            batches=self._batches,
            failures=self._failures,
            buffered=len(self._buffer),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush forever (until cancelled). A store that cannot serve (unreachable, loading,
        read-only, full: DependencyUnavailable) is waited out; what was read stays in the
        buffer and is written once PostgreSQL is back. Anything else escapes, to the
        supervisor (``zeropay_server.supervise``), which restarts the task; the buffer, kept
        on the flusher, survives the restart."""
        task_status.started()
        while True:
            try:
                backlog = await self.step()
            except DependencyUnavailable:
                self._failures += 1
                await trio.sleep(RETRY_INTERVAL)
                continue
            if not backlog:
                await trio.sleep(POLL_INTERVAL)

    async def step(self) -> bool:
        """Read what fits in the buffer; flush it if it is full or old enough.

        Returns whether more may be waiting: the read filled the room there was (a backlog,
        so the next step should not wait). A read that found less, nothing new or only a
        flush means the streams are drained for now.
        """
        async with self._writing:
            return await self._step()

    async def _step(self) -> bool:
        read = 0
        room = self._batch_size - len(self._buffer)
        if room > 0:
            reclaim = self._reclaim_due()
            entries = await self._stream.read_batch(
                self._consumer, room, self._reclaim_idle_ms, reclaim=reclaim
            )
            if reclaim:
                self._last_reclaim = self._clock()
            for entry in entries:
                if (entry.stream, entry.entry_id) not in self._buffer:
                    self._buffer[(entry.stream, entry.entry_id)] = entry
                    read += 1
        if self._buffer and self._batch_started is None:
            self._batch_started = self._clock()
        due = self._buffer and (
            len(self._buffer) >= self._batch_size
            or self._clock() - (self._batch_started or 0.0) >= self._flush_interval
        )
        if due:
            await self._flush()
        return read >= room

    def _reclaim_due(self) -> bool:
        """Events of a dead flusher become claimable only after ``reclaim_idle_ms``, so
        looking for them more often than that finds nothing new (one XAUTOCLAIM per stream
        per look: 64 commands). They are written at most twice that after their flusher
        died."""
        if self._last_reclaim is None:
            return True
        return self._clock() - self._last_reclaim >= self._reclaim_idle_ms / 1000

    async def flush(self) -> int:
        """Write the buffer in batches of at most ``batch_size``, acknowledging each batch
        once it is written. Returns the events newly written."""
        async with self._writing:
            return await self._flush()

    async def _flush(self) -> int:
        new_total = 0
        while self._buffer:
            keys = list(self._buffer)[: self._batch_size]
            entries = [self._buffer[k] for k in keys]
            new = await self._log.write_events([e.event for e in entries])
            await self._stream.acknowledge(entries)
            for key in keys:
                del self._buffer[key]
            self._written += new
            self._duplicates += len(entries) - new
            self._batches += 1
            new_total += new
        self._batch_started = None
        return new_total

    async def drain(self) -> int:
        """Flush everything this consumer can read now (graceful shutdown). Returns events
        written."""
        total = 0
        async with self._writing:
            while True:
                entries = await self._stream.read_batch(
                    self._consumer, self._batch_size, self._reclaim_idle_ms
                )
                for entry in entries:
                    self._buffer.setdefault((entry.stream, entry.entry_id), entry)
                if not self._buffer:
                    return total
                total += await self._flush()
