"""The use cases (enroll, initiate, verify, ...), one method each, free of HTTP.

A flow is the request's whole story in terms of the core and the ports: parse with the
core's parsers, decide with the core, carry out its outputs through the ports, and answer a
:class:`Reply`, or raise: :class:`ApiError` for an answer other than success,
``RemoteProtocolError`` for bad input (4xx naming the field), ``DependencyUnavailable`` for a
down dependency (503). Everything a flow knows of its request is its :class:`RequestContext`:
the client's address, the one clock reading of the request, the headers flows read, and the
body. So flows run, and are tested, without Quart (``tests/server/test_flows.py``); the HTTP
layer (``zeropay_server.app``) builds the context, calls the flow its route table names and
turns the outcome into a response.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import trio

from adapters.errors import DependencyUnavailable
from adapters.ports import NOT_ENROLLED, CachedEnrollment, RecordCache, StoredEnrollment
from zeropay_proto import (
    ENROLLMENT_ENTROPY_BYTES,
    AccountLocked,
    EnrollmentRequest,
    KeyDerivationRequested,
    NonceReused,
    RateLimited,
    SessionClosed,
    VerificationFailed,
    VerificationSucceeded,
    authorizes_enrollment_change,
    check_replay_headers,
    compare_factors,
    describe_session,
    epoch_ms,
    make_session_id,
    open_record,
    open_session,
    parse_bearer,
    parse_enrollment,
    parse_initiate,
    parse_psp_create,
    parse_session_id,
    parse_user_id,
    parse_verify,
    plan_enrollment,
)
from zeropay_proto.admission import Admission, AdmissionRequest
from zeropay_proto.audit import AuditAction, AuditEvent, anonymise_client, new_event_id
from zeropay_proto.crypto import EnrollmentRecord
from zeropay_proto.identifiers import SESSION_ENTROPY_BYTES

from .psp import PSP_DEADLINE_SECONDS, PspCheckout, PspError
from .runtime import DECOY_RECORD_USER, SESSION_GRACE_MS, Runtime

log = logging.getLogger("zeropay.flows")

#: The request headers flows read (names in lower case); the HTTP layer passes only these.
FLOW_HEADERS = ("x-nonce", "x-timestamp", "x-api-key", "authorization")


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    """What a flow knows of its request: built once per request by the HTTP layer."""

    #: The client's address (the peer, or what a trusted proxy forwarded).
    client: str
    #: The request's one clock reading (epoch seconds): every decision of it uses this.
    now: float
    #: The headers in :data:`FLOW_HEADERS` that the request carried, by lower-case name.
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Reply:
    """A flow's answer: status, JSON body and extra response headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """A response other than success, raised from anywhere in a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@contextlib.asynccontextmanager
