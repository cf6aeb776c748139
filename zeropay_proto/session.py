"""Every rule of a verification session, in one place.

Theory of operation
-------------------

A merchant opens a session for a user (:func:`open_session`); the session names the
challenged factors and lives :attr:`Policy.session_ttl_seconds`. The client then submits
digests for those factors. Each submission goes through three steps, because the shared state
lives in Redis and the slow crypto runs in a process pool:

1. :func:`reserve_attempt` -- *before* anything is compared, the attempt is counted against the
   session (3 attempts) and against the user's lockout counter (5 consecutive failures, across
   sessions and instances). The driver persists the returned :class:`AttemptReserved`
   atomically (one Lua script), so N concurrent guesses can never evaluate more than the limit.
   A closed session or a locked account yields a decision instead (:class:`SessionClosed`,
   :class:`AccountLocked`).
2. :func:`compare_factors` -- every challenged verifier is compared in constant time, with no
   early exit and the same work for a decoy or a missing factor. A match yields
   :class:`KeyDerivationRequested`: the driver derives the KEK and unwraps the user's data key
   in its process pool (:func:`zeropay_proto.crypto.derive_and_unwrap`), and feeds the result
   back in step 3. A mismatch yields :class:`FactorsMismatched`.
3. :func:`conclude_attempt` -- on the session as it is stored *now* (another attempt may have
   concluded meanwhile), the outcome becomes :class:`VerificationSucceeded` (a token and a
   receipt; the lockout counter is cleared) or :class:`VerificationFailed` (the session fails
   once its last attempt has failed). A session that is no longer pending accepts nothing:
   :class:`SessionClosed`, so at most one success per session.

The lockout counts a reserved attempt as a failure until it succeeds: the reservation that
reaches :attr:`Policy.lockout_threshold` locks the account at once, for an escalating duration
(:data:`DEFAULT_LOCKOUT_DURATIONS_SECONDS`). A success clears the counter and the escalation.
An expired lock lets a new series of attempts start, one level higher. The whole lockout state
is forgotten :attr:`Policy.lockout_memory_seconds` after it was last touched.

An outage is never a failed attempt. If a dependency fails after step 1 and before step 2
compared anything, the driver gives the reservation back (:func:`release_attempt`): the
failure it counted is removed, a lock it engaged is lifted (one escalation level down), and
the session gets the attempt back if no later attempt was reserved meanwhile. Nothing that
was compared is ever given back, so the 5-failure bound holds for evaluated attempts.

A session may also challenge the user's passkey, the possession factor
(:mod:`zeropay_proto.passkeys`): :func:`open_session` decides whether (the user has one and
the payment needs it), and keeps the credential ids it allows. Each attempt then signs its own
challenge, the hash of the session's :meth:`Session.linked_data` (amount, currency, payee,
attempt), and an attempt is proven only if the factors matched *and* the assertion verified
(:func:`attempt_proven`): a failed assertion is one more failed attempt, as a wrong answer is.

A token never outlives what it proved. Every change of a user's enrollment (its factors or
its passkeys) moves the user's *generation* on, before the change and again after it, and
never back. Step 1's driver reads the generation with the reservation; step 3 is told the
generation it read and the one stored now: an attempt reserved before a change proves nothing
after it, so it concludes as a failure, the generic one (an answer that was right for the old
factors is wrong for the new, and saying otherwise would tell a guesser it was right). A token
carries its generation, and is valid only while that is the current one (:func:`token_valid`).

An unknown user gets a *decoy* session: challenges drawn, window by window, from a stable
pseudo-enrollment (:func:`~zeropay_proto.challenge.decoy_enrollment`), so they overlap across
windows as a real user's do; the same reservations against the same lockout counter, the same
comparison work, the same failure output. It can never succeed, and nothing a client sees
tells it apart. No output names the factor that was wrong.

Session states move only along :data:`TRANSITIONS`; a pair missing from it is a
:class:`~zeropay_proto.LocalProtocolError`. Time is ``now`` in epoch seconds, handed in by
the driver; stored instants are whole milliseconds (:func:`epoch_ms`) so that the Lua scripts
that persist these decisions compute exactly the same values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ._errors import LocalProtocolError
from ._units import epoch_ms
from .challenge import (
    DEFAULT_CHALLENGE_WINDOW_SECONDS,
    ChallengeWindow,
    RiskLevel,
    challenge_size,
    decoy_enrollment,
    decoy_entropy,
    select_window,
    window_index,
)
from .crypto import EnrollmentRecord, compute_verifier, verifiers_equal
from .factors import DIGEST_BYTES, Factor
from .passkeys import (
    LinkedData,
    Possession,
    PossessionPolicy,
    PossessionProven,
    decoy_credential_ids,
    requires_possession,
)
from .receipt import (
    AUTH_TOKEN_BYTES,
    DEFAULT_AUTH_TOKEN_TTL_SECONDS,
    PaymentBinding,
    Receipt,
    encode_token,
    token_digest,
)
from .returns import ReturnUrls

#: Session lifetime, the seed's ``REDIS_SESSION_TTL`` (300 s; SPEC section 4).
DEFAULT_SESSION_TTL_SECONDS = 300
#: Attempts per session (SPEC section 4).
DEFAULT_MAX_ATTEMPTS = 3
#: Consecutive failures, per user, that lock the account (SPEC section 4; NIST SP 800-63B
#: section 5.2.2 caps the limit at 100, PSD2 RTS article 4(3)(b) at 5).
DEFAULT_LOCKOUT_THRESHOLD = 5
#: Escalating lock durations: 15 min, 1 h, 4 h, then 24 h for every further lock.
DEFAULT_LOCKOUT_DURATIONS_SECONDS: tuple[int, ...] = (15 * 60, 60 * 60, 4 * 60 * 60, 24 * 60 * 60)
#: A lockout state untouched for a day is forgotten, escalation included.
DEFAULT_LOCKOUT_MEMORY_SECONDS = 24 * 60 * 60

#: Changing or deleting an enrollment needs a token whose verification challenged at least
#: this many factors (the full-strength challenge, SPEC section 4) ...
DEFAULT_STEP_UP_FACTORS = 3
#: ... issued within this many seconds (NIST SP 800-63B section 4.2.3: reauthenticate before
#: a sensitive change; a low-risk 2-factor token proves less than the factors it replaces).
DEFAULT_STEP_UP_SECONDS = 5 * 60

_ZERO_DIGEST = bytes(DIGEST_BYTES)
_DUMMY_PEPPER = b"zeropay/decoy-comparison"


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The tunable numbers of a session; defaults are the cited ``DEFAULT_*`` constants."""

    session_ttl_seconds: int = DEFAULT_SESSION_TTL_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    challenge_window_seconds: int = DEFAULT_CHALLENGE_WINDOW_SECONDS
    lockout_threshold: int = DEFAULT_LOCKOUT_THRESHOLD
    lockout_durations_seconds: tuple[int, ...] = DEFAULT_LOCKOUT_DURATIONS_SECONDS
    lockout_memory_seconds: int = DEFAULT_LOCKOUT_MEMORY_SECONDS
    token_ttl_seconds: int = DEFAULT_AUTH_TOKEN_TTL_SECONDS
    step_up_factors: int = DEFAULT_STEP_UP_FACTORS
    step_up_seconds: int = DEFAULT_STEP_UP_SECONDS

    def __post_init__(self) -> None:
        positive = (
            self.session_ttl_seconds,
            self.max_attempts,
            self.challenge_window_seconds,
            self.lockout_threshold,
            self.lockout_memory_seconds,
            self.token_ttl_seconds,
            self.step_up_factors,
            self.step_up_seconds,
        )
        if min(positive) < 1 or not self.lockout_durations_seconds:
            raise LocalProtocolError("policy numbers must be positive")
        if min(self.lockout_durations_seconds) < 1:
            raise LocalProtocolError("lock durations must be positive")

    def lock_duration_ms(self, level: int) -> int:
        """Duration of the ``level``-th lock (0-based); the last duration repeats."""
        durations = self.lockout_durations_seconds
        return 1000 * durations[min(level, len(durations) - 1)]


