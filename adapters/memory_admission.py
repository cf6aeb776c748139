"""Admission in process memory: the core's decisions (:mod:`zeropay_proto.admission`), stored
with the expiries it gives them."""

from __future__ import annotations

from typing import Any

from zeropay_proto import (
    NonceAccepted,
    decide_nonce,
)
from zeropay_proto.admission import (
    Admission,
    AdmissionRequest,
    Kept,
    SharedLimiterStates,
    count_merchant_lock,
    decide_shared_limits,
    decide_user_bucket,
    nonce_kept_until_ms,
)

from .memory_kv import MemoryKV


class MemoryAdmission(MemoryKV):
    """AdmissionPort in memory."""

    async def admit(self, request: AdmissionRequest) -> Admission:
        limits = request.limits
        shared = user = nonce = None
        if (
            limits.global_limit
            or limits.per_ip
            or request.per_merchant
            or request.merchant_lock_cap
        ):
            merchant = request.merchant_id
            shared = decide_shared_limits(
                SharedLimiterStates(
                    global_window=self._get("rl:g"),
                    ip_window=self._get(f"rl:ip:{request.client_ip}"),
                    merchant_bucket=self._get(f"rl:m:{merchant}"),
                    merchant_locks=self._get(f"rl:ml:{merchant}"),
                ),
                request,
            )
            self._keep("rl:g", shared.global_kept)
            self._keep(f"rl:ip:{request.client_ip}", shared.ip_kept)
            self._keep(f"rl:m:{merchant}", shared.merchant_kept)
        if request.nonce is not None:
            key = f"nonce:{request.nonce.nonce}"
            nonce = decide_nonce(already_claimed=self._get(key) is not None)
            if isinstance(nonce, NonceAccepted):
                self._set(key, True, nonce_kept_until_ms(request.nonce, now=request.now))
        if request.per_user:
            key = f"rl:user:{request.user_id}"
            user = decide_user_bucket(self._get(key), request)
            self._keep(key, user.kept)
        return Admission.of(shared, user, nonce)

    def _keep(self, key: str, kept: Kept[Any] | None) -> None:
        if kept is not None:
            self._set(key, kept.state, kept.expires_at_ms)

    async def count_merchant_lock(self, merchant_id: str, now: float, window_ms: int) -> int:
        key = f"rl:ml:{merchant_id}"
        kept = count_merchant_lock(self._get(key), now=now, window_ms=window_ms)
        self._keep(key, kept)
        return kept.state.count
