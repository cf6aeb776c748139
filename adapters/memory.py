"""Every port in process memory: the embedded default, and the fake for fast server tests.

It keeps the Redis adapter's semantics, TTLs included (entries vanish when their time is up,
by the injected clock: :mod:`.memory_kv`), and decides by calling the core directly. Each
method runs without awaiting, so under Trio's cooperative scheduling each is atomic, as a Lua
script is in Redis.

One process only: a second server instance cannot see this memory. The server says so loudly
when it starts on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .memory_durable import DEFAULT_AUDIT_EVENTS_KEPT, MemoryDurable
from .memory_sessions import MemorySessions
from .memory_tokens import MemoryTokens
from .ports import DurableStore, StateStore


class MemoryStore(MemorySessions, MemoryTokens, MemoryDurable):
    """Implements every port of :mod:`adapters.ports` in one process's memory, one part per
    concern as the Redis adapter is: :mod:`.memory_kv`, :mod:`.memory_admission`,
    :mod:`.memory_sessions`, :mod:`.memory_tokens`, :mod:`.memory_audit_stream` and
    :mod:`.memory_durable`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        audit_events_kept: int = DEFAULT_AUDIT_EVENTS_KEPT,
    ) -> None:
        MemorySessions.__init__(self, clock)
        MemoryDurable.__init__(self, audit_events_kept)


if TYPE_CHECKING:  # mypy --strict proves the adapter satisfies its port(s)

    def _is_state_store(store: MemoryStore) -> StateStore:
        return store

    def _is_durable_store(store: MemoryStore) -> DurableStore:
        return store