DEFAULT_POLICY = Policy()


class SessionState(enum.Enum):
    """Where a session is. Every state but PENDING is terminal."""

    PENDING = "pending"
    VERIFIED = "verified"
    FAILED = "failed"
    EXPIRED = "expired"


class SessionInput(enum.Enum):
    """What can happen to a session."""

    #: An attempt was admitted and counted before any comparison.
    RESERVE_ATTEMPT = "reserve_attempt"
    #: An attempt failed and attempts remain.
    REJECT_ATTEMPT = "reject_attempt"
    #: The session's last attempt failed.
    REJECT_LAST_ATTEMPT = "reject_last_attempt"
    #: An attempt matched and the data key unwrapped.
    ACCEPT_ATTEMPT = "accept_attempt"
    #: The lifetime ran out.
    TIME_OUT = "time_out"


_S = SessionState
_I = SessionInput
#: ``(state, input) -> new state``. Terminal states have no entries: they accept nothing.
TRANSITIONS: Mapping[tuple[SessionState, SessionInput], SessionState] = MappingProxyType(
    {
        (_S.PENDING, _I.RESERVE_ATTEMPT): _S.PENDING,
        (_S.PENDING, _I.REJECT_ATTEMPT): _S.PENDING,
        (_S.PENDING, _I.REJECT_LAST_ATTEMPT): _S.FAILED,
        (_S.PENDING, _I.ACCEPT_ATTEMPT): _S.VERIFIED,
        (_S.PENDING, _I.TIME_OUT): _S.EXPIRED,
    }
)


