"""Fixed inputs shared by the core's tests: a hand-advanced clock and fixed entropy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from zeropay_proto import (
    ENROLLMENT_ENTROPY_BYTES,
    EnrollmentRequest,
    Factor,
    MasterKeyring,
    PaymentBinding,
    RiskLevel,
    derive_and_wrap,
    make_session_id,
    open_session,
    plan_enrollment,
)
from zeropay_proto.answers import example_answer, factor_digest
from zeropay_proto.enrollment import EnrollmentPlanned
from zeropay_proto.passkeys import PossessionPolicy
from zeropay_proto.session import DEFAULT_POLICY, ChallengeIssued, Policy

#: 2027-01-15T08:00:00Z, well inside a challenge window's first half.
T0 = 1_800_000_000.0
USER = "123e4567-e89b-42d3-a456-426614174000"
OTHER_USER = "00000000-0000-4000-8000-000000000001"
PEPPER = b"p" * 32
DECOY_KEY = b"d" * 32
KEYRING = MasterKeyring(keys={1: b"k" * 32}, current=1)
#: Tests use a cheap derivation; the cost does not change the logic.
ITERATIONS = 10


def entropy(n: int, label: str = "") -> bytes:
    """``n`` deterministic bytes: what the driver's CSPRNG would hand in."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def digest_for(factor: Factor, answer: str = "right", user: str = USER) -> bytes:
    """The client-side digest (:mod:`zeropay_proto.answers`) of the example answer named
    ``answer`` ("right", "wrong", ...)."""
    return factor_digest(user, factor, example_answer(factor, answer))


def answers(user: str, factors: Iterable[str], answer: str = "right") -> dict[str, str]:
    """A request body's ``factors``: each factor's digest of the example answer ``answer``."""
    return {f: digest(user, f, answer) for f in factors}


def digest(user: str, factor: str, answer: str = "right") -> str:
    """One factor's digest, hex, as a request body carries it."""
    return digest_for(Factor(factor), answer, user).hex()


ENROLLED = (Factor.PIN, Factor.COLOUR, Factor.EMOJI, Factor.WORDS, Factor.FACE)


def enroll(
    user: str = USER, factors: tuple[Factor, ...] = ENROLLED
) -> tuple[EnrollmentPlanned, bytes]:
    """Plan an enrollment and run its key wrap inline (the server uses a process pool)."""
    request = EnrollmentRequest(
        user_id=user, factors={f: digest_for(f) for f in factors}, device_id="device-1"
    )
    plan = plan_enrollment(
        request,
        keyring=KEYRING,
        pepper=PEPPER,
        now=T0,
        entropy=entropy(ENROLLMENT_ENTROPY_BYTES, user),
        iterations=ITERATIONS,
    )
    return plan, derive_and_wrap(*plan.wrap.arguments())


def issue(
    *,
    user: str = USER,
    enrolled: frozenset[Factor] | None = frozenset(ENROLLED),
    now: float = T0,
    amount: str | None = "100.00",
    risk: RiskLevel = RiskLevel.MEDIUM,
    label: str = "s",
    policy: Policy = DEFAULT_POLICY,
    possession: PossessionPolicy | None = None,
    passkey_ids: tuple[bytes, ...] = (),
    merchant_asks_possession: bool = False,
) -> ChallengeIssued:
    """Open a session with fixed entropy (passkeys off unless ``possession`` is given)."""
    from decimal import Decimal

    minor = None if amount is None else int(Decimal(amount).scaleb(2))  # of EUR
    return open_session(
        session_id=make_session_id(user, entropy(16, label)),
        user_id=user,
        enrolled=enrolled,
        window=None,
        binding=PaymentBinding(amount=minor, currency="EUR", merchant_id="m-1"),
        risk=risk,
        now=now,
        entropy=entropy(32, "window" + label),
        decoy_key=DECOY_KEY,
        policy=policy,
        possession=possession,
        passkey_ids=passkey_ids,
        merchant_asks_possession=merchant_asks_possession,
    )
