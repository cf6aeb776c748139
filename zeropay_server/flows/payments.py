"""The PSP's checkout sessions, on merchant routes (``X-API-Key``)."""

from __future__ import annotations

import trio

from zeropay_proto import parse_psp_create

from ..psp import PSP_DEADLINE_SECONDS, PspError
from .context import ApiError, Reply
from .steps import FlowSteps

#: A PSP session id as the sandbox provider makes them (anything else is not found).
PSP_SESSION_PREFIX, PSP_SESSION_MAX_LENGTH = "psp_", 64


class PaymentFlows(FlowSteps):
    async def psp_create(self) -> Reply:
        req = parse_psp_create(self.ctx.body)
        merchant_id = await self.merchant(req.binding.merchant_id)
        headers = await self.admit(
            req.user_id, state_changing=True, merchant_id=merchant_id, charged_user=True
        )
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
        ttl_s = self.rt.settings.psp_session_ttl
        await self.rt.state.store_psp_session(made.psp_session_id, made.as_dict(), 1000 * ttl_s)
        body = {"success": True, "psp_session": made.as_dict(), "expires_in": ttl_s}
        return Reply(201, body, headers)

    async def psp_get(self, psp_session_id: str) -> Reply:
        merchant_id = await self.merchant()
        headers = await self.admit(None, state_changing=False, merchant_id=merchant_id)
        well_formed = (
            psp_session_id.startswith(PSP_SESSION_PREFIX)
            and len(psp_session_id) <= PSP_SESSION_MAX_LENGTH
        )
        data = await self.rt.state.load_psp_session(psp_session_id) if well_formed else None
        # Another merchant's checkout is as good as absent.
        if data is None or data.get("merchant_id") not in (None, merchant_id):
            raise ApiError(404, "PSP_SESSION_NOT_FOUND", "PSP session not found", field="id")
        return Reply(200, {"success": True, "psp_session": data}, headers)