def transition(state: SessionState, event: SessionInput) -> SessionState:
    """Look up a transition; a missing one is the caller's protocol error."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"no transition from {state.name} on {event.name}") from None


@dataclass(frozen=True, kw_only=True)
class Session:
    """The stored state of one verification session."""

    session_id: str
    user_id: str
    challenged: tuple[Factor, ...]
    expires_at_ms: int
    binding: PaymentBinding = field(default_factory=PaymentBinding)
    state: SessionState = SessionState.PENDING
    attempts_used: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    decoy: bool = False
    #: The passkeys an assertion may come from; empty: the session challenges knowledge only.
    passkey_ids: tuple[bytes, ...] = ()
    #: Where the payer's page sends the payer once the session is decided, or given up.
    return_to: ReturnUrls = field(default_factory=ReturnUrls)

    def __post_init__(self) -> None:
        if not self.challenged or len(set(self.challenged)) != len(self.challenged):
            raise LocalProtocolError("a session challenges distinct factors")
        if len(set(self.passkey_ids)) != len(self.passkey_ids):
            raise LocalProtocolError("a session allows distinct passkeys")
        if not 0 <= self.attempts_used <= self.max_attempts:
            raise LocalProtocolError("attempts_used out of range")

    def state_at(self, now_ms: int) -> SessionState:
        """The state as a reader sees it at ``now_ms``: a pending session past its lifetime
        has expired whether or not anyone stored that."""
        if self.state is SessionState.PENDING and now_ms >= self.expires_at_ms:
            return transition(self.state, SessionInput.TIME_OUT)
        return self.state

    @property
    def attempts_remaining(self) -> int:
        """Attempts not yet reserved."""
        return self.max_attempts - self.attempts_used

    @property
    def challenges_possession(self) -> bool:
        """Whether an attempt needs a passkey assertion too."""
        return bool(self.passkey_ids)

    def linked_data(self, attempt: int) -> LinkedData:
        """What attempt number ``attempt``'s passkey signs: this payment, for that attempt."""
        return LinkedData(
            session_id=self.session_id,
            amount=self.binding.amount,
            currency=self.binding.currency,
            payee=self.binding.merchant_id,
            attempt=attempt,
        )