async def open_task_group() -> AsyncIterator[trio.Nursery]:
    """A nursery whose single failure is raised as itself, not wrapped in an exception group:
    the handlers answer by the exception's type (DependencyUnavailable is a 503)."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


class Flows:
    """One method per use case: the request's whole story, in terms of the core and the
    ports, for one request (its :class:`RequestContext`). No HTTP framework here: the HTTP
    layer builds the context, calls the method named by the route table and turns the
    :class:`Reply` (or the exception) into a response."""

    def __init__(self, runtime: Runtime, ctx: RequestContext) -> None:
        self.rt = runtime
        self.ctx = ctx

    # ---------------------------------------------------------------- shared steps

    def now(self) -> float:
        return self.ctx.now

    def client(self) -> str:
        return self.ctx.client

    def event(
        self, action: AuditAction, user_id: str | None, **details: str | int | bool | None
    ) -> AuditEvent:
        return AuditEvent(
            event_id=new_event_id(self.rt.entropy(16)),
            action=action,
            user_id=user_id,
            client=anonymise_client(self.client()),
            at_ms=epoch_ms(self.now()),
            details=details,
        )

    def admission_request(
        self, user_id: str | None, *, state_changing: bool, merchant_id: str | None = None
    ) -> AdmissionRequest:
        """The replay check (a 400 for bad headers) and what the limiters are asked."""
        now = self.now()
        claim = None
        if state_changing:
            claim = check_replay_headers(
                self.ctx.header("X-Nonce"), self.ctx.header("X-Timestamp"), now=now
            )
        return AdmissionRequest(
            now=now,
            client_ip=self.client(),
            user_id=user_id,
            nonce=claim,
            limits=self.rt.limits,
            merchant_id=merchant_id,
        )

    @staticmethod
    def checked(admission: Admission) -> dict[str, str]:
        """Raise for a replay (403) or a refusal (429); else the X-RateLimit headers."""
        if isinstance(admission.nonce, NonceReused):
            raise ApiError(403, "NONCE_REUSED", "this X-Nonce was already used", field="X-Nonce")
        if isinstance(admission.merchant_locks, RateLimited):
            raise ApiError(
                429,
                "MERCHANT_THROTTLED",
                "this merchant's sessions locked too many accounts; retry later",
                headers={
                    "Retry-After": str(
                        max(1, math.ceil(admission.merchant_locks.retry_after_ms / 1000))
                    )
                },
            )
        decisions = admission.limiter_decisions
        headers: dict[str, str] = {}
        if decisions:
            tightest = min(
                decisions, key=lambda d: 0 if isinstance(d, RateLimited) else d.remaining
            )
            remaining = 0 if isinstance(tightest, RateLimited) else tightest.remaining
            headers = {
                "X-RateLimit-Limit": str(tightest.limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(math.ceil(tightest.reset_after_ms / 1000)),
            }
        refused = [d for d in decisions if isinstance(d, RateLimited)]
        if refused:
            retry = math.ceil(max(d.retry_after_ms for d in refused) / 1000)
            raise ApiError(
                429,
                "RATE_LIMITED",
                "too many requests; retry later",
                headers={**headers, "Retry-After": str(max(1, retry))},
            )
        return headers

    def merchant(self, claimed: str | None = None) -> str:
        """The merchant whose API key (``X-API-Key``) the request carries (401 without one).
        A merchant id in the body, if any, must be that merchant's: sessions record the
        authenticated merchant as their payee, never a claimed one."""
        merchant_id = self.rt.merchants.authenticate(self.ctx.header("X-API-Key"))
        if claimed is not None and claimed != merchant_id:
            raise ApiError(
                403,
                "MERCHANT_MISMATCH",
                "merchant_id is not the merchant of this API key",
                field="merchant_id",
            )
        return merchant_id

    async def admit(
        self, user_id: str | None, *, state_changing: bool, merchant_id: str | None = None
    ) -> dict[str, str]:
        """Replay check and rate limits (the merchant's too, on merchant routes); returns the
        X-RateLimit headers for the answer."""
        request_ = self.admission_request(
            user_id, state_changing=state_changing, merchant_id=merchant_id
        )
        return self.checked(await self.rt.state.admit(request_))

    async def step_up_for(self, user_id: str) -> None:
        """A bearer token of this user strong and fresh enough to change the enrollment."""
        _, info = await self.bearer_for(user_id)
        if not authorizes_enrollment_change(
            factors_proven=info.factors_proven,
            issued_at_ms=info.issued_at_ms,
            now=self.now(),
            policy=self.rt.policy,
        ):
            raise ApiError(
                403,
                "STEP_UP_REQUIRED",
                f"changing an enrollment needs a token from a verification of at least "
                f"{self.rt.policy.step_up_factors} factors in the last "
                f"{self.rt.policy.step_up_seconds // 60} minutes",
                field="Authorization",
            )

    async def bearer_for(self, user_id: str | None = None) -> Any:
        token = parse_bearer(self.ctx.header("Authorization"))
        info = await self.rt.state.token_info(token)
        if info is None or (user_id is not None and info.user_id != user_id):
            raise ApiError(401, "UNAUTHENTICATED", "the bearer token is not valid here")
        return token, info

    # ---------------------------------------------------------------- enrollment

    async def _plan_and_wrap(self, enrollment: EnrollmentRequest) -> StoredEnrollment:
        now = self.now()
        plan = plan_enrollment(
            enrollment,
            keyring=self.rt.settings.secrets.keyring,
            pepper=self.rt.settings.secrets.pepper,
            now=now,
            entropy=self.rt.entropy(ENROLLMENT_ENTROPY_BYTES),
            iterations=self.rt.settings.pbkdf2_iterations,
        )
        wrapped = await self.rt.crypto.wrap(plan.wrap)
        return StoredEnrollment(
            wrapped_key=plan.wrapped_key(wrapped),
            sealed_record=plan.sealed_record,
            device_id=plan.device_id,
            created_at_ms=epoch_ms(now),
            updated_at_ms=epoch_ms(now),
        )

    async def enroll(self) -> Reply:
        enrollment = parse_enrollment(self.ctx.body)
        user_id = enrollment.user_id
        headers = await self.admit(user_id, state_changing=True)
        stored = await self._plan_and_wrap(enrollment)
        if not await self.rt.durable.insert_enrollment(stored):
            raise ApiError(409, "ALREADY_ENROLLED", "this user is already enrolled")
        # A cached "not enrolled" goes, after the insert: anyone may ask to enroll a user,
        # and only a real change may hold a user's cache. Exact all the same: an entry cached
        # before this is deleted, one a request tries to cache after it is held off. If Redis
        # cannot do it, the insert is undone (a stale "not enrolled" would outlive it) and
        # the client, answered 503, enrolls again. No record is pre-filled: a new user's
        # first initiate reads PostgreSQL as an unknown user's does.
        try:
            await self._invalidate_record(user_id)
        except DependencyUnavailable:
            with contextlib.suppress(DependencyUnavailable):
                await self.rt.durable.delete_enrollment(user_id)
            raise
        await self.rt.state.append(
            self.event(AuditAction.ENROLLED, user_id, factor_count=len(enrollment.factors))
        )
        return Reply(
            201,
            {
                "success": True,
                "user_uuid": user_id,
                "factor_count": len(enrollment.factors),
                "enrolled_at_ms": stored.created_at_ms,
            },
            headers,
        )

    async def update_enrollment(self) -> Reply:
        enrollment = parse_enrollment(self.ctx.body)
        user_id = enrollment.user_id
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True)
        stored = await self._plan_and_wrap(enrollment)
        await self._invalidate_record(user_id)
        if not await self.rt.durable.replace_enrollment(stored):
            raise ApiError(404, "NOT_ENROLLED", "this user is not enrolled")
        # No token outlives the factors it proved: every token of the user goes.
        await self.rt.state.revoke_user_tokens(
            user_id,
            self.event(
                AuditAction.ENROLLMENT_UPDATED, user_id, factor_count=len(enrollment.factors)
            ),
        )
        return Reply(
            200,
            {"success": True, "user_uuid": user_id, "factor_count": len(enrollment.factors)},
            headers,
        )

    async def delete_enrollment(self, raw_user: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True)
        await self._invalidate_record(user_id)
        if not await self.rt.durable.delete_enrollment(user_id):
            raise ApiError(404, "NOT_ENROLLED", "this user is not enrolled")
        await self.rt.state.forget_user(
            user_id, self.event(AuditAction.ENROLLMENT_DELETED, user_id)
        )
        return Reply(200, {"success": True, "user_uuid": user_id, "deleted": True}, headers)

    async def _invalidate_record(self, user_id: str) -> None:
        """Drop the user's record cache entry and hold it, so that no request caches a row
        it read before the change (verify trusts the cache). An update or a delete calls it
        before the change, which is not made if Redis cannot do this (503)."""
        await self.rt.state.invalidate_record(user_id, self.rt.settings.record_hold_ms)

    async def export_enrollment(self, raw_user: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        await self.bearer_for(user_id)
        headers = await self.admit(user_id, state_changing=False)
        stored = await self.rt.durable.export_enrollment(user_id)
        if stored is None:
            raise ApiError(404, "NOT_ENROLLED", "this user is not enrolled")
        record = open_record(
            self.rt.settings.secrets.keyring, user_id=user_id, envelope=stored.sealed_record
        )
        trail = await self.rt.durable.user_trail(user_id, 1000)
        await self.rt.state.append(self.event(AuditAction.ENROLLMENT_EXPORTED, user_id))
        key = stored.wrapped_key
        return Reply(
            200,
            {
                "success": True,
                "user_uuid": user_id,
                "enrollment": {
                    "device_id": stored.device_id,
                    "factors": [f.value for f in record.verifiers],
                    "factor_count": key.factor_count,
                    "key_version": key.key_version,
                    "kdf": {"algorithm": "PBKDF2-HMAC-SHA256", "iterations": key.iterations},
                    "created_at_ms": stored.created_at_ms,
                    "updated_at_ms": stored.updated_at_ms,
                },
                "audit_trail": [
                    {
                        "event_id": e.event_id,
                        "action": e.action.value,
                        "at_ms": e.at_ms,
                        "client": e.client,
                        "details": dict(e.details),
                    }
                    for e in trail
                ],
            },
            headers,
        )

    # ---------------------------------------------------------------- verification

    async def initiate(self) -> Reply:
        req = parse_initiate(self.ctx.body)
        merchant_id = self.merchant(req.binding.merchant_id)
        binding = replace(req.binding, merchant_id=merchant_id)
        asked = self.admission_request(req.user_id, state_changing=True, merchant_id=merchant_id)
        # One round trip: admission and the user's cached record and challenge window.
        admission, snapshot = await self.rt.state.admit_and_load(asked)
        headers = self.checked(admission)
        now = asked.now
        cached, fill = snapshot.cached, None
        if cached is None:
            cached = cached_form(await self.rt.durable.load_enrollment(req.user_id))
            # Cached by the same script that stores the session: two round trips either way.
            fill = RecordCache(entry=cached, ttl_ms=1000 * self.rt.settings.record_cache_ttl)
        record = self._open_record(req.user_id, cached.sealed_record)
        issued = open_session(
            session_id=make_session_id(req.user_id, self.rt.entropy(SESSION_ENTROPY_BYTES)),
            user_id=req.user_id,
            enrolled=None if record is None else record.factors,
            window=snapshot.window,
            binding=binding,
            risk=req.risk,
            now=now,
            entropy=self.rt.entropy(32),
            decoy_key=self.rt.decoy_key,
            policy=self.rt.policy,
        )
        session = issued.session
        checkout: list[PspCheckout] = []

        async def create_checkout(config: Mapping[str, Any]) -> None:
            with trio.move_on_after(PSP_DEADLINE_SECONDS):
                try:
                    made = await self.rt.psp.create_checkout(
                        amount=binding.amount,
                        currency=binding.currency,
                        merchant_id=merchant_id,
                        verification_session_id=session.session_id,
                        config=config,
                    )
                    await self.rt.state.store_psp_session(
                        made.psp_session_id, made.as_dict(), 1000 * self.rt.settings.psp_session_ttl
                    )
                    checkout.append(made)
                except (PspError, DependencyUnavailable):
                    log.warning("psp checkout not created", extra={"fields": {"psp": "sandbox"}})

        stored = self.rt.state.store_session(
            issued,
            epoch_ms(now),
            self.event(
                AuditAction.SESSION_INITIATED,
                req.user_id,
                merchant=merchant_id,
                risk=req.risk.value,
                factors=len(session.challenged),
            ),
            SESSION_GRACE_MS,
            record_cache=fill,
        )
        if req.psp_config is None:
            await stored
        else:  # the checkout is created while the session is stored
            async with open_task_group() as nursery:
                nursery.start_soon(create_checkout, req.psp_config)
                await stored
        self.rt.metrics.sessions.opened(now)
        answer: dict[str, Any] = {
            "success": True,
            "session_id": session.session_id,
            "required_factors": [f.value for f in session.challenged],
            "expires_in": self.rt.settings.session_ttl,
            "psp_ready": bool(checkout),
        }
        if checkout:
            answer["psp_session"] = checkout[0].as_dict()
        return Reply(200, answer, headers)

    async def verify(self) -> Reply:
        req = parse_verify(self.ctx.body)
        asked = self.admission_request(req.user_id, state_changing=True)
        now = asked.now
        lock_event = self.event(AuditAction.ACCOUNT_LOCKED, req.user_id)
        # One round trip (standalone Redis): admission, then the reservation if admitted.
        admission, reserved, cached = await self.rt.state.admit_and_reserve(
            asked, req.session_id, self.rt.policy, lock_event
        )
        headers = self.checked(admission)
        if reserved is None:
            raise ApiError(404, "SESSION_NOT_FOUND", "session not found", field="session_id")
        if isinstance(reserved, AccountLocked):
            self.rt.metrics.verifications.labels("locked").inc()
            retry = str(max(1, math.ceil(reserved.retry_after_ms / 1000)))
            raise ApiError(
                429,
                "ACCOUNT_LOCKED",
                "too many failed verifications; retry later",
                headers={**headers, "Retry-After": retry},
            )
        if isinstance(reserved, SessionClosed):
            return self._failed(0, headers)
        if reserved.locked_account:
            await self._lock_counted(reserved.session.binding.merchant_id, now)
        if cached is None or not cached.usable_by_verify:
            # Not cached (or cached without its key): PostgreSQL, the source of truth.
            try:
                cached = cached_form(await self.rt.durable.load_enrollment(req.user_id))
            except DependencyUnavailable:
                await self._give_back(req.session_id, req.user_id, reserved.attempt, now)
                raise
        record = self._open_record(req.user_id, cached.sealed_record)
        compared = compare_factors(
            reserved, record=record, presented=req.factors, pepper=self.rt.settings.secrets.pepper
        )
        unwrapped = False
        if isinstance(compared, KeyDerivationRequested) and cached.wrapped_key is not None:
            key = cached.wrapped_key
            unwrapped = await self.rt.crypto.unwrap(
                compared.material, key.salt, key.iterations, key.wrapped, req.user_id
            )
            if not unwrapped:
                log.error("wrapped key did not unwrap after a match", extra={"fields": {}})
        outcome = await self.rt.state.conclude_attempt(
            req.session_id,
            req.user_id,
            attempt=reserved.attempt,
            key_unwrapped=unwrapped,
            now=now,
            token_entropy=self.rt.entropy(32),
            policy=self.rt.policy,
            audit=self.event(AuditAction.VERIFICATION_FAILED, req.user_id),
        )
        if isinstance(outcome, VerificationSucceeded):
            self.rt.metrics.verifications.labels("succeeded").inc()
            return Reply(
                200,
                {
                    "success": True,
                    "auth_token": outcome.auth_token,
                    "token_type": "Bearer",
                    "expires_in": self.rt.policy.token_ttl_seconds,
                    "receipt": self.rt.signer.sign(outcome.receipt),
                },
                headers,
            )
        if isinstance(outcome, VerificationFailed):
            return self._failed(outcome.attempts_remaining, headers)
        if outcome is None:
            # Reserved a moment ago, gone now: Redis lost it (restarted empty, flushed, failed
            # over). Not a wrong answer: an outage, which the client retries.
            log.warning("session vanished between reservation and conclusion")
            raise DependencyUnavailable("redis")
        return self._failed(0, headers)  # concluded meanwhile by a concurrent attempt

    async def _lock_counted(self, merchant_id: str | None, now: float) -> None:
        """This attempt locked the account: count the lock against the session's merchant
        (the cap of MERCHANT_LOCKS_PER_HOUR; the per-merchant metric feeds an alert)."""
        merchant = merchant_id or "-"
        self.rt.metrics.account_locks.labels(merchant).inc()
        with contextlib.suppress(DependencyUnavailable):  # the attempt itself still counts
            await self.rt.state.count_merchant_lock(merchant, now, self.rt.limits.lock_window_ms)

    def _open_record(self, user_id: str, sealed: bytes | None) -> EnrollmentRecord | None:
        """The user's record, or ``None`` for an unknown user, who costs the same: the
        runtime's decoy record is opened instead, so the AES-GCM work does not tell an
        enrolled user from an unknown one."""
        keyring = self.rt.settings.secrets.keyring
        if sealed is None:
            open_record(keyring, user_id=DECOY_RECORD_USER, envelope=self.rt.decoy_record)
            return None
        return open_record(keyring, user_id=user_id, envelope=sealed)

    async def _give_back(self, session_id: str, user_id: str, attempt: int, now: float) -> None:
        """An outage is never a failed attempt: nothing was compared yet, so the reservation
        is released. If Redis is down too, it stays counted (logged) and the client still
        gets its 503."""
        try:
            await self.rt.state.release_attempt(
                session_id, user_id, attempt=attempt, now=now, policy=self.rt.policy
            )
        except DependencyUnavailable:
            log.warning("reservation not released: redis unavailable", extra={"fields": {}})

    def _failed(self, remaining: int, headers: dict[str, str]) -> NoReturn:
        self.rt.metrics.verifications.labels("failed").inc()
        raise ApiError(
            401,
            "VERIFICATION_FAILED",
            "verification failed",
            headers=headers,
            extra={"attempts_remaining": remaining},
        )

    async def status(self, raw_session: str) -> Reply:
        session_id, user_id = parse_session_id(raw_session)
        headers = await self.admit(user_id, state_changing=False)
        session = await self.rt.state.load_session(session_id, user_id)
        if session is None:
            raise ApiError(404, "SESSION_NOT_FOUND", "session not found", field="session_id")
        report = describe_session(session, now=self.now())
        return Reply(
            200,
            {
                "success": True,
                "session_id": session_id,
                "status": report.state.value,
                "attempts_used": report.attempts_used,
                "attempts_remaining": report.attempts_remaining,
                "expires_in": math.ceil(report.expires_in_ms / 1000),
            },
            headers,
        )

    # ---------------------------------------------------------------- tokens

    async def validate(self) -> Reply:
        _, info = await self.bearer_for()
        headers = await self.admit(info.user_id, state_changing=False)
        return Reply(
            200,
            {
                "success": True,
                "valid": True,
                "user_uuid": info.user_id,
                "session_id": info.session_id,
                "expires_in": max(0, math.ceil((info.expires_at_ms - epoch_ms(self.now())) / 1000)),
            },
            headers,
        )

    async def revoke(self) -> Reply:
        token, info = await self.bearer_for()
        headers = await self.admit(info.user_id, state_changing=True)
        revoked = await self.rt.state.revoke_token(
            token, self.event(AuditAction.TOKEN_REVOKED, info.user_id)
        )
        if not revoked:
            raise ApiError(401, "UNAUTHENTICATED", "the token is not valid")
        return Reply(200, {"success": True, "revoked": True}, headers)

    # ---------------------------------------------------------------- PSP

    async def psp_create(self) -> Reply:
        req = parse_psp_create(self.ctx.body)
        merchant_id = self.merchant(req.binding.merchant_id)
        headers = await self.admit(req.user_id, state_changing=True, merchant_id=merchant_id)
        try:
            with trio.fail_after(PSP_DEADLINE_SECONDS):
                made = await self.rt.psp.create_checkout(
                    amount=req.binding.amount,
                    currency=req.binding.currency,
                    merchant_id=merchant_id,
                    verification_session_id=req.session_id,
                    config=req.psp_config,
                )
        except (PspError, trio.TooSlowError):
            raise ApiError(502, "PSP_UNAVAILABLE", "the payment provider did not answer") from None
        await self.rt.state.store_psp_session(
            made.psp_session_id, made.as_dict(), 1000 * self.rt.settings.psp_session_ttl
        )
        body = {
            "success": True,
            "psp_session": made.as_dict(),
            "expires_in": self.rt.settings.psp_session_ttl,
        }
        return Reply(201, body, headers)

    async def psp_get(self, psp_session_id: str) -> Reply:
        if not psp_session_id.startswith("psp_") or len(psp_session_id) > 64:
            raise ApiError(404, "PSP_SESSION_NOT_FOUND", "PSP session not found", field="id")
        merchant_id = self.merchant()
        headers = await self.admit(None, state_changing=False, merchant_id=merchant_id)
        data = await self.rt.state.load_psp_session(psp_session_id)
        if data is not None and data.get("merchant_id") not in (None, merchant_id):
            data = None  # another merchant's checkout: as good as absent
        if data is None:
            raise ApiError(404, "PSP_SESSION_NOT_FOUND", "PSP session not found", field="id")
        return Reply(200, {"success": True, "psp_session": data}, headers)


def cached_form(stored: StoredEnrollment | None) -> CachedEnrollment:
    """What the record cache holds of a PostgreSQL row (or of its absence)."""
    if stored is None:
        return NOT_ENROLLED
    return CachedEnrollment(sealed_record=stored.sealed_record, wrapped_key=stored.wrapped_key)
