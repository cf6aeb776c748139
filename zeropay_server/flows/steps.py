"""The steps every flow shares: audit events, the door (replay check and rate limits), the
merchant and the bearer token a request presents, the user's record and its cache, and a
passkey registration's options."""

from __future__ import annotations

import math
from typing import Any

from adapters.ports import TokenInfo
from zeropay_proto import (
    BearerToken,
    NonceReused,
    RateLimited,
    RemoteProtocolError,
    authorizes_enrollment_change,
    check_replay_headers,
    epoch_ms,
    open_record,
    parse_bearer,
)
from zeropay_proto.admission import Admission, AdmissionRequest
from zeropay_proto.audit import AuditAction, AuditEvent, anonymise_client, new_event_id
from zeropay_proto.crypto import EnrollmentRecord
from zeropay_proto.passkeys import (
    CEREMONY_TIMEOUT_MS,
    REGISTRATION_CHALLENGE_BYTES,
    RelyingParty,
    registration_options,
)

from ..runtime import DECOY_RECORD_USER, Runtime
from .context import ApiError, RequestContext, retry_after


def merchant_throttled(wait_ms: int) -> ApiError:
    """The answer once a merchant's failure budget is spent (its new sessions, and the
    verifies of its sessions)."""
    message = "too many verifications failed in this merchant's sessions; retry later"
    return ApiError(429, "MERCHANT_THROTTLED", message, headers=retry_after(wait_ms))


