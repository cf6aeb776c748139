"""Passkeys: register one (options, then the browser's response), list and delete them.

Each change needs a strong, fresh token of the user (the step-up that changing an enrollment
needs), and revokes every token of the user once made, as an enrollment change does: a token
never outlives the enrollment it proved. A possession factor is part of the enrollment, and
adding one must not be open to a weaker proof than changing the knowledge factors. The one
exception is the enrollment itself: asked with ``register_passkey``, it answers registration
options whose challenge, kept apart from the token holders' (``enrollment=True``), lets the
enrolling client register one passkey without a token within
:data:`~zeropay_proto.passkeys.CEREMONY_TIMEOUT_MS`. Only that client saw the challenge, and
the signed response must carry it.
"""

from __future__ import annotations

from typing import Any

from zeropay_proto import b64url, epoch_ms, parse_user_id
from zeropay_proto.audit import AuditAction
from zeropay_proto.passkeys import (
    MAX_PASSKEYS_PER_USER,
    Passkey,
    check_registration,
    parse_credential_id,
)
from zeropay_proto.requests import parse_passkey_options, parse_passkey_registration

from .context import ApiError, Reply
from .steps import FlowSteps


class PasskeyFlows(FlowSteps):
    async def passkey_options(self) -> Reply:
        user_id = parse_passkey_options(self.ctx.body)
        self.relying_party()
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True, charged_user=True)
        options = await self.passkey_registration(user_id, enrollment=False)
        return Reply(200, {"success": True, "options": options}, headers)

    async def register_passkey(self) -> Reply:
        req = parse_passkey_registration(self.ctx.body)
        rp = self.relying_party()
        with_token = self.ctx.header("Authorization") is not None
        if with_token:
            await self.step_up_for(req.user_id)
        # With the enrollment's grant, the caller is anonymous: only its address is charged.
        headers = await self.admit(req.user_id, state_changing=True, charged_user=with_token)
        grant = not with_token
        challenge = await self.rt.state.load_passkey_challenge(req.user_id, enrollment=grant)
        if challenge is None and grant:
            message = "a bearer token is required, or the enrollment's registration options"
            raise ApiError(401, "UNAUTHENTICATED", message, field="Authorization")
        if challenge is None:
            message = "no registration in progress: ask for the options first"
            raise ApiError(409, "NO_PASSKEY_CHALLENGE", message)
        # The response is checked before the challenge is spent: one that does not verify (a
        # stranger's junk, sent to spoil the enrolling user's grant) is a 400 and leaves it.
        now_ms = epoch_ms(self.ctx.now)
        passkey = check_registration(rp, req.credential, challenge=challenge, now_ms=now_ms)
        if not await self.rt.state.take_passkey_challenge(req.user_id, challenge, enrollment=grant):
            message = "this registration's challenge was used or replaced; ask for new options"
            raise ApiError(409, "NO_PASSKEY_CHALLENGE", message)
        await self.invalidate_record(req.user_id)  # the record cache holds the passkeys
        if not await self.rt.durable.add_passkey(req.user_id, passkey, MAX_PASSKEYS_PER_USER):
            message = f"a known passkey, or the user has {MAX_PASSKEYS_PER_USER} already"
            raise ApiError(409, "PASSKEY_NOT_ADDED", message)
        # A strong token proved the enrollment as it was: none outlives the change.
        audit = self.event(AuditAction.PASSKEY_REGISTERED, req.user_id)
        await self.rt.state.revoke_user_tokens(req.user_id, audit)
        return Reply(201, {"success": True, "passkey": _described(passkey)}, headers)

    async def list_passkeys(self, raw_user: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        await self.bearer_for(user_id)
        headers = await self.admit(user_id, state_changing=False, charged_user=True)
        passkeys = [_described(p) for p in await self.rt.durable.passkeys(user_id)]
        return Reply(200, {"success": True, "passkeys": passkeys}, headers)

    async def delete_passkey(self, raw_user: str, raw_credential: str) -> Reply:
        user_id = parse_user_id(raw_user, field="uuid")
        credential_id = parse_credential_id(raw_credential)
        await self.step_up_for(user_id)
        headers = await self.admit(user_id, state_changing=True, charged_user=True)
        await self.invalidate_record(user_id)
        if not await self.rt.durable.delete_passkey(user_id, credential_id):
            raise ApiError(404, "PASSKEY_NOT_FOUND", "no such passkey", field="credential_id")
        await self.rt.state.revoke_user_tokens(
            user_id, self.event(AuditAction.PASSKEY_DELETED, user_id)
        )
        return Reply(200, {"success": True, "deleted": True}, headers)


def _described(passkey: Passkey) -> dict[str, Any]:
    """What a client may see of a passkey: its id, count and age (public data)."""
    return {
        "credential_id": b64url(passkey.credential_id),
        "sign_count": passkey.sign_count,
        "created_at_ms": passkey.created_at_ms,
    }
