"""Bearer tokens, a user's erasure, the PSP checkout sessions and passkey registration
challenges on Redis."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from zeropay_proto import (
    GENERATION_KEPT_MS,
    BearerToken,
    token_valid,
)
from zeropay_proto.audit import AuditEvent
from zeropay_proto.idempotency import Claim, KeptAnswer, decode_held, encode_held

from .errors import DependencyUnavailable
from .ports import (
    IdempotencyScope,
    TokenInfo,
)
from .redis_scripts import (
    ScriptRunner,
    as_bytes,
    event_pairs,
    redis_call,
)


class RedisTokens(ScriptRunner):
    """The token, erasure and PSP parts of SessionPort and PspSessionPort on Redis."""

    @redis_call
    async def token_info(self, token: BearerToken) -> TokenInfo | None:
        value, current = await self._run(
            [
                ("GET", [self.keys.token(token.user_id, token.digest)], []),
                ("GET", [self.keys.user(token.user_id, "gen")], []),
            ]
        )
        if not value:
            return None
        session_id, expires, issued, factors, generation = as_bytes(value).decode().rsplit(":", 4)
        if not token_valid(int(generation), int(current or 0)):
            return None
        return TokenInfo(
            user_id=token.user_id,
            session_id=session_id,
            expires_at_ms=int(expires),
            issued_at_ms=int(issued),
            factors_proven=int(factors),
            generation=int(generation),
        )

    @redis_call
    async def revoke_token(self, token: BearerToken, audit: AuditEvent) -> bool:
        (revoked,) = await self._run(
            [
                (
                    "revoke",
                    [
                        self.keys.token(token.user_id, token.digest),
                        self.keys.user(token.user_id, "tokidx"),
                        self.keys.stream_of(token.user_id),
                    ],
                    [token.digest.hex(), *event_pairs(audit)],
                )
            ]
        )
        if revoked:
            self.journal.record(audit)
        return bool(revoked)

    @redis_call
    async def revoke_user_tokens(self, user_id: str, audit: AuditEvent) -> int:
        (revoked,) = await self._run(
            [
                (
                    "revoke_user",
                    [
                        self.keys.user(user_id, "tokidx"),
                        self.keys.stream_of(user_id),
                        self.keys.user(user_id, "gen"),
                    ],
                    [self.keys.token(user_id, b""), GENERATION_KEPT_MS, *event_pairs(audit)],
                )
            ]
        )
        self.journal.record(audit)
        return int(revoked)

    @redis_call
    async def forget_user(self, user_id: str, audit: AuditEvent) -> None:
        token_prefix = self.keys.token(user_id, b"")
        await self._run(
            [
                (
                    "forget_user",
                    [
                        self.keys.user(user_id, "rec"),
                        self.keys.user(user_id, "win"),
                        self.keys.user(user_id, "lock"),
                        self.keys.user(user_id, "tokidx"),
                        self.keys.stream_of(user_id),
                        self.keys.user(user_id, "gen"),
                    ],
                    [token_prefix, GENERATION_KEPT_MS, *event_pairs(audit)],
                )
            ]
        )
        self.journal.record(audit)

    @redis_call
    async def store_psp_session(
        self, psp_session_id: str, data: Mapping[str, Any], ttl_ms: int
    ) -> None:
        key = self.keys.psp(psp_session_id)
        await self._run([("SET", [key], [json.dumps(dict(data)), "PX", ttl_ms])])

    @redis_call
    async def load_psp_session(self, psp_session_id: str) -> dict[str, Any] | None:
        (raw,) = await self._run([("GET", [self.keys.psp(psp_session_id)], [])])
        if not raw:
            return None
        data: dict[str, Any] = json.loads(as_bytes(raw))
        return data

    @redis_call
    async def store_passkey_challenge(
        self, user_id: str, challenge: bytes, ttl_ms: int, *, enrollment: bool = False
    ) -> None:
        key = self.keys.user(user_id, "pke" if enrollment else "pkc")
        await self._run([("SET", [key], [challenge, "PX", ttl_ms])])

    @redis_call
    async def load_passkey_challenge(
        self, user_id: str, *, enrollment: bool = False
    ) -> bytes | None:
        key = self.keys.user(user_id, "pke" if enrollment else "pkc")
        (challenge,) = await self._run([("GET", [key], [])])
        return None if challenge is None else as_bytes(challenge)

    @redis_call
    async def take_passkey_challenge(
        self, user_id: str, challenge: bytes, *, enrollment: bool = False
    ) -> bool:
        key = self.keys.user(user_id, "pke" if enrollment else "pkc")
        (taken,) = await self._run([("take_challenge", [key], [challenge])])
        return bool(taken)

    @redis_call
    async def claim_idempotency(
        self, scope: IdempotencyScope, key: str, claim: Claim, lease_ms: int
    ) -> Claim | KeptAnswer | None:
        name = self.keys.idempotency(scope.kind, scope.owner, key)
        (held,) = await self._run([("claim_idempotency", [name], [encode_held(claim), lease_ms])])
        if held is None:
            return None
        try:
            return decode_held(as_bytes(held))
        except ValueError:  # a later version's record: never a wrong replay
            raise DependencyUnavailable("redis") from None

    @redis_call
    async def settle_idempotency(
        self,
        scope: IdempotencyScope,
        key: str,
        claim: Claim,
        answer: KeptAnswer | None,
        ttl_ms: int,
    ) -> bool:
        name = self.keys.idempotency(scope.kind, scope.owner, key)
        kept = b"" if answer is None else encode_held(answer)
        args = [encode_held(claim), kept, ttl_ms]
        (settled,) = await self._run([("settle_idempotency", [name], args)])
        return bool(settled)

    @redis_call
    async def spend_enrollment_grant(self, user_id: str, grant_id: str, until_ms: int) -> bool:
        key = self.keys.user(user_id, f"grant:{grant_id}")
        (spent,) = await self._run([("SET", [key], [b"1", "NX", "PXAT", until_ms])])
        return spent is not None

    @redis_call
    async def publish_merchant_key_revoked(self, key_id: str) -> None:
        await self._run([("SADD", [self.keys.revoked_merchant_keys()], [key_id])])

    @redis_call
    async def revoked_merchant_keys(self) -> frozenset[str]:
        (members,) = await self._run([("SMEMBERS", [self.keys.revoked_merchant_keys()], [])])
        return frozenset(as_bytes(m).decode() for m in members)