@dataclass(frozen=True, kw_only=True)
class Lockout:
    """One user's lockout counter; the default value is "never failed"."""

    failures: int = 0
    level: int = 0
    locked_until_ms: int = 0
    updated_ms: int = 0

    def forget_at_ms(self, policy: Policy = DEFAULT_POLICY) -> int:
        """When the driver may drop this state (its storage expiry)."""
        return max(self.locked_until_ms, self.updated_ms) + 1000 * policy.lockout_memory_seconds

    def current(self, now_ms: int, policy: Policy = DEFAULT_POLICY) -> Lockout:
        """The state as it stands at ``now_ms``: forgotten after its memory, and with the
        failure count restarted once a lock has run out."""
        if now_ms >= self.forget_at_ms(policy):
            return Lockout()
        if self.failures >= policy.lockout_threshold and now_ms >= self.locked_until_ms:
            return replace(self, failures=0)
        return self

    def is_locked(self, now_ms: int) -> bool:
        """Whether attempts are refused at ``now_ms``."""
        return now_ms < self.locked_until_ms


# ---------------------------------------------------------------------------------------------
# Outputs: facts the driver carries out.


@dataclass(frozen=True, kw_only=True)
class ChallengeIssued:
    """A session was opened. Store ``session``; store ``window`` when ``window_opened``."""

    session: Session
    window: ChallengeWindow | None
    window_opened: bool


@dataclass(frozen=True, kw_only=True)
class SessionClosed:
    """The session accepts nothing: verified, failed, expired, or every attempt in use."""

    state: SessionState


@dataclass(frozen=True, kw_only=True)
class AccountLocked:
    """The user is locked out; nothing was counted or compared."""

    locked_until_ms: int
    retry_after_ms: int


@dataclass(frozen=True, kw_only=True)
class AttemptReserved:
    """Persist ``session`` and ``lockout`` atomically, then compare. ``attempt`` is 1-based."""

    session: Session
    lockout: Lockout
    attempt: int

    @property
    def locked_account(self) -> bool:
        """Whether this reservation locked the account (a reservation is refused while the
        account is locked, so a lock in its result is the one it engaged)."""
        return self.lockout.locked_until_ms > self.lockout.updated_ms


@dataclass(frozen=True, kw_only=True)
class AttemptReleased:
    """A reservation given back after an outage: persist ``lockout``, and ``session`` when it
    is not ``None`` (``None``: the session keeps its count, because it is gone, no longer
    pending, or a later attempt was reserved after this one)."""

    session: Session | None
    lockout: Lockout


@dataclass(frozen=True, kw_only=True)
class KeyDerivationRequested:
    """Every challenged verifier matched: derive the KEK from ``material`` and unwrap."""

    material: bytes


@dataclass(frozen=True, kw_only=True)
class FactorsMismatched:
    """At least one challenged factor was wrong (which one is never said)."""


@dataclass(frozen=True, kw_only=True)
class IssuedToken:
    """A bearer token drawn at ``issued_at_ms``: the client gets ``auth_token``; the store
    keeps only ``digest``, until ``expires_at_ms``."""

    auth_token: str
    digest: bytes
    issued_at_ms: int
    expires_at_ms: int


def issue_token(
    user_id: str, token_entropy: bytes, *, now: float, policy: Policy = DEFAULT_POLICY
) -> IssuedToken:
    """The token a successful verification issues, from 32 bytes of the caller's entropy."""
    if len(token_entropy) != AUTH_TOKEN_BYTES:
        raise LocalProtocolError("a token needs 32 bytes of entropy")
    token = encode_token(user_id, token_entropy)
    now_ms = epoch_ms(now)
    return IssuedToken(
        auth_token=token,
        digest=token_digest(token),
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + 1000 * policy.token_ttl_seconds,
    )


