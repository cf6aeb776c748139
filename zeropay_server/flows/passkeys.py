"""Passkeys: register one (options, then the browser's response), list and delete them.

Each needs a strong, fresh token of the user (the step-up that changing an enrollment needs):
a possession factor is part of the enrollment, and adding one must not be open to a weaker
proof than changing the knowledge factors.
"""

from __future__ import annotations

from typing import Any

from zeropay_proto import b64url, epoch_ms, parse_user_id
from zeropay_proto.audit import AuditAction
from zeropay_proto.passkeys import (
    CEREMONY_TIMEOUT_MS,
    MAX_PASSKEYS_PER_USER,
    REGISTRATION_CHALLENGE_BYTES,
    Passkey,
    RelyingParty,
    check_registration,
    parse_credential_id,
    registration_options,
)
from zeropay_proto.requests import parse_passkey_options, parse_passkey_registration

from .context import ApiError, Reply
from .steps import FlowSteps


class PasskeyFlows(FlowSteps):
    async def passkey_options(self) -> Reply:
        user_id = parse_passkey_options(self.ctx.body)
        rp = self._relying_party()
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True)
        challenge = self.rt.entropy(REGISTRATION_CHALLENGE_BYTES)
        registered = await self.rt.durable.passkeys(user_id)
        options = registration_options(
            rp, user_id=user_id, user_name=user_id, challenge=challenge, registered=registered
        )
        await self.rt.state.store_passkey_challenge(user_id, challenge, CEREMONY_TIMEOUT_MS)
        return Reply(200, {"success": True, "options": options}, headers)

    async def register_passkey(self) -> Reply:
        req = parse_passkey_registration(self.ctx.body)
        rp = self._relying_party()
        await self.step_up_for(req.user_id)
        headers = await self.admit(req.user_id, state_changing=True)
        challenge = await self.rt.state.take_passkey_challenge(req.user_id)
        if challenge is None:
            message = "no registration in progress: ask for the options first"
            raise ApiError(409, "NO_PASSKEY_CHALLENGE", message)
        now_ms = epoch_ms(self.ctx.now)
        passkey = check_registration(rp, req.credential, challenge=challenge, now_ms=now_ms)
        if not await self.rt.durable.add_passkey(req.user_id, passkey, MAX_PASSKEYS_PER_USER):
            message = f"a known passkey, or the user has {MAX_PASSKEYS_PER_USER} already"
            raise ApiError(409, "PASSKEY_NOT_ADDED", message)
        await self.rt.state.append(self.event(AuditAction.PASSKEY_REGISTERED, req.user_id))
        return Reply(201, {"success": True, "passkey": _described(passkey)}, headers)

    async def list_passkeys(self, raw_user: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        await self.bearer_for(user_id)
        headers = await self.admit(user_id, state_changing=False)
        passkeys = [_described(p) for p in await self.rt.durable.passkeys(user_id)]
        return Reply(200, {"success": True, "passkeys": passkeys}, headers)

    async def delete_passkey(self, raw_user: str, raw_credential: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        credential_id = parse_credential_id(raw_credential)
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True)
        if not await self.rt.durable.delete_passkey(user_id, credential_id):
            raise ApiError(404, "PASSKEY_NOT_FOUND", "no such passkey", field="credential_id")
        await self.rt.state.append(self.event(AuditAction.PASSKEY_DELETED, user_id))
        return Reply(200, {"success": True, "deleted": True}, headers)

    def _relying_party(self) -> RelyingParty:
        rp = self.rt.settings.relying_party
        if rp is None:
            message = "passkeys are not configured here (WEBAUTHN_RP_ID)"
            raise ApiError(404, "PASSKEYS_DISABLED", message)
        return rp


def _described(passkey: Passkey) -> dict[str, Any]:
    """What a client may see of a passkey: its id, count and age (public data)."""
    return {
        "credential_id": b64url(passkey.credential_id),
        "sign_count": passkey.sign_count,
        "created_at_ms": passkey.created_at_ms,
    }
