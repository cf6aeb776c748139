"""Bearer tokens, a user's erasure, the PSP checkout sessions and passkey registration
challenges in process memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from zeropay_proto import (
    BearerToken,
    token_valid,
)
from zeropay_proto.audit import AuditEvent
from zeropay_proto.idempotency import Claim, KeptAnswer

from .memory_audit_stream import MemoryAuditStream
from .ports import (
    IdempotencyScope,
    TokenInfo,
)

#: Kept idempotent answers at most (the oldest go first): a client sending a new key with
#: every request must not fill the embedded default's memory for a day. A retry whose
#: answer went runs again, as after the day.
KEPT_ANSWERS = 10_000


class MemoryTokens(MemoryAuditStream):
    """The token, erasure, PSP and idempotency parts of the state store in memory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._kept_answers: dict[str, None] = {}  # oldest first

    async def token_info(self, token: BearerToken) -> TokenInfo | None:
        info: TokenInfo | None = self._get(f"tok:{token.digest.hex()}")
        if info is None or info.user_id != token.user_id:
            return None
        valid = token_valid(info.generation, self._generation(token.user_id))
        return info if valid else None

    async def revoke_token(self, token: BearerToken, audit: AuditEvent) -> bool:
        if await self.token_info(token) is None:
            return False
        self._delete(f"tok:{token.digest.hex()}")
        self._append(audit)
        return True

    def _drop_tokens(self, user_id: str) -> int:
        """Delete every token of a user and its index; returns how many were live."""
        revoked = sum(self._delete(f"tok:{d}") for d in self._get(f"tokidx:{user_id}") or ())
        self._delete(f"tokidx:{user_id}")
        return revoked

    async def revoke_user_tokens(self, user_id: str, audit: AuditEvent) -> int:
        revoked = self._drop_tokens(user_id)
        self._next_generation(user_id)
        self._append(audit)
        return revoked

    async def forget_user(self, user_id: str, audit: AuditEvent) -> None:
        self._drop_tokens(user_id)
        self._next_generation(user_id)
        for kind in ("rec", "win", "lock"):
            self._delete(f"{kind}:{user_id}")
        self._append(audit)

    async def store_psp_session(
        self, psp_session_id: str, data: Mapping[str, Any], ttl_ms: int
    ) -> None:
        self._set(f"psp:{psp_session_id}", dict(data), self._now_ms() + ttl_ms)

    async def load_psp_session(self, psp_session_id: str) -> dict[str, Any] | None:
        data: dict[str, Any] | None = self._get(f"psp:{psp_session_id}")
        return None if data is None else dict(data)

    async def store_passkey_challenge(
        self, user_id: str, challenge: bytes, ttl_ms: int, *, enrollment: bool = False
    ) -> None:
        kind = "pke" if enrollment else "pkc"
        self._set(f"{kind}:{user_id}", challenge, self._now_ms() + ttl_ms)

    async def load_passkey_challenge(
        self, user_id: str, *, enrollment: bool = False
    ) -> bytes | None:
        challenge: bytes | None = self._get(f"{'pke' if enrollment else 'pkc'}:{user_id}")
        return challenge

    async def take_passkey_challenge(
        self, user_id: str, challenge: bytes, *, enrollment: bool = False
    ) -> bool:
        key = f"{'pke' if enrollment else 'pkc'}:{user_id}"
        if self._get(key) != challenge:
            return False
        self._delete(key)
        return True

    async def spend_enrollment_grant(self, user_id: str, grant_id: str, until_ms: int) -> bool:
        key = f"grant:{user_id}:{grant_id}"
        if self._get(key) is not None:
            return False
        self._set(key, True, until_ms)
        return True

    async def claim_idempotency(
        self, scope: IdempotencyScope, key: str, claim: Claim, lease_ms: int
    ) -> Claim | KeptAnswer | None:
        name = f"idem:{scope.name}:{key}"
        held: Claim | KeptAnswer | None = self._get(name)
        if held is None:
            self._set(name, claim, self._now_ms() + lease_ms)
        return held

    async def settle_idempotency(
        self,
        scope: IdempotencyScope,
        key: str,
        claim: Claim,
        answer: KeptAnswer | None,
        ttl_ms: int,
    ) -> bool:
        name = f"idem:{scope.name}:{key}"
        if self._get(name) != claim:
            return False
        if answer is None:
            self._delete(name)
            return True
        self._set(name, answer, self._now_ms() + ttl_ms)
        self._kept_answers[name] = None
        while len(self._kept_answers) > KEPT_ANSWERS:
            oldest = next(iter(self._kept_answers))
            del self._kept_answers[oldest]
            self._delete(oldest)
        return True

    async def publish_merchant_key_revoked(self, key_id: str) -> None:
        revoked: set[str] = self._get("merchants:revoked") or set()
        self._set("merchants:revoked", revoked | {key_id}, None)

    async def revoked_merchant_keys(self) -> frozenset[str]:
        return frozenset(self._get("merchants:revoked") or ())
