"""ZeroPay's sans-IO core.

Enrollment, challenge selection, verification, lockout, rate limits and replay protection as
pure decisions: inputs in, outputs out. The core performs no I/O, never reads a clock (``now``
is an argument, epoch seconds) and never draws randomness (entropy bytes are arguments). The
server drives it against Redis, PostgreSQL or the in-memory adapters.

Start with :mod:`zeropay_proto.session`: its module docstring explains how a verification
proceeds.
"""

from ._errors import IntegrityError, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._units import epoch_ms
from .challenge import (
    DEFAULT_CHALLENGE_WINDOW_SECONDS,
    ChallengeWindow,
    RiskLevel,
    challenge_size,
    draw_factors,
    select_window,
)
from .crypto import (
    DEFAULT_PBKDF2_ITERATIONS,
    EnrollmentRecord,
    MasterKeyring,
    derive_and_unwrap,
    derive_and_wrap,
    open_record,
    seal_record,
)
from .enrollment import (
    ENROLLMENT_ENTROPY_BYTES,
    EnrollmentPlanned,
    KeyWrapRequested,
    WrappedKey,
    plan_enrollment,
)
from .factors import CATALOGUE, Category, Factor
from .identifiers import make_session_id, parse_session_id, parse_user_id
from .ratelimit import (
    DEFAULT_RATE_LIMIT_GLOBAL,
    DEFAULT_RATE_LIMIT_PER_IP,
    DEFAULT_RATE_LIMIT_PER_USER,
    DEFAULT_RATE_WINDOW_MS,
    FixedWindowState,
    RateLimited,
    RequestAdmitted,
    SlidingWindowState,
    TokenBucketState,
    decide_fixed_window,
    decide_sliding_window,
    decide_token_bucket,
)
from .receipt import PaymentBinding, Receipt, parse_bearer, token_digest
from .replay import NonceAccepted, NonceClaim, NonceReused, check_replay_headers, decide_nonce
from .requests import (
    MAX_BODY_BYTES,
    EnrollmentRequest,
    InitiateRequest,
    VerifyRequest,
    parse_enrollment,
    parse_initiate,
    parse_verify,
)
from .session import (
    DEFAULT_POLICY,
    AccountLocked,
    AttemptReserved,
    ChallengeIssued,
    FactorsMismatched,
    KeyDerivationRequested,
    Lockout,
    Policy,
    Session,
    SessionClosed,
    SessionState,
    SessionStatus,
    VerificationFailed,
    VerificationSucceeded,
    compare_factors,
    conclude_attempt,
    describe_session,
    open_session,
    reserve_attempt,
)

__all__ = [
    "CATALOGUE",
    "DEFAULT_CHALLENGE_WINDOW_SECONDS",
    "DEFAULT_PBKDF2_ITERATIONS",
    "DEFAULT_POLICY",
    "DEFAULT_RATE_LIMIT_GLOBAL",
    "DEFAULT_RATE_LIMIT_PER_IP",
    "DEFAULT_RATE_LIMIT_PER_USER",
    "DEFAULT_RATE_WINDOW_MS",
    "ENROLLMENT_ENTROPY_BYTES",
    "MAX_BODY_BYTES",
    "AccountLocked",
    "AttemptReserved",
    "Category",
    "ChallengeIssued",
    "ChallengeWindow",
    "EnrollmentPlanned",
    "EnrollmentRecord",
    "EnrollmentRequest",
    "Factor",
    "FactorsMismatched",
    "FixedWindowState",
    "InitiateRequest",
    "IntegrityError",
    "KeyDerivationRequested",
    "KeyWrapRequested",
    "LocalProtocolError",
    "Lockout",
    "MasterKeyring",
    "NonceAccepted",
    "NonceClaim",
    "NonceReused",
    "PaymentBinding",
    "Policy",
    "ProtocolError",
    "RateLimited",
    "Receipt",
    "RemoteProtocolError",
    "RequestAdmitted",
    "RiskLevel",
    "Session",
    "SessionClosed",
    "SessionState",
    "SessionStatus",
    "SlidingWindowState",
    "TokenBucketState",
    "VerificationFailed",
    "VerificationSucceeded",
    "VerifyRequest",
    "WrappedKey",
    "challenge_size",
    "check_replay_headers",
    "compare_factors",
    "conclude_attempt",
    "decide_fixed_window",
    "decide_nonce",
    "decide_sliding_window",
    "decide_token_bucket",
    "derive_and_unwrap",
    "derive_and_wrap",
    "describe_session",
    "draw_factors",
    "epoch_ms",
    "make_session_id",
    "open_record",
    "open_session",
    "parse_bearer",
    "parse_enrollment",
    "parse_initiate",
    "parse_session_id",
    "parse_user_id",
    "parse_verify",
    "plan_enrollment",
    "reserve_attempt",
    "seal_record",
    "select_window",
    "token_digest",
]