@dataclass(frozen=True, kw_only=True)
class VerificationSucceeded:
    """Store ``session`` (only if still pending), clear the lockout, store ``token_digest``
    until ``token_expires_at_ms``, sign ``receipt``, and give ``auth_token`` to the client."""

    session: Session
    lockout: Lockout
    auth_token: str
    token_digest: bytes
    token_expires_at_ms: int
    receipt: Receipt

    @property
    def factors_proven(self) -> int:
        """How many factors the token's verification challenged (its strength)."""
        return len(self.session.challenged)


@dataclass(frozen=True, kw_only=True)
class VerificationFailed:
    """Store ``session`` (only if still pending) and answer the one generic failure."""

    session: Session
    attempts_remaining: int


#: How long a user's generation is kept after its last change (one day), and at least as
#: long as any token issued under it: forgetting it sooner could let a token of an older
#: generation match a counter that restarted from zero.
GENERATION_KEPT_MS = 86_400_000


def token_valid(token_generation: int, current_generation: int) -> bool:
    """Whether a token (or a reserved attempt) still proves the user's enrollment: it was
    issued under ``token_generation``, and holds only while that is the current generation.
    Generations only move on (each change of the factors or passkeys), so once a change is
    made no token from before it is valid again."""
    return token_generation == current_generation


@dataclass(frozen=True, kw_only=True)
class SessionStatus:
    """What ``GET /v1/verification/status`` reports."""

    state: SessionState
    attempts_used: int
    attempts_remaining: int
    expires_in_ms: int


# ---------------------------------------------------------------------------------------------
# Decisions.


def open_session(
    *,
    session_id: str,
    user_id: str,
    enrolled: frozenset[Factor] | None,
    window: ChallengeWindow | None,
    binding: PaymentBinding,
    risk: RiskLevel,
    now: float,
    entropy: bytes,
    decoy_key: bytes,
    policy: Policy = DEFAULT_POLICY,
    possession: PossessionPolicy | None = None,
    passkey_ids: tuple[bytes, ...] = (),
    merchant_asks_possession: bool = False,
    return_to: ReturnUrls | None = None,
) -> ChallengeIssued:
    """Open a session for ``user_id``; ``enrolled`` is ``None`` for an unknown user.

    ``window`` is the user's stored challenge window, if any. ``entropy`` is 32 CSPRNG bytes
    (used only when a new window is drawn); ``decoy_key`` seeds decoy draws.

    ``possession`` ``None``: passkeys are off here. Otherwise the session also challenges the
    user's passkeys (``passkey_ids``; an unknown user's are decoys) when
    :func:`~zeropay_proto.passkeys.requires_possession` says so.
    """
    size = challenge_size(binding.major_amount, risk)
    expires_at_ms = epoch_ms(now) + 1000 * policy.session_ttl_seconds
    decoy = enrolled is None
    if enrolled is None:
        # A decoy: the user's stable pseudo-enrollment, and a draw keyed by the window, so
        # it is stable within a window even if the stored window is lost.
        enrolled = decoy_enrollment(decoy_key, user_id)
        index = window_index(now, policy.challenge_window_seconds)
        entropy = decoy_entropy(decoy_key, user_id, index)
    stored, opened = select_window(
        current=window,
        enrolled=enrolled,
        now=now,
        entropy=entropy,
        window_seconds=policy.challenge_window_seconds,
    )
    chosen = stored.factors[:size]
    allowed: tuple[bytes, ...] = ()
    if possession is not None:
        if decoy:
            passkey_ids = decoy_credential_ids(decoy_key, user_id, percent=possession.decoy_percent)
        needed = requires_possession(
            has_passkey=bool(passkey_ids),
            amount=binding.major_amount,
            high_risk=risk is RiskLevel.HIGH,
            merchant_asks=merchant_asks_possession,
            threshold=possession.threshold,
        )
        allowed = passkey_ids if needed else ()
    session = Session(
        session_id=session_id,
        user_id=user_id,
        challenged=chosen,
        expires_at_ms=expires_at_ms,
        binding=binding,
        max_attempts=policy.max_attempts,
        decoy=decoy,
        passkey_ids=allowed,
        return_to=return_to or ReturnUrls(),
    )
    return ChallengeIssued(session=session, window=stored, window_opened=opened)


