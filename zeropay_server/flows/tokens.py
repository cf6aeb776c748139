"""Bearer tokens: validate one, revoke one."""

from __future__ import annotations

import math

from zeropay_proto import epoch_ms
from zeropay_proto.audit import AuditAction

from .context import ApiError, Reply
from .steps import FlowSteps


class TokenFlows(FlowSteps):
    async def validate(self) -> Reply:
        _, info = await self.bearer_for()
        headers = await self.admit(info.user_id, state_changing=False, charged_user=True)
        expires_in = math.ceil((info.expires_at_ms - epoch_ms(self.ctx.now)) / 1000)
        body = {
            "success": True,
            "valid": True,
            "user_uuid": info.user_id,
            "session_id": info.session_id,
            "expires_in": max(0, expires_in),
        }
        return Reply(200, body, headers)

    async def revoke(self) -> Reply:
        token, info = await self.bearer_for()
        headers = await self.admit(info.user_id, state_changing=True, charged_user=True)
        audit = self.event(AuditAction.TOKEN_REVOKED, info.user_id)
        if not await self.rt.state.revoke_token(token, audit):
            raise ApiError(401, "UNAUTHENTICATED", "the token is not valid")
        return Reply(200, {"success": True, "revoked": True}, headers)
