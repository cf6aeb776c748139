"""Sessions on Redis: the record cache, a session's life (store, reserve, release, conclude),
and the steps that join admission to them in one round trip.

Every step is one script on the user's slot (two where admission's slots differ, on a Cluster).
reserve, release and conclude return what they read; the core is replayed on it and a script
that decided otherwise raises :class:`ScriptDisagreement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from zeropay_proto import (
    GENERATION_KEPT_MS,
    AccountLocked,
    AttemptReleased,
    AttemptReserved,
    ChallengeIssued,
    IssuedToken,
    Policy,
    Session,
    SessionClosed,
    VerificationFailed,
    VerificationSucceeded,
    conclude_attempt,
    epoch_ms,
    issue_token,
    release_attempt,
    reserve_attempt,
    session_names_user,
)
from zeropay_proto.admission import Admission, AdmissionRequest
from zeropay_proto.audit import AuditAction, AuditEvent, with_lock_end

from .ports import (
    CachedEnrollment,
    ConcludeOutcome,
    FailureReserved,
    InitiateSnapshot,
    RecordCache,
    ReserveOutcome,
)
from .redis_admission import (
    RedisAdmission,
    check_refund,
    decode_admission,
    limiter_args,
    nonce_until_ms,
)
from .redis_keys import (
    decode_cached,
    decode_lockout,
    decode_session,
    decode_window,
    encode_cached,
    encode_session,
    encode_window,
)
from .redis_scripts import (
    CLOSED,
    LOCKED,
    NO_SESSION,
    NOT_ADMITTED,
    REFUTED,
    RESERVED,
    SUCCEEDED,
    Call,
    ScriptDisagreement,
    as_bytes,
    event_pairs,
    redis_call,
)


class RedisSessions(RedisAdmission):
    """SessionPort on Redis (less its tokens: :class:`adapters.redis_tokens.RedisTokens`)."""

    @redis_call
    async def load_for_initiate(self, user_id: str) -> InitiateSnapshot:
        cached, window = await self._run(
            [
                ("GET", [self.keys.user(user_id, "rec")], []),
                ("GET", [self.keys.user(user_id, "win")], []),
            ]
        )
        return self._snapshot(user_id, cached, window)

    @redis_call
    async def admit_and_load(self, request: AdmissionRequest) -> tuple[Admission, InitiateSnapshot]:
        user_id = request.user_id or ""
        reads: list[Call] = [
            ("GET", [self.keys.user(user_id, "rec")], []),
            ("GET", [self.keys.user(user_id, "win")], []),
        ]
        admission, (cached, window) = await self._admit_with(request, reads)
        return admission, self._snapshot(user_id, cached, window)

    @staticmethod
    def _snapshot(user_id: str, cached: bytes | None, window: bytes | None) -> InitiateSnapshot:
        return InitiateSnapshot(
            cached=None if cached is None else decode_cached(user_id, cached),
            window=decode_window(window) if window else None,
        )

    @redis_call
    async def admit_and_reserve(
        self,
        request: AdmissionRequest,
        session_id: str,
        policy: Policy,
        lock_audit: AuditEvent,
    ) -> tuple[Admission, ReserveOutcome | None, CachedEnrollment | None, int]:
        user_id = request.user_id
        if user_id is None:
            return await self._admit(request), None, None, 0
        # The generation is read before the record: a change between the two reads moves it
        # on again when the change is done (revoke_user), so conclude.lua refuses the proof.
        reads: list[Call] = [
            ("GET", [self.keys.user(user_id, "gen")], []),
            ("GET", [self.keys.user(user_id, "rec")], []),
        ]
        if self.clustered:
            # The keys span slots: admit first, then reserve and read the cache (two trips).
            admission = await self._admit(request)
            if admission.refused or not session_names_user(session_id, user_id):
                return admission, None, None, 0
            reserve = self._reserve_call(session_id, user_id, request.now, policy, lock_audit)
            reply, generation, cached = await self._run([reserve, *reads])
        else:
            both = self._admit_and_reserve_call(request, session_id, policy, lock_audit)
            (shared, nonce, reply), generation, cached = await self._run([both, *reads])
            admission = decode_admission(
                request, [("admit_shared", shared), ("claim_nonce", nonce)]
            )
            if reply[0] == NOT_ADMITTED or not session_names_user(session_id, user_id):
                return admission, None, None, 0
        reserved = self._reserve_outcome(
            session_id, user_id, request.now, policy, lock_audit, reply
        )
        cached_entry = self._decode_cached(user_id, reserved, cached)
        return admission, reserved, cached_entry, int(generation or 0)

    def _admit_and_reserve_call(
        self, request: AdmissionRequest, session_id: str, policy: Policy, lock_audit: AuditEvent
    ) -> Call:
        """Standalone only: admission and, if admitted, the reservation, in one script."""
        user_id = request.user_id or ""
        nonce = request.nonce.nonce if request.nonce is not None else "-"
        keys = [
            *self.keys.limiters(request),
            self.keys.nonce(nonce, user_id),
            self.keys.session(session_id, user_id),
            self.keys.user(user_id, "lock"),
            self.keys.stream_of(user_id),
        ]
        args = [
            *limiter_args(request),
            nonce_until_ms(request),
            *self._lock_args(policy),
            *event_pairs(lock_audit),
        ]
        return ("admit_and_reserve", keys, args)

    @staticmethod
    def _decode_cached(
        user_id: str, reserved: ReserveOutcome | None, cached: bytes | None
    ) -> CachedEnrollment | None:
        """The record cache entry read beside a reservation; none without a session."""
        return None if cached is None or reserved is None else decode_cached(user_id, cached)

    @redis_call
    async def cache_record(self, user_id: str, entry: CachedEnrollment, ttl_ms: int) -> None:
        await self._run(
            [
                (
                    "cache_record",
                    [self.keys.user(user_id, "rec"), self.keys.user(user_id, "hold")],
                    [encode_cached(entry), ttl_ms],
                )
            ]
        )

    @redis_call
    async def invalidate_record(self, user_id: str, hold_ms: int) -> None:
        await self._run(
            [
                (
                    "invalidate_record",
                    [
                        self.keys.user(user_id, "rec"),
                        self.keys.user(user_id, "hold"),
                        self.keys.user(user_id, "gen"),
                    ],
                    [hold_ms, GENERATION_KEPT_MS],
                )
            ]
        )

    @redis_call
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
        window = issued.window if issued.window_opened else None
        await self._run(
            [
                (
                    "store_session",
                    [
                        self.keys.session(session.session_id, session.user_id),
                        self.keys.user(session.user_id, "win"),
                        self.keys.stream_of(session.user_id),
                        self.keys.user(session.user_id, "rec"),
                        self.keys.user(session.user_id, "hold"),
                    ],
                    [
                        encode_session(session),
                        session.expires_at_ms + grace_ms,
                        encode_window(window) if window else b"",
                        window.ends_at_ms if window else 0,
                        b"" if record_cache is None else encode_cached(record_cache.entry),
                        0 if record_cache is None else record_cache.ttl_ms,
                        *event_pairs(audit),
                    ],
                )
            ]
        )
        self.journal.record(audit)

    @redis_call
    async def load_session(self, session_id: str, user_id: str) -> Session | None:
        if not session_names_user(session_id, user_id):
            return None
        (blob,) = await self._run([("GET", [self.keys.session(session_id, user_id)], [])])
        return decode_session(session_id, user_id, as_bytes(blob)) if blob else None

    @redis_call
    async def reserve_attempt(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> ReserveOutcome | None:
        return await self._reserve(session_id, user_id, now, policy, lock_audit)

    @staticmethod
    def _lock_args(policy: Policy) -> list[Any]:
        """The lockout policy as reserve's arguments: threshold, memory, durations (ms)."""
        return [
            policy.lockout_threshold,
            1000 * policy.lockout_memory_seconds,
            ",".join(str(1000 * d) for d in policy.lockout_durations_seconds),
        ]

    async def _reserve(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> ReserveOutcome | None:
        if not session_names_user(session_id, user_id):
            return None
        (reply,) = await self._run(
            [self._reserve_call(session_id, user_id, now, policy, lock_audit)]
        )
        return self._reserve_outcome(session_id, user_id, now, policy, lock_audit, reply)

    def _reserve_call(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> Call:
        return (
            "reserve",
            [
                self.keys.session(session_id, user_id),
                self.keys.user(user_id, "lock"),
                self.keys.stream_of(user_id),
            ],
            [epoch_ms(now), *self._lock_args(policy), *event_pairs(lock_audit)],
        )

    def _reserve_outcome(
        self,
        session_id: str,
        user_id: str,
        now: float,
        policy: Policy,
        lock_audit: AuditEvent,
        reply: Sequence[Any],
    ) -> ReserveOutcome | None:
        code, before, *written = reply
        reserved = self._reserved(session_id, user_id, now, policy, code, before, written)
        self._journal_lock(reserved, lock_audit)
        return reserved

    def _journal_lock(self, reserved: ReserveOutcome | None, lock_audit: AuditEvent) -> None:
        """The lock event is appended only by the reservation that locked the account (with
        the lock's end, as the script appends it)."""
        if isinstance(reserved, AttemptReserved) and reserved.locked_account:
            self.journal.record(with_lock_end(lock_audit, reserved.lockout.locked_until_ms))

    @staticmethod
    def _reserved(
        session_id: str,
        user_id: str,
        now: float,
        policy: Policy,
        code: int,
        before: Any,
        written: Sequence[Any],
    ) -> ReserveOutcome | None:
        """Replay the core's decision on the snapshot the script read, and check that the
        script decided, and wrote, the same."""
        if code == NO_SESSION:
            return None
        blob, *lockout_values = before
        session = decode_session(session_id, user_id, blob)
        out = reserve_attempt(session, decode_lockout(lockout_values), now=now, policy=policy)
        expected = {SessionClosed: CLOSED, AccountLocked: LOCKED, AttemptReserved: RESERVED}[
            type(out)
        ]
        if code != expected:
            raise ScriptDisagreement(f"reserve.lua returned {code}, the core decided {expected}")
        if isinstance(out, AttemptReserved):
            lockout, locked = written
            if decode_lockout(list(lockout)) != out.lockout:
                raise ScriptDisagreement("reserve.lua wrote a lockout other than the core's")
            if bool(locked) != out.locked_account:
                raise ScriptDisagreement("reserve.lua audited a lock unlike the core")
        return out

    @redis_call
    async def release_attempt(
        self, session_id: str, user_id: str, *, attempt: int, now: float, policy: Policy
    ) -> AttemptReleased | None:
        if not session_names_user(session_id, user_id):
            return None
        ((blob, before, returned, after),) = await self._run(
            [
                (
                    "release",
                    [self.keys.session(session_id, user_id), self.keys.user(user_id, "lock")],
                    [
                        attempt,
                        epoch_ms(now),
                        policy.lockout_threshold,
                        1000 * policy.lockout_memory_seconds,
                    ],
                )
            ]
        )
        session = decode_session(session_id, user_id, blob) if blob else None
        out = release_attempt(
            session, decode_lockout(list(before)), attempt=attempt, now=now, policy=policy
        )
        if bool(returned) != (out.session is not None):
            raise ScriptDisagreement("release.lua gave the session attempt back unlike the core")
        if decode_lockout(list(after)) != out.lockout:
            raise ScriptDisagreement("release.lua left a lockout other than the core's")
        return out

    @redis_call
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
        if not session_names_user(session_id, user_id):
            return None
        token = issue_token(user_id, token_entropy, now=now, policy=policy)
        calls = [
            self._conclude_call(
                session_id, user_id, attempt, key_unwrapped, token, audit, generation
            )
        ]
        if refund is not None and key_unwrapped:  # beside the conclusion: one round trip
            calls.append(
                self._refund_call(refund.merchant_id, refund.window_start_ms, refund.limits)
            )
        (code, blob, current), *refunded = await self._run(calls)
        if refund is not None and refunded:
            check_refund(refunded[0], refund.window_start_ms, refund.limits)
        if code == NO_SESSION:
            return None
        # An attempt that was never reserved (NEVER_RESERVED) makes the core raise
        # LocalProtocolError.
        out = conclude_attempt(
            decode_session(session_id, user_id, blob),
            attempt=attempt,
            key_unwrapped=key_unwrapped,
            now=now,
            token_entropy=token_entropy,
            policy=policy,
            reserved_generation=generation,
            current_generation=int(current),
        )
        match out:
            case VerificationSucceeded() if code == SUCCEEDED:
                self.journal.record(replace(audit, action=AuditAction.VERIFICATION_SUCCEEDED))
            case VerificationFailed() if code == REFUTED:
                self.journal.record(replace(audit, action=AuditAction.VERIFICATION_FAILED))
            case SessionClosed() if code == CLOSED:
                pass
            case _:
                raise ScriptDisagreement(f"conclude.lua returned {code}, the core decided {out}")
        return out

    def _conclude_call(
        self,
        session_id: str,
        user_id: str,
        attempt: int,
        key_unwrapped: bool,
        token: IssuedToken,
        audit: AuditEvent,
        generation: int,
    ) -> Call:
        keys = [
            self.keys.session(session_id, user_id),
            self.keys.user(user_id, "lock"),
            self.keys.token(user_id, token.digest),
            self.keys.user(user_id, "tokidx"),
            self.keys.stream_of(user_id),
            self.keys.user(user_id, "gen"),
        ]
        args = [
            attempt,
            "1" if key_unwrapped else "0",
            f"{session_id}:{token.expires_at_ms}:{token.issued_at_ms}",
            token.expires_at_ms,
            token.digest.hex(),
            AuditAction.VERIFICATION_SUCCEEDED.value,
            AuditAction.VERIFICATION_FAILED.value,
            generation,
            *event_pairs(audit, without_action=True),
        ]
        return ("conclude", keys, args)