def reserve_attempt(
    session: Session, lockout: Lockout, *, now: float, policy: Policy = DEFAULT_POLICY
) -> SessionClosed | AccountLocked | AttemptReserved:
    """Step 1: admit and count an attempt before any comparison, or refuse it."""
    now_ms = epoch_ms(now)
    state = session.state_at(now_ms)
    if state is not SessionState.PENDING or session.attempts_remaining == 0:
        return SessionClosed(state=state)
    lock = lockout.current(now_ms, policy)
    if lock.is_locked(now_ms):
        return AccountLocked(
            locked_until_ms=lock.locked_until_ms, retry_after_ms=lock.locked_until_ms - now_ms
        )
    failures = lock.failures + 1
    if failures >= policy.lockout_threshold:
        lock = replace(
            lock,
            locked_until_ms=now_ms + policy.lock_duration_ms(lock.level),
            level=lock.level + 1,
        )
    attempt = session.attempts_used + 1
    return AttemptReserved(
        session=replace(
            session,
            state=transition(session.state, SessionInput.RESERVE_ATTEMPT),
            attempts_used=attempt,
        ),
        lockout=replace(lock, failures=failures, updated_ms=now_ms),
        attempt=attempt,
    )


def release_attempt(
    session: Session | None,
    lockout: Lockout,
    *,
    attempt: int,
    now: float,
    policy: Policy = DEFAULT_POLICY,
) -> AttemptReleased:
    """Give back reservation number ``attempt`` that was never evaluated: a dependency failed
    before any comparison (an outage is never a failed attempt).

    The lockout loses the failure this reservation counted; if the account is locked and
    the failures now fall below the threshold, the lock this series earned no longer stands
    and is lifted, one escalation level down. A success or an expired lock since then has
    already reset the count: there is nothing to give back. The session gets the attempt
    back only while it is pending and this was its latest reservation.
    """
    now_ms = epoch_ms(now)
    current = lockout.current(now_ms, policy)
    released = current
    if current.failures > 0:
        failures = current.failures - 1
        lifted = current.is_locked(now_ms) and failures < policy.lockout_threshold
        released = replace(
            current,
            failures=failures,
            level=current.level - 1 if lifted else current.level,
            locked_until_ms=0 if lifted else current.locked_until_ms,
            updated_ms=now_ms,
        )
    returned = None
    if (
        session is not None
        and session.state_at(now_ms) is SessionState.PENDING
        and session.attempts_used == attempt
    ):
        returned = replace(session, attempts_used=attempt - 1)
    return AttemptReleased(session=returned, lockout=released)


def compare_factors(
    reserved: AttemptReserved,
    *,
    record: EnrollmentRecord | None,
    presented: Mapping[Factor, bytes],
    pepper: bytes,
) -> KeyDerivationRequested | FactorsMismatched:
    """Step 2: compare every challenged verifier in constant time, with no early exit.

    ``presented`` maps factor to the client's digest. Missing factors, a decoy session or a
    missing record do the same work against a dummy and can only mismatch.
    """
    session = reserved.session
    usable = record is not None and record.user_id == session.user_id and not session.decoy
    matched = usable
    for factor in session.challenged:
        digest = presented.get(factor, _ZERO_DIGEST)
        if len(digest) != DIGEST_BYTES:
            raise LocalProtocolError("presented digests are 32 bytes")
        expected = record.verifiers.get(factor) if record is not None else None
        # A verifier that cannot match is always computed and used when there is nothing to
        # compare with, so the work done does not depend on why an attempt is going to fail.
        dummy = compute_verifier(_DUMMY_PEPPER, session.user_id, factor, digest)
        reference = dummy if expected is None else expected
        ok = verifiers_equal(reference, compute_verifier(pepper, session.user_id, factor, digest))
        matched = matched & ok & (expected is not None) & (factor in presented)
    if matched and record is not None:
        return KeyDerivationRequested(material=record.kek_material())
    return FactorsMismatched()


