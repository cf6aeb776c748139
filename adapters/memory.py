"""Every port in process memory: the embedded default, and the fake for fast server tests.

It keeps the Redis adapter's semantics, TTLs included, and decides by calling the core
directly. Entries vanish when their time is up, by the injected clock: a read never sees an
expired entry, and every write also sweeps the oldest expired entries off a heap of expiries
(a few per write, so the work is amortised and memory stays bounded under any load, as Redis's
own active expiry keeps it). The audit log, PostgreSQL's stand-in, keeps the newest
:data:`DEFAULT_AUDIT_EVENTS_KEPT` events. Each method runs without
awaiting, so under Trio's cooperative scheduling each is atomic, as a Lua script is in Redis.

One process only: a second server instance cannot see this memory. The server says so loudly
when it starts on it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from zeropay_proto import (
    AttemptReleased,
    AttemptReserved,
    BearerToken,
    ChallengeIssued,
    ChallengeWindow,
    Lockout,
    NonceAccepted,
    Policy,
    Session,
    VerificationFailed,
    VerificationSucceeded,
    conclude_attempt,
    decide_nonce,
    epoch_ms,
    release_attempt,
    reserve_attempt,
    session_names_user,
)
from zeropay_proto.admission import (
    Admission,
    AdmissionRequest,
    Kept,
    SharedLimiterStates,
    count_merchant_lock,
    decide_shared_limits,
    decide_user_bucket,
    nonce_kept_until_ms,
)
from zeropay_proto.audit import AuditAction, AuditEvent
from zeropay_proto.merchants import MerchantCredential

from .ports import (
    CachedEnrollment,
    ConcludeOutcome,
    DurableStore,
    InitiateSnapshot,
    RecordCache,
    ReserveOutcome,
    StateStore,
    StoredEnrollment,
    StreamEntry,
    TokenInfo,
)

_STREAM = "memory"
#: The embedded default is one process's memory, not an archive: it keeps this many of the
#: newest audit events (a day of a small shop's traffic) and drops older ones.
DEFAULT_AUDIT_EVENTS_KEPT = 10_000
#: Expired entries removed per write, at most: more than one, so the sweep outpaces the
#: writes that add expiries, and few enough that no write pays for a backlog at once.
_SWEEP_PER_WRITE = 4


@dataclass
class _Entry:
    value: Any
    expires_at_ms: int | None


@dataclass
class _Pending:
    entry_id: str
    event: AuditEvent
    consumer: str | None = None
    delivered_at_ms: int = 0


class MemoryStore:
    """Implements every port of :mod:`adapters.ports` in one process's memory."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        audit_events_kept: int = DEFAULT_AUDIT_EVENTS_KEPT,
    ) -> None:
        self._clock = clock
        self._kv: dict[str, _Entry] = {}
        self._expiries: list[tuple[int, str]] = []  # a heap of (expires_at_ms, key)
        self._stream: dict[str, _Pending] = {}
        self._stream_ids = itertools.count(1)
        self._audit_log: dict[str, AuditEvent] = {}  # insertion-ordered: oldest first
        self._audit_events_kept = audit_events_kept
        self._enrollments: dict[str, StoredEnrollment] = {}
        self._merchant_keys: dict[str, MerchantCredential] = {}

    # -------------------------------------------------------------- key/value with TTL

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

    async def ping(self) -> bool:
        """Readiness: process memory is always there."""
        return True

    def live_keys(self) -> int:
        """Entries not yet expired (for metrics and tests)."""
        return sum(1 for key in list(self._kv) if self._get(key) is not None)

    # -------------------------------------------------------------- AdmissionPort

    async def admit(self, request: AdmissionRequest) -> Admission:
        limits = request.limits
        shared = user = nonce = None
        if (
            limits.global_limit
            or limits.per_ip
            or request.per_merchant
            or request.merchant_lock_cap
        ):
            merchant = request.merchant_id
            shared = decide_shared_limits(
                SharedLimiterStates(
                    global_window=self._get("rl:g"),
                    ip_window=self._get(f"rl:ip:{request.client_ip}"),
                    merchant_bucket=self._get(f"rl:m:{merchant}"),
                    merchant_locks=self._get(f"rl:ml:{merchant}"),
                ),
                request,
            )
            self._keep("rl:g", shared.global_kept)
            self._keep(f"rl:ip:{request.client_ip}", shared.ip_kept)
            self._keep(f"rl:m:{merchant}", shared.merchant_kept)
        if request.nonce is not None:
            key = f"nonce:{request.nonce.nonce}"
            nonce = decide_nonce(already_claimed=self._get(key) is not None)
            if isinstance(nonce, NonceAccepted):
                self._set(key, True, nonce_kept_until_ms(request.nonce, now=request.now))
        if request.per_user:
            key = f"rl:user:{request.user_id}"
            user = decide_user_bucket(self._get(key), request)
            self._keep(key, user.kept)
        return Admission.of(shared, user, nonce)

    def _keep(self, key: str, kept: Kept[Any] | None) -> None:
        if kept is not None:
            self._set(key, kept.state, kept.expires_at_ms)

    async def count_merchant_lock(self, merchant_id: str, now: float, window_ms: int) -> int:
        key = f"rl:ml:{merchant_id}"
        kept = count_merchant_lock(self._get(key), now=now, window_ms=window_ms)
        self._keep(key, kept)
        return kept.state.count

    # -------------------------------------------------------------- SessionPort

    async def load_for_initiate(self, user_id: str) -> InitiateSnapshot:
        return InitiateSnapshot(
            cached=self._get(f"rec:{user_id}"), window=self._get(f"win:{user_id}")
        )

    async def cache_record(self, user_id: str, entry: CachedEnrollment, ttl_ms: int) -> None:
        if self._get(f"hold:{user_id}") is None:
            self._set(f"rec:{user_id}", entry, self._now_ms() + ttl_ms)

    async def invalidate_record(self, user_id: str, hold_ms: int) -> None:
        self._delete(f"rec:{user_id}")
        self._set(f"hold:{user_id}", True, self._now_ms() + hold_ms)

    async def store_session(
        self,
        issued: ChallengeIssued,
        now_ms: int,
        audit: AuditEvent,
        grace_ms: int,
        *,
        record_cache: RecordCache | None = None,
    ) -> None:
        session = issued.session
        if record_cache is not None:
            await self.cache_record(session.user_id, record_cache.entry, record_cache.ttl_ms)
        self._set(f"sess:{session.session_id}", session, session.expires_at_ms + grace_ms)
        if issued.window_opened and issued.window is not None:
            window: ChallengeWindow = issued.window
            self._set(f"win:{session.user_id}", window, window.ends_at * 1000)
        self._append(audit)

    async def admit_and_load(self, request: AdmissionRequest) -> tuple[Admission, InitiateSnapshot]:
        admission = await self.admit(request)
        return admission, await self.load_for_initiate(request.user_id or "")

    async def admit_and_reserve(
        self,
        request: AdmissionRequest,
        session_id: str,
        policy: Policy,
        lock_audit: AuditEvent,
    ) -> tuple[Admission, ReserveOutcome | None, CachedEnrollment | None]:
        admission = await self.admit(request)
        if admission.refused or request.user_id is None:
            return admission, None, None
        reserved = await self.reserve_attempt(
            session_id, request.user_id, request.now, policy, lock_audit
        )
        if reserved is None:
            return admission, None, None
        return admission, reserved, self._get(f"rec:{request.user_id}")

    async def load_session(self, session_id: str, user_id: str) -> Session | None:
        session: Session | None = self._get(f"sess:{session_id}")
        if session is None or session.user_id != user_id:
            return None  # the session id names another user
        return session

    async def reserve_attempt(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> ReserveOutcome | None:
        session = await self.load_session(session_id, user_id)
        if session is None:
            return None
        lockout: Lockout = self._get(f"lock:{user_id}") or Lockout()
        out = reserve_attempt(session, lockout, now=now, policy=policy)
        if isinstance(out, AttemptReserved):
            self._keep_session(out.session)
            self._set(f"lock:{user_id}", out.lockout, out.lockout.forget_at_ms(policy))
            if out.locked_account:
                self._append(lock_audit)
        return out

    async def release_attempt(
        self, session_id: str, user_id: str, *, attempt: int, now: float, policy: Policy
    ) -> AttemptReleased | None:
        if not session_names_user(session_id, user_id):
            return None
        session = await self.load_session(session_id, user_id)
        lockout: Lockout = self._get(f"lock:{user_id}") or Lockout()
        out = release_attempt(session, lockout, attempt=attempt, now=now, policy=policy)
        if out.session is not None:
            self._keep_session(out.session)
        if out.lockout != lockout.current(epoch_ms(now), policy):
            self._set(f"lock:{user_id}", out.lockout, out.lockout.forget_at_ms(policy))
        return out

    def _keep_session(self, session: Session) -> None:
        entry = self._kv[f"sess:{session.session_id}"]
        entry.value = session

    async def conclude_attempt(
        self,
        session_id: str,
        user_id: str,
        *,
        attempt: int,
        key_unwrapped: bool,
        now: float,
        token_entropy: bytes,
        policy: Policy,
        audit: AuditEvent,
    ) -> ConcludeOutcome | None:
        stored = await self.load_session(session_id, user_id)
        if stored is None:
            return None
        out = conclude_attempt(
            stored,
            attempt=attempt,
            key_unwrapped=key_unwrapped,
            now=now,
            token_entropy=token_entropy,
            policy=policy,
        )
        if isinstance(out, VerificationSucceeded):
            self._keep_session(out.session)
            self._delete(f"lock:{user_id}")
            info = TokenInfo(
                user_id=user_id,
                session_id=session_id,
                expires_at_ms=out.token_expires_at_ms,
                issued_at_ms=out.receipt.issued_at_ms,
                factors_proven=out.factors_proven,
            )
            self._set(f"tok:{out.token_digest.hex()}", info, out.token_expires_at_ms)
            index: set[str] = self._get(f"tokidx:{user_id}") or set()
            index.add(out.token_digest.hex())
            self._set(f"tokidx:{user_id}", index, out.token_expires_at_ms)
            self._append(replace(audit, action=AuditAction.VERIFICATION_SUCCEEDED))
        elif isinstance(out, VerificationFailed):
            self._keep_session(out.session)
            self._append(replace(audit, action=AuditAction.VERIFICATION_FAILED))
        return out

    async def token_info(self, token: BearerToken) -> TokenInfo | None:
        info: TokenInfo | None = self._get(f"tok:{token.digest.hex()}")
        if info is None or info.user_id != token.user_id:
            return None
        return info

    async def revoke_token(self, token: BearerToken, audit: AuditEvent) -> bool:
        if await self.token_info(token) is None:
            return False
        self._delete(f"tok:{token.digest.hex()}")
        self._append(audit)
        return True

    def _drop_tokens(self, user_id: str) -> int:
        """Delete every token of a user and its index; returns how many were live."""
        revoked = sum(self._delete(f"tok:{d}") for d in self._get(f"tokidx:{user_id}") or ())
        self._delete(f"tokidx:{user_id}")
        return revoked

    async def revoke_user_tokens(self, user_id: str, audit: AuditEvent) -> int:
        revoked = self._drop_tokens(user_id)
        self._append(audit)
        return revoked

    async def forget_user(self, user_id: str, audit: AuditEvent) -> None:
        self._drop_tokens(user_id)
        for kind in ("rec", "win", "lock"):
            self._delete(f"{kind}:{user_id}")
        self._append(audit)

    # -------------------------------------------------------------- PspSessionPort

    async def store_psp_session(
        self, psp_session_id: str, data: Mapping[str, Any], ttl_ms: int
    ) -> None:
        self._set(f"psp:{psp_session_id}", dict(data), self._now_ms() + ttl_ms)

    async def load_psp_session(self, psp_session_id: str) -> dict[str, Any] | None:
        data: dict[str, Any] | None = self._get(f"psp:{psp_session_id}")
        return None if data is None else dict(data)

    # -------------------------------------------------------------- AuditStreamPort

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

    # -------------------------------------------------------------- AuditLogPort

    async def write_events(self, events: Sequence[AuditEvent]) -> int:
        new = 0
        for event in events:
            if event.event_id not in self._audit_log:
                self._audit_log[event.event_id] = event
                new += 1
        while len(self._audit_log) > self._audit_events_kept:
            del self._audit_log[next(iter(self._audit_log))]
        return new

    async def user_trail(self, user_id: str, limit: int) -> list[AuditEvent]:
        trail = [e for e in self._audit_log.values() if e.user_id == user_id]
        return sorted(trail, key=lambda e: e.at_ms)[:limit]

    # -------------------------------------------------------------- EnrollmentPort

    async def insert_enrollment(self, enrollment: StoredEnrollment) -> bool:
        user_id = enrollment.wrapped_key.user_id
        if user_id in self._enrollments:
            return False
        self._enrollments[user_id] = enrollment
        return True

    async def replace_enrollment(self, enrollment: StoredEnrollment) -> bool:
        user_id = enrollment.wrapped_key.user_id
        current = self._enrollments.get(user_id)
        if current is None:
            return False
        self._enrollments[user_id] = replace(enrollment, created_at_ms=current.created_at_ms)
        return True

    async def load_enrollment(self, user_id: str) -> StoredEnrollment | None:
        return self._enrollments.get(user_id)

    async def delete_enrollment(self, user_id: str) -> bool:
        return self._enrollments.pop(user_id, None) is not None

    async def export_enrollment(self, user_id: str) -> StoredEnrollment | None:
        return self._enrollments.get(user_id)

    # -------------------------------------------------------------- MerchantPort

    async def add_merchant_key(self, credential: MerchantCredential) -> None:
        self._merchant_keys[credential.key_id] = credential

    async def merchant_keys(self, *, include_revoked: bool = False) -> list[MerchantCredential]:
        keys = sorted(self._merchant_keys.values(), key=lambda c: c.created_at_ms)
        return [c for c in keys if include_revoked or c.revoked_at_ms is None]

    async def revoke_merchant_key(self, key_id: str, now_ms: int) -> bool:
        credential = self._merchant_keys.get(key_id)
        if credential is None or credential.revoked_at_ms is not None:
            return False
        self._merchant_keys[key_id] = replace(credential, revoked_at_ms=now_ms)
        return True


if TYPE_CHECKING:  # mypy --strict proves the adapter satisfies its port(s)

    def _is_state_store(store: MemoryStore) -> StateStore:
        return store

    def _is_durable_store(store: MemoryStore) -> DurableStore:
        return store
