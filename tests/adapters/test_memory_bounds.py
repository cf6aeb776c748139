"""The embedded store forgets what expires (it once kept ~2.1 kB per initiate for good).

100,000 initiates' storage work (admission with a fresh nonce and every limiter, the record
cache, a session, its window and audit event), with the audit flusher's read/write/acknowledge
in between, run on a hand-advanced clock at 100 initiates per second. Sessions live 300 s
(plus 60 s of grace), so the steady state holds ~36,000 of them: what is held after 50,000
initiates and after 100,000 must be the same, where a store that never forgets doubles.
"""

from __future__ import annotations

import uuid

import pytest

from adapters.memory import MemoryStore
from adapters.memory_sessions import NEGATIVE_CACHE_ENTRIES
from adapters.memory_tokens import KEPT_ANSWERS
from adapters.ports import NOT_ENROLLED, IdempotencyScope, RecordCache
from tests.adapters.helpers import event, new_session
from zeropay_proto import NonceClaim
from zeropay_proto.admission import AdmissionRequest, Limits
from zeropay_proto.idempotency import ANSWER_KEPT_MS, TOKEN_BYTES, Claim, KeptAnswer

INITIATES = 100_000
RATE = 100.0  # initiates per second of the injected clock
USERS = [str(uuid.uuid4()) for _ in range(500)]
LIMITS = Limits(global_limit=0, per_ip=1_000_000, per_user=1_000_000, window_ms=60_000)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _initiate(store: MemoryStore, clock: Clock, i: int) -> None:
    user = USERS[i % len(USERS)]
    request = AdmissionRequest(
        now=clock.now,
        client_ip=f"198.51.{i % 200}.{i % 250}",
        user_id=user,
        nonce=NonceClaim(nonce=str(uuid.uuid4()), ttl_ms=330_000),
        limits=LIMITS,
    )
    admission, snapshot = await store.admit_and_load(request)
    assert not admission.refused
    if snapshot.cached is None:
        await store.cache_record(user, NOT_ENROLLED, 3_600_000)
    issued = new_session(user, now=clock.now)
    await store.store_session(issued, 0, event(user), 60_000)


async def _flush(store: MemoryStore) -> None:
    entries = await store.read_batch("flusher", 1000, 30_000)
    await store.write_events([e.event for e in entries])
    await store.acknowledge(entries)


def _held(store: MemoryStore) -> dict[str, int]:
    """Everything the store holds that could grow with traffic."""
    return {
        "entries": len(store._kv),
        "expiry heap": len(store._expiries),
        "audit log": len(store._audit_log),
        "audit stream": len(store._stream),
    }


async def test_memory_stays_bounded_over_a_hundred_thousand_initiates() -> None:
    """The clock starts 300 s before a 15-minute challenge-window boundary (1.8e9 s is a
    multiple of 900). Windows stored after it all expire at the next boundary, after both
    measurements: a store that queued an unchanged expiry again on every write would hold
    5 times more at the second measurement than at the first."""
    clock = Clock(1_800_000_000 - 300)
    store = MemoryStore(clock=clock)
    held: dict[int, dict[str, int]] = {}
    for i in range(1, INITIATES + 1):
        clock.now += 1 / RATE
        await _initiate(store, clock, i)
        if i % 500 == 0:
            await _flush(store)
        if i in (INITIATES // 2, INITIATES):
            held[i] = _held(store)
    half, full = held[INITIATES // 2], held[INITIATES]
    for name, count in full.items():
        assert count <= 1.1 * half[name] + 10, f"{name} grows: {half[name]} -> {count}"
    steady_sessions = RATE * (300 + 60)
    assert full["entries"] < 2 * steady_sessions  # sessions, nonces, limiter windows, caches
    assert full["audit log"] <= 10_000


@pytest.mark.slow
async def test_many_unknown_users_cannot_fill_the_record_cache() -> None:
    """300,000 initiates, each for a user never seen (an attacker's, or a scan's), at 100 a
    second of the injected clock: their "not enrolled" entries would live the record cache's
    hour (360,000 of them at this rate); the store keeps at most NEGATIVE_CACHE_ENTRIES, and
    everything it holds stays within what the TTLs of sessions, windows and nonces allow."""
    clock = Clock(1_800_000_000 - 300)
    store = MemoryStore(clock=clock)
    for i in range(1, 300_001):
        clock.now += 1 / RATE
        user = str(uuid.uuid4())
        request = AdmissionRequest(
            now=clock.now,
            client_ip="198.51.100.7",
            user_id=user,
            nonce=NonceClaim(nonce=str(uuid.uuid4()), ttl_ms=330_000),
            limits=LIMITS,
        )
        await store.admit_and_load(request)
        await store.store_session(
            new_session(user, now=clock.now),
            0,
            event(user),
            60_000,
            record_cache=RecordCache(entry=NOT_ENROLLED, ttl_ms=3_600_000),
        )
        if i % 500 == 0:
            await _flush(store)
    negative = sum(1 for key in list(store._kv) if key.startswith("rec:") and store._get(key))
    assert negative == NEGATIVE_CACHE_ENTRIES
    # Sessions (360 s), nonces (330 s) and windows (at most 900 s) at 100 a second, the
    # capped record cache and the address's limiter: the documented bound.
    assert store.live_keys() <= RATE * (360 + 330 + 900) + NEGATIVE_CACHE_ENTRIES + 1


async def test_a_new_idempotency_key_on_every_request_cannot_fill_memory() -> None:
    """Kept answers live a day; the embedded store keeps the last KEPT_ANSWERS of them."""
    store = MemoryStore(clock=Clock(1_800_000_000))
    scope = IdempotencyScope("merchant", "shop-1")
    for n in range(KEPT_ANSWERS + 50):
        claim = Claim(token=n.to_bytes(TOKEN_BYTES, "big"), fingerprint=b"f" * 32)
        key = f"{n:064x}"
        assert await store.claim_idempotency(scope, key, claim, 60_000) is None
        kept = KeptAnswer(fingerprint=b"f" * 32, sealed=b"\x01answer")
        assert await store.settle_idempotency(scope, key, claim, kept, ANSWER_KEPT_MS)
    assert store.live_keys() == KEPT_ANSWERS
    late = Claim(token=bytes(TOKEN_BYTES), fingerprint=b"f" * 32)
    assert await store.claim_idempotency(scope, f"{0:064x}", late, 60_000) is None  # evicted
    newest = await store.claim_idempotency(scope, f"{KEPT_ANSWERS + 49:064x}", late, 60_000)
    assert isinstance(newest, KeptAnswer)