def attempt_proven(session: Session, *, key_unwrapped: bool, possession: Possession | None) -> bool:
    """Whether an attempt proved what its session challenges: the factors matched and the data
    key unwrapped, and, if the session challenges a passkey, the assertion proved possession
    (``possession`` ``None``: none was checked). This is conclusion's ``key_unwrapped``."""
    if not session.challenges_possession:
        return key_unwrapped
    return key_unwrapped and isinstance(possession, PossessionProven)


def conclude_attempt(
    stored: Session,
    *,
    attempt: int,
    key_unwrapped: bool,
    now: float,
    token_entropy: bytes,
    policy: Policy = DEFAULT_POLICY,
    reserved_generation: int = 0,
    current_generation: int = 0,
) -> VerificationSucceeded | VerificationFailed | SessionClosed:
    """Step 3: settle attempt number ``attempt`` on the session as stored *now*.

    ``key_unwrapped`` is true only when the attempt proved everything the session challenges
    (:func:`attempt_proven`), and it proves something only of the enrollment it was reserved
    under: if the user's generation moved on since (``reserved_generation`` is no longer
    ``current_generation``), the factors or passkeys it proved are gone, and the attempt is a
    failure like any other. A receipt of a session that challenged a passkey names the
    challenge it signed. The driver persists the result only if the stored session is still
    pending (compare-and-set), which makes a second success impossible.
    """
    token = issue_token(stored.user_id, token_entropy, now=now, policy=policy)
    if not 1 <= attempt <= stored.attempts_used:
        raise LocalProtocolError("concluding an attempt that was never reserved")
    if stored.state is not SessionState.PENDING:
        return SessionClosed(state=stored.state)
    if key_unwrapped and token_valid(reserved_generation, current_generation):
        receipt = Receipt(
            session_id=stored.session_id,
            user_id=stored.user_id,
            binding=stored.binding,
            issued_at_ms=token.issued_at_ms,
            linked_challenge=stored.linked_data(attempt).challenge()
            if stored.challenges_possession
            else None,
        )
        return VerificationSucceeded(
            session=replace(stored, state=transition(stored.state, SessionInput.ACCEPT_ATTEMPT)),
            lockout=Lockout(),
            auth_token=token.auth_token,
            token_digest=token.digest,
            token_expires_at_ms=token.expires_at_ms,
            receipt=receipt,
        )
    event = (
        SessionInput.REJECT_LAST_ATTEMPT
        if attempt >= stored.max_attempts
        else SessionInput.REJECT_ATTEMPT
    )
    failed = replace(stored, state=transition(stored.state, event))
    remaining = 0 if failed.state is SessionState.FAILED else failed.attempts_remaining
    return VerificationFailed(session=failed, attempts_remaining=remaining)


def authorizes_enrollment_change(
    *, factors_proven: int, issued_at_ms: int, now: float, policy: Policy = DEFAULT_POLICY
) -> bool:
    """Whether a token may replace or delete its user's enrollment: its verification
    challenged at least :attr:`Policy.step_up_factors` factors and was issued within
    :attr:`Policy.step_up_seconds`. A token never proves more than the factors it verified."""
    age_ms = epoch_ms(now) - issued_at_ms
    return factors_proven >= policy.step_up_factors and age_ms <= 1000 * policy.step_up_seconds


def describe_session(session: Session, *, now: float) -> SessionStatus:
    """The status report of a session at ``now``."""
    now_ms = epoch_ms(now)
    state = session.state_at(now_ms)
    return SessionStatus(
        state=state,
        attempts_used=session.attempts_used,
        attempts_remaining=session.attempts_remaining if state is SessionState.PENDING else 0,
        expires_in_ms=max(0, session.expires_at_ms - now_ms),
    )
