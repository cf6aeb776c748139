"""The audit stream in process memory: events wait here until the flusher writes them to the
audit log, claimed by one consumer at a time and reclaimed after ``reclaim_idle_ms``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zeropay_proto.audit import AuditEvent

from .memory_kv import MemoryKV
from .ports import (
    StreamEntry,
)

_STREAM = "memory"


@dataclass
class _Pending:
    entry_id: str
    event: AuditEvent
    consumer: str | None = None
    delivered_at_ms: int = 0


class MemoryAuditStream(MemoryKV):
    """AuditStreamPort in memory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._stream: dict[str, _Pending] = {}
        self._stream_ids = itertools.count(1)

    def _append(self, event: AuditEvent) -> None:
        entry_id = f"{next(self._stream_ids)}-0"
        self._stream[entry_id] = _Pending(entry_id=entry_id, event=event)

    async def append(self, event: AuditEvent) -> None:
        self._append(event)

    async def read_batch(
        self, consumer: str, count: int, reclaim_idle_ms: int, *, reclaim: bool = True
    ) -> list[StreamEntry]:
        now_ms = self._now_ms()
        batch: list[StreamEntry] = []
        for pending in self._stream.values():
            if len(batch) >= count:
                break
            idle = now_ms - pending.delivered_at_ms
            claimable = pending.consumer is None or (
                reclaim and pending.consumer != consumer and idle >= reclaim_idle_ms
            )
            if claimable:
                pending.consumer, pending.delivered_at_ms = consumer, now_ms
                batch.append(
                    StreamEntry(stream=_STREAM, entry_id=pending.entry_id, event=pending.event)
                )
        return batch

    async def acknowledge(self, entries: Sequence[StreamEntry]) -> None:
        for entry in entries:
            self._stream.pop(entry.entry_id, None)

    async def backlog(self) -> int:
        return len(self._stream)
