"""Admission in process memory: the core's decisions (:mod:`zeropay_proto.admission`), stored
with the expiries it gives them, under the same keys' shapes as Redis's (a request's limiters
in its merchant's or its address's shard)."""

from __future__ import annotations

from typing import Any

from zeropay_proto import (
    NonceAccepted,
    SlidingWindowState,
    decide_nonce,
)
from zeropay_proto.admission import (
    Admission,
    AdmissionRequest,
    Kept,
    Limits,
    SharedLimiterStates,
    SlidingDecision,
    decide_auth_failure,
    decide_shared_limits,
    nonce_kept_until_ms,
    refund_merchant_failure,
    reserve_merchant_failure,
    shard_of,
)

from .memory_kv import MemoryKV


def _limiter_keys(request: AdmissionRequest) -> list[str]:
    """The request's limiters: the address's window, the global shard, the merchant's
    bucket and failures, and the caller's bucket for the user (as Redis's key space)."""
    if request.merchant_id is not None:
        tag = f"rl:m:{request.merchant_id}"
        caller = request.user_id or "-"
    else:
        tag = f"rl:{shard_of(request.client_ip, request.limits.shards)}"
        caller = f"{request.client_ip}:{request.user_id or '-'}"
    ip = request.client_ip
    return [f"{tag}:ip:{ip}", f"{tag}:g", f"{tag}:m", f"{tag}:f", f"{tag}:u:{caller}"]


class MemoryAdmission(MemoryKV):
    """AdmissionPort in memory."""

    async def admit(self, request: AdmissionRequest) -> Admission:
        shared = nonce = None
        if request.meets_shared_limits:
            ip, g, m, f, u = _limiter_keys(request)
            shared = decide_shared_limits(
                SharedLimiterStates(
                    ip_window=self._get(ip),
                    global_window=self._get(g),
                    merchant_bucket=self._get(m),
                    merchant_failures=self._get(f),
                    user_bucket=self._get(u),
                ),
                request,
            )
            self._keep(ip, shared.ip_kept)
            self._keep(g, shared.global_kept)
            self._keep(m, shared.merchant_kept)
            self._keep(u, shared.user_kept)
        if request.nonce is not None:
            key = f"nonce:{request.user_id or '-'}:{request.nonce.nonce}"
            nonce = decide_nonce(already_claimed=self._get(key) is not None)
            if isinstance(nonce, NonceAccepted):
                self._set(key, True, nonce_kept_until_ms(request.nonce, now=request.now))
        return Admission.of(shared, nonce)

    def _keep(self, key: str, kept: Kept[Any] | None) -> None:
        if kept is not None:
            self._set(key, kept.state, kept.expires_at_ms)

    async def reserve_merchant_failure(
        self, merchant_id: str, now: float, limits: Limits
    ) -> SlidingDecision:
        key = f"rl:m:{merchant_id}:f"
        decided, kept = reserve_merchant_failure(self._get(key), now=now, limits=limits)
        self._keep(key, kept)
        return decided

    async def refund_merchant_failure(
        self, merchant_id: str, reserved_window_ms: int, limits: Limits
    ) -> None:
        key = f"rl:m:{merchant_id}:f"
        read: SlidingWindowState | None = self._get(key)
        kept = refund_merchant_failure(read, reserved_window_ms=reserved_window_ms, limits=limits)
        self._keep(key, kept)

    async def count_auth_failure(
        self, client_ip: str, now: float, limits: Limits
    ) -> SlidingDecision:
        key = f"rl:{shard_of(client_ip, limits.shards)}:af:{client_ip}"
        decided, kept = decide_auth_failure(self._get(key), now=now, limits=limits)
        self._keep(key, kept)
        return decided
