"""Sessions in process memory: the record cache, a session's life, and the steps that join
admission to them. Each method runs without awaiting in between, so under Trio's cooperative
scheduling each is atomic, as a Lua script is in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from zeropay_proto import (
    AttemptReleased,
    AttemptReserved,
    ChallengeIssued,
    ChallengeWindow,
    Lockout,
    Policy,
    Session,
    VerificationFailed,
    VerificationSucceeded,
    conclude_attempt,
    epoch_ms,
    release_attempt,
    reserve_attempt,
    session_names_user,
)
from zeropay_proto.admission import (
    Admission,
    AdmissionRequest,
)
from zeropay_proto.audit import AuditAction, AuditEvent, with_lock_end

from .memory_admission import MemoryAdmission
from .memory_audit_stream import MemoryAuditStream
from .ports import (
    CachedEnrollment,
    ConcludeOutcome,
    FailureReserved,
    InitiateSnapshot,
    RecordCache,
    ReserveOutcome,
    TokenInfo,
)

#: "Not enrolled" record cache entries kept at most (the least recently cached go first): an
#: initiate for each of many unknown users must not fill the embedded default's memory for the
#: record cache's hour. Each is about 0.4 kB here; a real user's entry is kept by its TTL only.
NEGATIVE_CACHE_ENTRIES = 10_000


class MemorySessions(MemoryAdmission, MemoryAuditStream):
    """SessionPort in memory (less its tokens: :class:`adapters.memory_tokens.MemoryTokens`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        # Users whose "not enrolled" entry is cached, least recently cached first.
        self._negative: dict[str, None] = {}

    async def load_for_initiate(self, user_id: str) -> InitiateSnapshot:
        return InitiateSnapshot(
            cached=self._get(f"rec:{user_id}"), window=self._get(f"win:{user_id}")
        )

    async def cache_record(self, user_id: str, entry: CachedEnrollment, ttl_ms: int) -> None:
        if self._get(f"hold:{user_id}") is not None:
            return
        self._set(f"rec:{user_id}", entry, self._now_ms() + ttl_ms)
        self._negative.pop(user_id, None)
        if entry.sealed_record is None:
            self._negative[user_id] = None
            while len(self._negative) > NEGATIVE_CACHE_ENTRIES:
                oldest = next(iter(self._negative))
                del self._negative[oldest]
                self._delete(f"rec:{oldest}")

    async def invalidate_record(self, user_id: str, hold_ms: int) -> None:
        self._negative.pop(user_id, None)
        self._delete(f"rec:{user_id}")
        self._set(f"hold:{user_id}", True, self._now_ms() + hold_ms)
        self._next_generation(user_id)

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
            self._set(f"win:{session.user_id}", window, window.ends_at_ms)
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
    ) -> tuple[Admission, ReserveOutcome | None, CachedEnrollment | None, int]:
        admission = await self.admit(request)
        if admission.refused or request.user_id is None:
            return admission, None, None, 0
        reserved = await self.reserve_attempt(
            session_id, request.user_id, request.now, policy, lock_audit
        )
        if reserved is None:
            return admission, None, None, 0
        user_id = request.user_id
        return admission, reserved, self._get(f"rec:{user_id}"), self._generation(user_id)

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
                self._append(with_lock_end(lock_audit, out.lockout.locked_until_ms))
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
        generation: int = 0,
        refund: FailureReserved | None = None,
    ) -> ConcludeOutcome | None:
        if refund is not None and key_unwrapped:
            await self.refund_merchant_failure(
                refund.merchant_id, refund.window_start_ms, refund.limits
            )
        stored = await self.load_session(session_id, user_id)
        if stored is None:
            return None
        current = self._generation(user_id)
        out = conclude_attempt(
            stored,
            attempt=attempt,
            key_unwrapped=key_unwrapped,
            now=now,
            token_entropy=token_entropy,
            policy=policy,
            reserved_generation=generation,
            current_generation=current,
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
                generation=current,
            )
            if current:  # the generation outlives every token issued under it
                kept = max(self._expiry(f"gen:{user_id}"), out.token_expires_at_ms)
                self._set(f"gen:{user_id}", current, kept)
            self._set(f"tok:{out.token_digest.hex()}", info, out.token_expires_at_ms)
            index: set[str] = self._get(f"tokidx:{user_id}") or set()
            index.add(out.token_digest.hex())
            self._set(f"tokidx:{user_id}", index, out.token_expires_at_ms)
            self._append(replace(audit, action=AuditAction.VERIFICATION_SUCCEEDED))
        elif isinstance(out, VerificationFailed):
            self._keep_session(out.session)
            self._append(replace(audit, action=AuditAction.VERIFICATION_FAILED))
        return out
