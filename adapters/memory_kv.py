"""Keys with expiries in process memory: what every part of the memory adapter stores in.

Entries vanish when their time is up, by the injected clock: a read never sees an expired
entry, and every write also sweeps the oldest expired entries off a heap of expiries (a few per
write, so the work is amortised and memory stays bounded under any load, as Redis's own active
expiry keeps it).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeropay_proto import (
    GENERATION_KEPT_MS,
    epoch_ms,
)

#: Expired entries removed per write, at most: more than one, so the sweep outpaces the
#: writes that add expiries, and few enough that no write pays for a backlog at once.
_SWEEP_PER_WRITE = 4


@dataclass
class _Entry:
    value: Any
    expires_at_ms: int | None


class MemoryKV:
    """The key/value store with expiries; the base of every memory adapter class."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._kv: dict[str, _Entry] = {}
        self._expiries: list[tuple[int, str]] = []  # a heap of (expires_at_ms, key)

    def _now_ms(self) -> int:
        return epoch_ms(self._clock())

    def _get(self, key: str) -> Any:
        entry = self._kv.get(key)
        if entry is None:
            return None
        if entry.expires_at_ms is not None and self._now_ms() >= entry.expires_at_ms:
            del self._kv[key]
            return None
        return entry.value

    def _expiry(self, key: str) -> int:
        """When a live entry expires (0: absent, or kept for ever)."""
        entry = self._kv.get(key)
        if entry is None or self._get(key) is None:
            return 0
        return entry.expires_at_ms or 0

    def _set(self, key: str, value: Any, expires_at_ms: int | None) -> None:
        previous = self._kv.get(key)
        self._kv[key] = _Entry(value, expires_at_ms)
        # Every entry with an expiry has a heap item at that expiry; one written again with
        # the same expiry (a window re-stored, say) already has it.
        if expires_at_ms is not None and (
            previous is None or previous.expires_at_ms != expires_at_ms
        ):
            heapq.heappush(self._expiries, (expires_at_ms, key))
        self._sweep(_SWEEP_PER_WRITE)

    def _sweep(self, most: int) -> None:
        """Remove up to ``most`` entries whose time is up. A heap item whose key was written
        again with a later expiry is stale: it is dropped and the entry kept."""
        now_ms = self._now_ms()
        expiries = self._expiries
        while most > 0 and expiries and expiries[0][0] <= now_ms:
            _, key = heapq.heappop(expiries)
            entry = self._kv.get(key)
            deadline = None if entry is None else entry.expires_at_ms
            if deadline is not None and deadline <= now_ms:
                del self._kv[key]
                most -= 1

    def _delete(self, key: str) -> bool:
        present = self._get(key) is not None
        self._kv.pop(key, None)
        return present

    def _generation(self, user_id: str) -> int:
        """The user's generation (sessions issue tokens under it, tokens hold while it is
        current): 0 until their enrollment first changes."""
        generation: int = self._get(f"gen:{user_id}") or 0
        return generation

    def _next_generation(self, user_id: str) -> None:
        """Move the user's generation on (never back), kept a day past this change."""
        following = self._generation(user_id) + 1
        self._set(f"gen:{user_id}", following, self._now_ms() + GENERATION_KEPT_MS)

    async def ping(self) -> bool:
        """Readiness: process memory is always there."""
        return True

    def live_keys(self) -> int:
        """Entries not yet expired (for metrics and tests)."""
        return sum(1 for key in list(self._kv) if self._get(key) is not None)