class FlowSteps:
    """One request's flows share its runtime and context, and these steps."""

    def __init__(self, runtime: Runtime, ctx: RequestContext) -> None:
        self.rt = runtime
        self.ctx = ctx

    async def invalidate_record(self, user_id: str) -> None:
        """Drop the user's record cache entry and hold it, so that no request caches a row
        it read before the change (verify trusts the cache). A change of the enrollment or
        of its passkeys calls it before the change, which is not made if Redis cannot do
        this (503)."""
        await self.rt.state.invalidate_record(user_id, self.rt.settings.record_hold_ms)

    def event(
        self, action: AuditAction, user_id: str | None, **details: str | int | bool | None
    ) -> AuditEvent:
        return AuditEvent(
            event_id=new_event_id(self.rt.entropy(16)),
            action=action,
            user_id=user_id,
            client=anonymise_client(self.ctx.client),
            at_ms=epoch_ms(self.ctx.now),
            details=details,
        )

    def admission_request(
        self,
        user_id: str | None,
        *,
        state_changing: bool,
        merchant_id: str | None = None,
        charged_user: bool = False,
    ) -> AdmissionRequest:
        """The replay check (a 400 for bad headers) and what the limiters are asked: the
        caller is charged (its address; a merchant's budget on merchant routes), and
        ``user_id``'s bucket only where the caller is accountable for that user
        (``charged_user``: the merchant naming its user, or the user's own token)."""
        claim = None
        if state_changing:
            nonce, timestamp = self.ctx.header("X-Nonce"), self.ctx.header("X-Timestamp")
            claim = check_replay_headers(nonce, timestamp, now=self.ctx.now)
        return AdmissionRequest(
            now=self.ctx.now,
            client_ip=self.ctx.client,
            user_id=user_id,
            nonce=claim,
            limits=self.rt.limits,
            merchant_id=merchant_id,
            charged_user=charged_user,
        )

    def checked(self, admission: Admission) -> dict[str, str]:
        """Raise for a replay (403) or a refusal (429); else the X-RateLimit headers."""
        if admission.failed_open:
            self.rt.metrics.limiter_failed_open.labels("requests").inc()
        if isinstance(admission.nonce, NonceReused):
            raise ApiError(403, "NONCE_REUSED", "this X-Nonce was already used", field="X-Nonce")
        if isinstance(failures := admission.merchant_failures, RateLimited):
            raise merchant_throttled(failures.retry_after_ms)
        headers = {}
        if quota := admission.quota:
            headers = {
                "X-RateLimit-Limit": str(quota.limit),
                "X-RateLimit-Remaining": str(quota.remaining),
                "X-RateLimit-Reset": str(math.ceil(quota.reset_after_ms / 1000)),
            }
        if admission.rate_limited:
            wait = retry_after(admission.retry_after_ms)
            message = "too many requests; retry later"
            raise ApiError(429, "RATE_LIMITED", message, headers={**headers, **wait})
        return headers

    async def admit(
        self,
        user_id: str | None,
        *,
        state_changing: bool,
        merchant_id: str | None = None,
        charged_user: bool = False,
    ) -> dict[str, str]:
        """Replay check and rate limits (:meth:`admission_request`); returns the
        X-RateLimit headers for the answer."""
        asked = self.admission_request(
            user_id,
            state_changing=state_changing,
            merchant_id=merchant_id,
            charged_user=charged_user,
        )
        return self.checked(await self.rt.state.admit(asked))

    async def merchant(self, claimed: str | None = None) -> str:
        """The merchant whose API key (``X-API-Key``) the request carries (401 without one).
        A merchant id in the body, if any, must be that merchant's: sessions record the
        authenticated merchant as their payee, never a claimed one.

        A wrong key is counted against the address that presented it; past
        ``RATE_LIMIT_AUTH_FAILURES`` a window, the address's wrong keys get 429 (a right key
        from it still works: a stranger at a merchant's address cannot lock the merchant
        out)."""
        try:
            merchant_id = self.rt.merchants.authenticate(self.ctx.header("X-API-Key"))
        except RemoteProtocolError:
            limits = self.rt.limits
            if not limits.auth_failures:
                raise
            counted = await self.rt.state.count_auth_failure(self.ctx.client, self.ctx.now, limits)
            if counted is None:
                self.rt.metrics.limiter_failed_open.labels("auth_failures").inc()
            if isinstance(counted, RateLimited):
                message = "too many wrong merchant keys from this address; retry later"
                wait = retry_after(counted.retry_after_ms)
                raise ApiError(429, "RATE_LIMITED", message, headers=wait) from None
            raise
        if claimed is not None and claimed != merchant_id:
            message = "merchant_id is not the merchant of this API key"
            raise ApiError(403, "MERCHANT_MISMATCH", message, field="merchant_id")
        return merchant_id

    async def bearer_for(self, user_id: str | None = None) -> tuple[BearerToken, TokenInfo]:
        """The request's bearer token and what it proves (401 if not valid, or another
        user's)."""
        token = parse_bearer(self.ctx.header("Authorization"))
        info = await self.rt.state.token_info(token)
        if info is None or (user_id is not None and info.user_id != user_id):
            raise ApiError(401, "UNAUTHENTICATED", "the bearer token is not valid here")
        return token, info

    async def step_up_for(self, user_id: str) -> None:
        """A bearer token of this user strong and fresh enough to change the enrollment."""
        _, info = await self.bearer_for(user_id)
        policy = self.rt.policy
        if not authorizes_enrollment_change(
            factors_proven=info.factors_proven,
            issued_at_ms=info.issued_at_ms,
            now=self.ctx.now,
            policy=policy,
        ):
            message = (
                f"changing an enrollment needs a token from a verification of at least "
                f"{policy.step_up_factors} factors in the last "
                f"{policy.step_up_seconds // 60} minutes"
            )
            raise ApiError(403, "STEP_UP_REQUIRED", message, field="Authorization")

    def open_record(self, user_id: str, sealed: bytes | None) -> EnrollmentRecord | None:
        """The user's record, or ``None`` for an unknown user, who costs the same: the
        runtime's decoy record is opened instead, so the AES-GCM work does not tell an
        enrolled user from an unknown one."""
        keyring = self.rt.settings.secrets.keyring
        if sealed is None:
            open_record(keyring, user_id=DECOY_RECORD_USER, envelope=self.rt.decoy_record)
            return None
        return open_record(keyring, user_id=user_id, envelope=sealed)

    def relying_party(self) -> RelyingParty:
        """Where passkeys are on: the relying party (a 404 where they are off)."""
        rp = self.rt.settings.relying_party
        if rp is None:
            message = "passkeys are not configured here (WEBAUTHN_RP_ID)"
            raise ApiError(404, "PASSKEYS_DISABLED", message)
        return rp

    async def passkey_registration(self, user_id: str, *, enrollment: bool) -> dict[str, Any]:
        """Registration options, their challenge kept for the response."""
        rp = self.relying_party()
        challenge = self.rt.entropy(REGISTRATION_CHALLENGE_BYTES)
        registered = await self.rt.durable.passkeys(user_id)
        options = registration_options(
            rp, user_id=user_id, user_name=user_id, challenge=challenge, registered=registered
        )
        await self.rt.state.store_passkey_challenge(
            user_id, challenge, CEREMONY_TIMEOUT_MS, enrollment=enrollment
        )
        return options
