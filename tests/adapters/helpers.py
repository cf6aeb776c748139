"""Inputs for the adapter tests: real time, unique users, audit events."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from adapters.ports import CachedEnrollment
from zeropay_proto import (
    DEFAULT_POLICY,
    ChallengeIssued,
    Factor,
    PaymentBinding,
    RiskLevel,
    WrappedKey,
    epoch_ms,
    make_session_id,
    open_session,
)
from zeropay_proto.audit import AuditAction, AuditEvent, new_event_id
from zeropay_proto.passkeys import Passkey, PossessionPolicy

ENROLLED = frozenset({Factor.PIN, Factor.COLOUR, Factor.EMOJI, Factor.FACE})


def new_user() -> str:
    return str(uuid.uuid4())


def event(user: str | None, action: AuditAction = AuditAction.SESSION_INITIATED) -> AuditEvent:
    return AuditEvent(
        event_id=new_event_id(secrets.token_bytes(16)),
        action=action,
        user_id=user,
        client="198.51.100.0/24",
        at_ms=epoch_ms(time.time()),
        details={"test": True},
    )


def new_session(
    user: str,
    *,
    now: float | None = None,
    enrolled: bool = True,
    passkey_ids: tuple[bytes, ...] = (),
) -> ChallengeIssued:
    """A session of 42.00 EUR to shop-1; one that challenges ``passkey_ids`` if given."""
    return open_session(
        session_id=make_session_id(user, secrets.token_bytes(16)),
        user_id=user,
        enrolled=ENROLLED if enrolled else None,
        window=None,
        binding=PaymentBinding(amount=4200, currency="EUR", merchant_id="shop-1"),
        risk=RiskLevel.MEDIUM,
        now=time.time() if now is None else now,
        entropy=secrets.token_bytes(32),
        decoy_key=b"d" * 32,
        possession=PossessionPolicy() if passkey_ids else None,
        passkey_ids=passkey_ids,
        merchant_asks_possession=True,
    )


def lock_event(user: str) -> AuditEvent:
    """The ACCOUNT_LOCKED event a reservation appends if it locks the account."""
    return event(user, AuditAction.ACCOUNT_LOCKED)


def cached_entry(user: str, passkeys: tuple[Passkey, ...] = ()) -> CachedEnrollment:
    """A record cache entry as initiate caches it: a (fake) sealed record and a wrapped key."""
    return CachedEnrollment(
        passkeys=passkeys,
        sealed_record=secrets.token_bytes(180),
        wrapped_key=WrappedKey(
            user_id=user,
            wrapped=secrets.token_bytes(40),
            salt=secrets.token_bytes(16),
            iterations=100_000,
            key_version=2,
            factor_count=4,
        ),
    )


def conclude(
    store: Any,
    session_id: str,
    user: str,
    *,
    attempt: int,
    unwrapped: bool,
    now: float,
    generation: int = 0,
) -> Awaitable[Any]:
    """The store's ``conclude_attempt`` with fresh token entropy and the default policy, for
    an attempt reserved under ``generation``."""
    concluded: Awaitable[Any] = store.conclude_attempt(
        session_id,
        user,
        attempt=attempt,
        key_unwrapped=unwrapped,
        now=now,
        token_entropy=secrets.token_bytes(32),
        policy=DEFAULT_POLICY,
        audit=event(user),
        generation=generation,
    )
    return concluded
