"""Verification: initiate a challenge, verify the answers, report a session's status.

Initiate is two round trips: admission with the user's cached record and challenge window,
then the session stored (with the record cached, if it was read from PostgreSQL). Verify is
admission with the reservation of an attempt and the user's generation (one round trip
standalone), a failure reserved in the budget of the session's merchant, the comparison and
key unwrap (PBKDF2 in the crypto pool), and the conclusion (with the merchant's failure given
back beside it when the attempt proved everything): three round trips.

A session that challenges a passkey (the record cache holds the user's passkeys, so deciding
costs no round trip) answers WebAuthn request options whose challenge is the hash of the
payment's linked data for the next attempt; initiate and status both give them. Verify checks
the assertion beside the factors, and a proven assertion's sign count is written to
PostgreSQL under its own condition (one round trip) before anything else is compared: the
durable count, not the cached one, decides a replay or a clone.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import trio

from adapters.errors import DependencyUnavailable
from adapters.ports import (
    CachedEnrollment,
    ConcludeOutcome,
    FailureReserved,
    RecordCache,
    ReserveOutcome,
)
from zeropay_proto import (
    AccountLocked,
    AttemptReserved,
    ChallengeIssued,
    ChallengeWindow,
    InitiateRequest,
    KeyDerivationRequested,
    PaymentBinding,
    RateLimited,
    Session,
    SessionClosed,
    VerificationFailed,
    VerificationSucceeded,
    VerifyRequest,
    attempt_proven,
    compare_factors,
    describe_session,
    epoch_ms,
    make_session_id,
    open_session,
    parse_initiate,
    parse_session_id,
    parse_verify,
)
from zeropay_proto.audit import AuditAction
from zeropay_proto.identifiers import SESSION_ENTROPY_BYTES
from zeropay_proto.money import CURRENCY_EXPONENTS
from zeropay_proto.passkeys import (
    CloneSuspected,
    Possession,
    PossessionProven,
    PossessionRefused,
    assertion_options,
    check_assertion,
    count_refused,
)

from ..psp import PSP_DEADLINE_SECONDS, PspCheckout, PspError
from ..runtime import SESSION_GRACE_MS
from .context import ApiError, Reply, cached_form, open_task_group, retry_after
from .steps import FlowSteps, merchant_throttled

log = logging.getLogger("zeropay.flows")


class VerificationFlows(FlowSteps):
    async def initiate(self) -> Reply:
        req = parse_initiate(self.ctx.body, allow_loopback_http=self.rt.settings.embedded)
        merchant_id = await self.merchant(req.binding.merchant_id)
        binding = replace(req.binding, merchant_id=merchant_id)
        asked = self.admission_request(
            req.user_id, state_changing=True, merchant_id=merchant_id, charged_user=True
        )
        # One round trip: admission and the user's cached record and challenge window.
        admission, snapshot = await self.rt.state.admit_and_load(asked)
        headers = self.checked(admission)
        cached, fill = await self._record_for_initiate(req.user_id, snapshot.cached)
        issued = self._open_session(req, binding, snapshot.window, cached)
        checkout = await self._store_session(issued, req, fill)
        self.rt.metrics.sessions.opened(self.ctx.now)
        return Reply(200, self._challenge(issued.session, checkout), headers)

    async def verify(self) -> Reply:
        req = parse_verify(self.ctx.body)
        asked = self.admission_request(req.user_id, state_changing=True)
        lock_audit = self.event(AuditAction.ACCOUNT_LOCKED, req.user_id, session=req.session_id)
        # One round trip (standalone Redis): admission, then the reservation if admitted.
        admission, reserved, cached, generation = await self.rt.state.admit_and_reserve(
            asked, req.session_id, self.rt.policy, lock_audit
        )
        headers = self.checked(admission)
        attempt = await self._reserved(reserved, headers)
        failure = await self._merchant_failure_reserved(req, attempt)
        try:
            cached = await self._record_for_verify(req, attempt, cached)
            possession = await self._possession(req, attempt, cached)
            unwrapped = await self._compare(req, attempt, cached)
            outcome = await self.rt.state.conclude_attempt(
                req.session_id,
                req.user_id,
                attempt=attempt.attempt,
                key_unwrapped=attempt_proven(
                    attempt.session, key_unwrapped=unwrapped, possession=possession
                ),
                now=self.ctx.now,
                token_entropy=self.rt.entropy(32),
                policy=self.rt.policy,
                # Succeeded or failed, the conclusion records the payment it was about (the
                # webhooks' events, and the receipt rebuilt for them, come from it).
                audit=self.event(
                    AuditAction.VERIFICATION_FAILED, req.user_id, **_outcome(req, attempt)
                ),
                generation=generation,
                refund=failure,  # given back by a proven attempt, in the same round trip
            )
        except DependencyUnavailable:
            await self._merchant_failure_refunded(failure)  # an outage is nobody's failure
            raise
        return self._concluded(outcome, headers)

    async def status(self, raw_session: str) -> Reply:
        session_id, user_id = parse_session_id(raw_session)
        # Charged to the caller's address only: a session id names a user, who must not pay
        # for strangers' lookups. Found or not, the answer costs the same one read.
        headers = await self.admit(None, state_changing=False)
        session = await self.rt.state.load_session(session_id, user_id)
        if session is None:
            raise ApiError(404, "SESSION_NOT_FOUND", "session not found", field="session_id")
        report = describe_session(session, now=self.ctx.now)
        body: dict[str, Any] = {
            "success": True,
            "session_id": session_id,
            "status": report.state.value,
            "attempts_used": report.attempts_used,
            "attempts_remaining": report.attempts_remaining,
            "expires_in": math.ceil(report.expires_in_ms / 1000),
            # What the payer's page shows before anything is answered (what you see is what
            # you sign): the holder of a session id is the payer, or their merchant.
            "required_factors": _required_factors(session),
            "payment": {
                **_payment(session.binding),
                "payee_name": self.rt.merchants.display_name(session.binding.merchant_id),
            },
            "return_url": session.return_to.return_url,
            "cancel_url": session.return_to.cancel_url,
        }
        if report.attempts_remaining:
            body.update(self._passkey_request(session))
        return Reply(200, body, headers)

    # ---------------------------------------------------------------- initiate's steps

    async def _record_for_initiate(
        self, user_id: str, cached: CachedEnrollment | None
    ) -> tuple[CachedEnrollment, RecordCache | None]:
        """The user's record cache entry, read from PostgreSQL where Redis had none; that
        one is cached by the script that stores the session (two round trips either way)."""
        if cached is not None:
            return cached, None
        cached = cached_form(await self.rt.durable.load_enrollment(user_id))
        return cached, RecordCache(entry=cached, ttl_ms=1000 * self.rt.settings.record_cache_ttl)

    def _open_session(
        self,
        req: InitiateRequest,
        binding: PaymentBinding,
        window: ChallengeWindow | None,
        cached: CachedEnrollment,
    ) -> ChallengeIssued:
        record = self.open_record(req.user_id, cached.sealed_record)
        return open_session(
            session_id=make_session_id(req.user_id, self.rt.entropy(SESSION_ENTROPY_BYTES)),
            user_id=req.user_id,
            enrolled=None if record is None else record.factors,
            window=window,
            binding=binding,
            risk=req.risk,
            now=self.ctx.now,
            entropy=self.rt.entropy(32),
            decoy_key=self.rt.decoy_key,
            policy=self.rt.policy,
            possession=self.rt.possession,
            passkey_ids=tuple(p.credential_id for p in cached.passkeys),
            merchant_asks_possession=req.require_passkey,
            return_to=req.return_to,
        )

    async def _store_session(
        self, issued: ChallengeIssued, req: InitiateRequest, fill: RecordCache | None
    ) -> PspCheckout | None:
        """Store the session; the PSP checkout, if asked for, is created meanwhile."""
        session = issued.session
        audit = self.event(
            AuditAction.SESSION_INITIATED,
            req.user_id,
            session=session.session_id,
            expires_at_ms=session.expires_at_ms,
            merchant=session.binding.merchant_id,
            risk=req.risk.value,
            factors=len(session.challenged),
            amount=session.binding.amount,
            currency=session.binding.currency,
        )
        now_ms = epoch_ms(self.ctx.now)
        stored = self.rt.state.store_session(
            issued, now_ms, audit, SESSION_GRACE_MS, record_cache=fill
        )
        if req.psp_config is None:
            await stored
            return None
        made: list[PspCheckout] = []
        async with open_task_group() as nursery:
            nursery.start_soon(self._create_checkout, session, req.psp_config, made)
            await stored
        return made[0] if made else None

    async def _create_checkout(
        self, session: Session, config: Mapping[str, Any], made: list[PspCheckout]
    ) -> None:
        """Best effort within the PSP's deadline: initiate answers without a checkout (no
        ``psp_session``) if the PSP or Redis fails."""
        binding = session.binding
        with trio.move_on_after(PSP_DEADLINE_SECONDS):
            try:
                checkout = await self.rt.psp.create_checkout(
                    amount=binding.amount,
                    currency=binding.currency,
                    merchant_id=binding.merchant_id or "",
                    verification_session_id=session.session_id,
                    config=config,
                )
                ttl_ms = 1000 * self.rt.settings.psp_session_ttl
                await self.rt.state.store_psp_session(
                    checkout.psp_session_id, checkout.as_dict(), ttl_ms
                )
                made.append(checkout)
            except (PspError, DependencyUnavailable):
                log.warning("psp checkout not created", extra={"fields": {"psp": "sandbox"}})

    def _challenge(self, session: Session, checkout: PspCheckout | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "success": True,
            "session_id": session.session_id,
            "required_factors": _required_factors(session),
            "expires_in": self.rt.settings.session_ttl,
            **self._passkey_request(session),
        }
        if checkout is not None:
            body["psp_session"] = checkout.as_dict()
        return body

    def _passkey_request(self, session: Session) -> dict[str, Any]:
        """For a session that challenges a passkey: the request options of its next attempt
        (``navigator.credentials.get``) and the linked data they sign, to show the payer."""
        rp = self.rt.settings.relying_party
        if not session.challenges_possession or rp is None:
            return {}
        linked = session.linked_data(session.attempts_used + 1)
        options = assertion_options(rp, linked, session.passkey_ids)
        return {"passkey": {"options": options, "linked_data": linked.as_dict()}}

    # ---------------------------------------------------------------- verify's steps

    async def _reserved(
        self, reserved: ReserveOutcome | None, headers: dict[str, str]
    ) -> AttemptReserved:
        """The attempt reserved, or the answer for a missing session (404), a locked
        account (429) or a closed session (401)."""
        match reserved:
            case None:
                raise ApiError(404, "SESSION_NOT_FOUND", "session not found", field="session_id")
            case AccountLocked(retry_after_ms=wait):
                self.rt.metrics.verifications.labels("locked").inc()
                message = "too many failed verifications; retry later"
                raise ApiError(
                    429, "ACCOUNT_LOCKED", message, headers={**headers, **retry_after(wait)}
                )
            case SessionClosed():
                raise self._failure(0, headers)
        if reserved.locked_account:
            # The per-merchant metric feeds an alert; the budget that bounds a merchant is
            # its failures (_merchant_failure_reserved), whoever made the fifth.
            merchant = reserved.session.binding.merchant_id or "-"
            self.rt.metrics.account_locks.labels(merchant).inc()
        return reserved

    async def _merchant_failure_reserved(
        self, req: VerifyRequest, attempt: AttemptReserved
    ) -> FailureReserved | None:
        """Before anything is compared, one failure reserved in the budget of the session's
        merchant (``MERCHANT_FAILURES_PER_HOUR``): the merchant and the window it was counted
        in, or ``None`` where the budget is off. A spent budget refuses the verify (429), and
        the attempt is given back: it was not the payer's doing."""
        limits, merchant = self.rt.limits, attempt.session.binding.merchant_id
        if not limits.merchant_failures or merchant is None:
            return None
        try:
            decided = await self.rt.state.reserve_merchant_failure(merchant, self.ctx.now, limits)
        except DependencyUnavailable:
            await self._give_back(req.session_id, req.user_id, attempt.attempt)
            raise
        if decided is None:  # the budget's slot is failing over: not counted, for a while
            self.rt.metrics.limiter_failed_open.labels("merchant_failures").inc()
            return None
        if isinstance(decided, RateLimited):
            await self._give_back(req.session_id, req.user_id, attempt.attempt)
            raise merchant_throttled(decided.retry_after_ms)
        window_start_ms = decided.state.window_start_ms
        return FailureReserved(merchant_id=merchant, window_start_ms=window_start_ms, limits=limits)

    async def _merchant_failure_refunded(self, failure: FailureReserved | None) -> None:
        """The reserved failure did not happen (an outage): given back to the merchant's
        budget (best effort: an unreachable Redis leaves it counted, the safe side)."""
        if failure is None:
            return
        try:
            await self.rt.state.refund_merchant_failure(
                failure.merchant_id, failure.window_start_ms, failure.limits
            )
        except DependencyUnavailable:
            log.warning("merchant failure not refunded: redis unavailable", extra={"fields": {}})

    async def _record_for_verify(
        self, req: VerifyRequest, attempt: AttemptReserved, cached: CachedEnrollment | None
    ) -> CachedEnrollment:
        """The cached record with its wrapped key, else PostgreSQL's, the source of truth.
        If PostgreSQL is down, the attempt is given back: an outage is never a failure."""
        if cached is not None and cached.usable_by_verify:
            return cached
        try:
            return cached_form(await self.rt.durable.load_enrollment(req.user_id))
        except DependencyUnavailable:
            await self._give_back(req.session_id, req.user_id, attempt.attempt)
            raise

    async def _give_back(self, session_id: str, user_id: str, attempt: int) -> None:
        """Nothing was compared yet, so the reservation is released. If Redis is down too,
        it stays counted (logged) and the client still gets its 503."""
        try:
            await self.rt.state.release_attempt(
                session_id, user_id, attempt=attempt, now=self.ctx.now, policy=self.rt.policy
            )
        except DependencyUnavailable:
            log.warning("reservation not released: redis unavailable", extra={"fields": {}})

    async def _possession(
        self, req: VerifyRequest, attempt: AttemptReserved, cached: CachedEnrollment
    ) -> Possession | None:
        """The assertion decided against this attempt's linked data (``None``: the session
        challenges no passkey). A proven one's count is written to PostgreSQL, where it must
        still rise; if PostgreSQL is down the attempt is given back (nothing of the
        knowledge was compared yet) and the client gets a 503."""
        session = attempt.session
        rp = self.rt.settings.relying_party
        if not session.challenges_possession:
            return None
        if rp is None:  # a session opened where passkeys were on
            return PossessionRefused(reason="passkeys are not configured here")
        decided = check_assertion(
            rp,
            req.passkey or {},
            linked=session.linked_data(attempt.attempt),
            passkeys=[p for p in cached.passkeys if p.credential_id in session.passkey_ids],
        )
        if isinstance(decided, PossessionProven):
            try:
                risen = await self.rt.durable.record_sign_count(
                    req.user_id, decided.credential_id, decided.sign_count
                )
            except DependencyUnavailable:
                await self._give_back(req.session_id, req.user_id, attempt.attempt)
                raise
            decided = decided if risen else count_refused(decided)
        if isinstance(decided, CloneSuspected):
            await self._clone_suspected(req, attempt, decided)
        return decided

    async def _clone_suspected(
        self, req: VerifyRequest, attempt: AttemptReserved, clone: CloneSuspected
    ) -> None:
        """Audit a passkey whose count did not rise: a cloned authenticator, or a replay."""
        user_id = req.user_id
        details: dict[str, str | int | bool | None] = {
            "presented_count": clone.presented_count,
            **_outcome(req, attempt),
        }
        if clone.stored_count is not None:
            details["stored_count"] = clone.stored_count
        log.warning("passkey sign count did not rise", extra={"fields": {}})
        with contextlib.suppress(DependencyUnavailable):  # the attempt fails all the same
            await self.rt.state.append(
                self.event(AuditAction.PASSKEY_CLONE_SUSPECTED, user_id, **details)
            )

    async def _compare(
        self, req: VerifyRequest, attempt: AttemptReserved, cached: CachedEnrollment
    ) -> bool:
        """Whether the factors matched and the data key unwrapped (PBKDF2, in the pool)."""
        record = self.open_record(req.user_id, cached.sealed_record)
        pepper = self.rt.settings.secrets.pepper
        compared = compare_factors(attempt, record=record, presented=req.factors, pepper=pepper)
        key = cached.wrapped_key
        if not isinstance(compared, KeyDerivationRequested) or key is None:
            return False
        try:
            unwrapped = await self.rt.crypto.unwrap(
                compared.material, key.salt, key.iterations, key.wrapped, req.user_id
            )
        except DependencyUnavailable:
            # A crypto worker died (a signal to the whole process group, the OOM killer):
            # nothing was decided, so the attempt is given back and the client retries.
            await self._give_back(req.session_id, req.user_id, attempt.attempt)
            raise
        if not unwrapped:
            log.error("wrapped key did not unwrap after a match", extra={"fields": {}})
        return unwrapped

    def _concluded(self, outcome: ConcludeOutcome | None, headers: dict[str, str]) -> Reply:
        match outcome:
            case VerificationSucceeded():
                self.rt.metrics.verifications.labels("succeeded").inc()
                body = {
                    "success": True,
                    "auth_token": outcome.auth_token,
                    "token_type": "Bearer",
                    "expires_in": self.rt.policy.token_ttl_seconds,
                    "receipt": self.rt.signer.sign(outcome.receipt),
                    "receipt_jws": self.rt.signer.jws(outcome.receipt),
                }
                return Reply(200, body, headers)
            case VerificationFailed(attempts_remaining=remaining):
                raise self._failure(remaining, headers)
            case None:
                # Reserved a moment ago, gone now: Redis lost it (restarted empty, flushed,
                # failed over). Not a wrong answer: an outage, which the client retries.
                log.warning("session vanished between reservation and conclusion")
                raise DependencyUnavailable("redis")
            case _:  # concluded meanwhile by a concurrent attempt
                raise self._failure(0, headers)

    def _failure(self, remaining: int, headers: dict[str, str]) -> ApiError:
        """The one generic failure (401), whatever failed."""
        self.rt.metrics.verifications.labels("failed").inc()
        return ApiError(
            401,
            "VERIFICATION_FAILED",
            "verification failed",
            headers=headers,
            extra={"attempts_remaining": remaining},
        )


def _outcome(req: VerifyRequest, attempt: AttemptReserved) -> dict[str, str | int | bool | None]:
    """What an attempt's audit events record of it: the session, its payment, the attempt,
    whether it was the session's last, and whether a passkey was challenged."""
    session = attempt.session
    return {
        "session": req.session_id,
        "merchant": session.binding.merchant_id,
        "amount": session.binding.amount,
        "currency": session.binding.currency,
        "attempt": attempt.attempt,
        "last_attempt": attempt.attempt >= session.max_attempts,
        "possession": session.challenges_possession,
    }


def _payment(binding: PaymentBinding) -> dict[str, Any]:
    """The payment as the payer's page shows it: the amount in minor units and the
    currency's exponent, which the page formats in the payer's locale."""
    currency = binding.currency
    return {
        "amount": binding.amount,
        "currency": currency,
        "exponent": None if currency is None else CURRENCY_EXPONENTS[currency],
        "payee": binding.merchant_id,
    }


def _required_factors(session: Session) -> list[str]:
    """The factors a session asks for, ``PASSKEY`` last if it challenges one."""
    names = [f.value for f in session.challenged]
    return [*names, "PASSKEY"] if session.challenges_possession else names
