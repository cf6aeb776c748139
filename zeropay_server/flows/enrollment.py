"""Enrollment: enroll, update, delete and export a user's factors."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from adapters.errors import DependencyUnavailable
from adapters.ports import StoredEnrollment
from zeropay_proto import (
    ENROLLMENT_ENTROPY_BYTES,
    EnrollmentRequest,
    RemoteProtocolError,
    epoch_ms,
    open_record,
    parse_enrollment,
    parse_enrollment_grant,
    parse_user_id,
    plan_enrollment,
)
from zeropay_proto.audit import AuditAction, AuditEvent
from zeropay_proto.grants import GRANT_ID_BYTES, EnrollmentGrant, issue_grant, open_grant

from .context import ApiError, Reply
from .steps import FlowSteps

log = logging.getLogger("zeropay.flows")

#: The most audit events an export carries.
EXPORTED_EVENTS = 1000


class EnrollmentFlows(FlowSteps):
    async def enroll(self) -> Reply:
        enrollment = parse_enrollment(self.ctx.body)
        user_id = enrollment.user_id
        grant = None if enrollment.grant is None else self._grant(enrollment.grant, user_id)
        if enrollment.register_passkey:
            self.relying_party()  # before anything is stored: a 404 where passkeys are off
        headers = await self.admit(user_id, state_changing=True)
        stored = await self._plan_and_wrap(enrollment)
        if not await self.rt.durable.insert_enrollment(stored):
            raise ApiError(409, "ALREADY_ENROLLED", "this user is already enrolled")
        await self._invalidate_after_insert(user_id)
        if grant is not None:
            await self._spend_after_insert(grant)
        count = len(enrollment.factors)
        await self.rt.state.append(self.event(AuditAction.ENROLLED, user_id, factor_count=count))
        body = {"user_uuid": user_id, "factor_count": count, "enrolled_at_ms": stored.created_at_ms}
        if enrollment.register_passkey:
            body["passkey_options"] = await self._enrollment_grant(user_id)
        return Reply(201, {"success": True, **body}, headers)

    async def update_enrollment(self) -> Reply:
        enrollment = parse_enrollment(self.ctx.body)
        user_id, count = enrollment.user_id, len(enrollment.factors)
        if enrollment.grant is not None:  # no merchant replaces factors with a grant
            raise RemoteProtocolError(
                "a grant only creates an enrollment; an update needs the user's token",
                code="GRANT_INVALID",
                field="grant",
            )
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True, charged_user=True)
        stored = await self._plan_and_wrap(enrollment)
        await self.invalidate_record(user_id)
        if not await self.rt.durable.replace_enrollment(stored):
            raise ApiError(404, "NOT_ENROLLED", "this user is not enrolled")
        # No token outlives the factors it proved: every token of the user goes.
        audit = self.event(AuditAction.ENROLLMENT_UPDATED, user_id, factor_count=count)
        await self.rt.state.revoke_user_tokens(user_id, audit)
        body = {"success": True, "user_uuid": user_id, "factor_count": count}
        return Reply(200, body, headers)

    async def delete_enrollment(self, raw_user: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True, charged_user=True)
        await self.invalidate_record(user_id)
        if not await self.rt.durable.delete_enrollment(user_id):
            raise ApiError(404, "NOT_ENROLLED", "this user is not enrolled")
        audit = self.event(AuditAction.ENROLLMENT_DELETED, user_id)
        await self.rt.state.forget_user(user_id, audit)
        return Reply(200, {"success": True, "user_uuid": user_id, "deleted": True}, headers)

    async def export_enrollment(self, raw_user: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        await self.bearer_for(user_id)
        headers = await self.admit(user_id, state_changing=False, charged_user=True)
        stored = await self.rt.durable.export_enrollment(user_id)
        if stored is None:
            raise ApiError(404, "NOT_ENROLLED", "this user is not enrolled")
        trail = await self.rt.durable.user_trail(user_id, EXPORTED_EVENTS)
        await self.rt.state.append(self.event(AuditAction.ENROLLMENT_EXPORTED, user_id))
        body = {
            "success": True,
            "user_uuid": user_id,
            "enrollment": self._exported(user_id, stored),
            "audit_trail": [_exported_event(e) for e in trail],
        }
        return Reply(200, body, headers)

    async def issue_grant(self) -> Reply:
        user_id = parse_enrollment_grant(self.ctx.body)
        merchant_id = await self.merchant()
        headers = await self.admit(
            user_id, state_changing=True, merchant_id=merchant_id, charged_user=True
        )
        now_ms = epoch_ms(self.ctx.now)
        token, grant = issue_grant(
            user_id, now_ms=now_ms, entropy=self.rt.entropy(GRANT_ID_BYTES), key=self.rt.grant_key
        )
        body = {
            "success": True,
            "user_uuid": user_id,
            "grant": token,
            "enroll_url": f"/enroll?grant={token}",
            "expires_in": grant.expires_in_ms(now_ms) // 1000,
        }
        return Reply(201, body, headers)

    async def read_grant(self, raw_grant: str) -> Reply:
        headers = await self.admit(None, state_changing=False)
        now_ms = epoch_ms(self.ctx.now)
        grant = open_grant(raw_grant, now_ms=now_ms, key=self.rt.grant_key)
        body = {
            "success": True,
            "user_uuid": grant.user_id,
            "expires_in": grant.expires_in_ms(now_ms) // 1000,
        }
        return Reply(200, body, headers)

    def _grant(self, token: str, user_id: str) -> EnrollmentGrant:
        grant = open_grant(token, now_ms=epoch_ms(self.ctx.now), key=self.rt.grant_key)
        if grant.user_id != user_id:
            raise RemoteProtocolError(
                "the grant is for another user", code="GRANT_INVALID", field="grant"
            )
        return grant

    async def _spend_after_insert(self, grant: EnrollmentGrant) -> None:
        """Spend the grant once its enrollment stands. Spent after, not before, so that an
        outage between the two never uses up the payer's link (the enrollment is undone
        and the payer, answered 503, tries again); spent all the same, so that a grant used
        once cannot enroll the user again after they delete their enrollment."""
        try:
            fresh = await self.rt.state.spend_enrollment_grant(
                grant.user_id, grant.grant_id, grant.expires_at_ms
            )
        except DependencyUnavailable:
            await self._undo_insert(grant.user_id)
            raise
        if not fresh:
            await self._undo_insert(grant.user_id)
            raise ApiError(409, "GRANT_USED", "this enrollment link was already used")

    async def _undo_insert(self, user_id: str) -> None:
        """Take back an enrollment just inserted, and any record an initiate cached from it
        meanwhile (best effort: an outage leaves it to the cache's short life)."""
        with contextlib.suppress(DependencyUnavailable):
            await self.rt.durable.delete_enrollment(user_id)
            await self.invalidate_record(user_id)

    async def _plan_and_wrap(self, enrollment: EnrollmentRequest) -> StoredEnrollment:
        plan = plan_enrollment(
            enrollment,
            keyring=self.rt.settings.secrets.keyring,
            pepper=self.rt.settings.secrets.pepper,
            now=self.ctx.now,
            entropy=self.rt.entropy(ENROLLMENT_ENTROPY_BYTES),
            iterations=self.rt.settings.pbkdf2_iterations,
        )
        wrapped = await self.rt.crypto.wrap(plan.wrap)
        now_ms = epoch_ms(self.ctx.now)
        return StoredEnrollment(
            wrapped_key=plan.wrapped_key(wrapped),
            sealed_record=plan.sealed_record,
            device_id=plan.device_id,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )

    async def _enrollment_grant(self, user_id: str) -> dict[str, Any] | None:
        """The passkey registration options an enrollment answers with; ``None`` if Redis
        or PostgreSQL cannot start the ceremony now: the enrollment stands all the same, and
        a passkey can be added later with a token."""
        try:
            return await self.passkey_registration(user_id, enrollment=True)
        except DependencyUnavailable:
            log.warning("enrolled without a passkey grant: a dependency is unavailable")
            return None

    async def _invalidate_after_insert(self, user_id: str) -> None:
        """A cached "not enrolled" goes, after the insert: anyone may ask to enroll a user,
        and only a real change may hold a user's cache. Exact all the same: an entry cached
        before this is deleted, one a request tries to cache after it is held off. If Redis
        cannot do it, the insert is undone (a stale "not enrolled" would outlive it) and the
        client, answered 503, enrolls again. No record is pre-filled: a new user's first
        initiate reads PostgreSQL as an unknown user's does."""
        try:
            await self.invalidate_record(user_id)
        except DependencyUnavailable:
            await self._undo_insert(user_id)
            raise

    def _exported(self, user_id: str, stored: StoredEnrollment) -> dict[str, Any]:
        keyring = self.rt.settings.secrets.keyring
        record = open_record(keyring, user_id=user_id, envelope=stored.sealed_record)
        key = stored.wrapped_key
        return {
            "device_id": stored.device_id,
            "factors": [f.value for f in record.verifiers],
            "factor_count": key.factor_count,
            "key_version": key.key_version,
            "kdf": {"algorithm": "PBKDF2-HMAC-SHA256", "iterations": key.iterations},
            "created_at_ms": stored.created_at_ms,
            "updated_at_ms": stored.updated_at_ms,
        }


def _exported_event(event: AuditEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "action": event.action.value,
        "at_ms": event.at_ms,
        "client": event.client,
        "details": dict(event.details),
    }
