"""What an instance appended to the audit streams lately, in case Redis loses them.

The audit trail is durable once PostgreSQL has it; until then it lives in a Redis Stream, and
a Redis that restarts without persistence, is flushed, or fails over to a replica that missed
the last writes loses the events not yet flushed. So each instance remembers, for
:data:`DEFAULT_JOURNAL_SECONDS`, every event its own scripts confirmed appended (with the
action the script wrote). Each slot group holds an *epoch* key, set once: when the flusher
finds one missing or changed, Redis lost data, and the instance hands its journal to the
flusher, which writes it to PostgreSQL like any batch. Events already there are skipped (the
write is idempotent by event id), so the replay may be generous.

Bounded: at most :data:`MAX_JOURNAL_EVENTS` events (the oldest go first).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from zeropay_proto.audit import AuditEvent

#: Longer than the flush interval (5 s by default) with room for a slow or paused flusher.
DEFAULT_JOURNAL_SECONDS = 30.0
MAX_JOURNAL_EVENTS = 100_000


class AuditJournal:
    """The events this instance appended within the last ``seconds``."""

    def __init__(
        self,
        seconds: float = DEFAULT_JOURNAL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._events: deque[tuple[float, AuditEvent]] = deque(maxlen=MAX_JOURNAL_EVENTS)

    def record(self, event: AuditEvent) -> None:
        """``event`` is in a stream now (its script returned)."""
        now = self._clock()
        self._events.append((now, event))
        while self._events and self._events[0][0] < now - self._seconds:
            self._events.popleft()

    def recent(self) -> list[AuditEvent]:
        """The events still remembered, oldest first."""
        horizon = self._clock() - self._seconds
        return [event for at, event in self._events if at >= horizon]

    def __len__(self) -> int:
        return len(self._events)
