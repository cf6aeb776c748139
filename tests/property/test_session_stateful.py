"""A driver-shaped model of many sessions, users and interleaved attempts.

Hypothesis's ``RuleBasedStateMachine`` plays a driver that stores what the core returns (the
way the Redis adapter will) and interleaves attempts: an attempt is reserved and compared in
one rule and concluded in another, so several attempts of one user or one session can be in
flight at once, as concurrent requests are. Checked at every step:

- never more than 5 attempts evaluated per lock window (between two successes or lock lapses);
- nothing is admitted while the account is locked;
- at most one success per session;
- nothing is admitted by a terminal (verified, failed or expired) session;
- outages lock nobody: reservations that met an outage (a dependency failed before any
  comparison) are released, and a user with nothing but released outages since the last
  success has no failure counted;
- a session that challenges a passkey verifies only by an attempt whose assertion proved
  possession, and its receipt names both categories and that attempt's linked challenge;
- tokens never outlive what they prove: enrollment changes (update, delete, a passkey added
  or deleted) race the attempts in flight, an attempt reserved before a change never issues a
  token after it, and no token issued before a change is valid after it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.helpers import DECOY_KEY, PEPPER, T0, digest_for, enroll, entropy
from zeropay_proto import (
    AccountLocked,
    AttemptReserved,
    ChallengeWindow,
    EnrollmentRecord,
    KeyDerivationRequested,
    Lockout,
    PaymentBinding,
    RiskLevel,
    Session,
    SessionClosed,
    SessionState,
    VerificationFailed,
    VerificationSucceeded,
    WrappedKey,
    attempt_proven,
    compare_factors,
    conclude_attempt,
    derive_and_unwrap,
    epoch_ms,
    make_session_id,
    open_session,
    release_attempt,
    reserve_attempt,
    token_valid,
)
from zeropay_proto.passkeys import PossessionPolicy, PossessionProven, PossessionRefused
from zeropay_proto.session import DEFAULT_LOCKOUT_THRESHOLD

USERS = (
    "123e4567-e89b-42d3-a456-426614174000",
    "00000000-0000-4000-8000-000000000002",
    "00000000-0000-4000-8000-000000000003",  # never enrolled: decoy sessions
)
ENROLLABLE = USERS[:2]
PLANS = {user: enroll(user=user) for user in ENROLLABLE}


@dataclass
class InFlight:
    session_id: str
    user: str
    attempt: int
    unwrapped: bool
    possession_proven: bool = False
    #: The user's generation read with the reservation.
    generation: int = 0


class VerificationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.records: dict[str, tuple[EnrollmentRecord, WrappedKey]] = {}
        self.sessions: dict[str, Session] = {}
        self.windows: dict[str, ChallengeWindow] = {}
        self.lockouts: dict[str, Lockout] = {}
        self.in_flight: list[InFlight] = []
        self.successes: Counter[str] = Counter()
        self.counter = 0
        # Per user: attempts evaluated since the last success or lock lapse, and the lock.
        self.series: Counter[str] = Counter()
        self.lock_until_ms: dict[str, int] = {}
        # Reservations that met an outage and are not yet released, and per user how many.
        self.outages: list[InFlight] = []
        self.steps = 0
        self.with_passkey: set[str] = set()
        # The driver's generation per user, and the tokens issued: (user, generation).
        self.generation: Counter[str] = Counter()
        self.tokens: list[tuple[str, int]] = []

    def _lockout(self, user: str) -> Lockout:
        return self.lockouts.get(user, Lockout())

    def _lapse_locks(self) -> None:
        now_ms = epoch_ms(self.now)
        for user, until in list(self.lock_until_ms.items()):
            if now_ms >= until:
                del self.lock_until_ms[user]
                self.series[user] = 0

    @initialize()
    def start(self) -> None:
        self.steps = 0

    def _enrollment_changed(self, user: str) -> None:
        """What every change of an enrollment or its passkeys does first: the generation
        moves on (the driver's invalidate, then its revoke, each move it)."""
        self.generation[user] += 1

    @rule(user=st.sampled_from(ENROLLABLE))
    def enroll_user(self, user: str) -> None:
        """Enroll, or update an enrollment (the factors the attempts in flight compared
        against are replaced)."""
        self._enrollment_changed(user)
        plan, wrapped = PLANS[user]
        self.records[user] = (plan.record, plan.wrapped_key(wrapped))
        self.windows.pop(user, None)

    @precondition(lambda self: bool(self.records))
    @rule(data=st.data())
    def delete_enrollment(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.records)))
        self._enrollment_changed(user)
        del self.records[user]
        self.with_passkey.discard(user)

    @rule(user=st.sampled_from(ENROLLABLE))
    def register_passkey(self, user: str) -> None:
        self._enrollment_changed(user)
        self.with_passkey.add(user)

    @precondition(lambda self: bool(self.with_passkey))
    @rule(data=st.data())
    def delete_passkey(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.with_passkey)))
        self._enrollment_changed(user)
        self.with_passkey.discard(user)

    @rule(
        user=st.sampled_from(USERS),
        risk=st.sampled_from(RiskLevel),
        amount=st.sampled_from([None, 500, 10000]),
        merchant_asks=st.booleans(),
    )
    def initiate(
        self, user: str, risk: RiskLevel, amount: int | None, merchant_asks: bool = False
    ) -> None:
        self.counter += 1
        record = self.records.get(user)
        passkey_ids = (b"key-" + user.encode(),) if user in self.with_passkey else ()
        out = open_session(
            session_id=make_session_id(user, entropy(16, f"sid{self.counter}")),
            user_id=user,
            enrolled=None if record is None else record[0].factors,
            window=self.windows.get(user),
            binding=PaymentBinding(amount=amount, currency="EUR"),
            risk=risk,
            now=self.now,
            entropy=entropy(32, f"draw{self.counter}"),
            decoy_key=DECOY_KEY,
            possession=PossessionPolicy(),
            passkey_ids=passkey_ids,
            merchant_asks_possession=merchant_asks,
        )
        if out.session.challenges_possession:
            event("session challenges a passkey")
        if out.window_opened:
            assert out.window is not None
            self.windows[user] = out.window
        assert out.session.decoy is (record is None)
        self.sessions[out.session.session_id] = out.session

    @precondition(lambda self: bool(self.sessions))
    @rule(data=st.data(), right=st.booleans(), signed=st.booleans())
    def start_attempt(self, data: st.DataObject, right: bool, signed: bool) -> None:
        session_id = data.draw(st.sampled_from(sorted(self.sessions)))
        self._attempt(session_id, right=right, signed=signed)

    @rule(user=st.sampled_from(USERS), guesses=st.integers(min_value=1, max_value=3))
    def burst_of_wrong_guesses(self, user: str, guesses: int) -> None:
        """An attacker opens a session and fires guesses concurrently (all in flight)."""
        self.initiate(user, RiskLevel.HIGH, None)
        session_id = max(self.sessions, key=lambda k: self.sessions[k].expires_at_ms)
        for _ in range(guesses):
            self._attempt(session_id, right=False)

    def _attempt(self, session_id: str, *, right: bool, signed: bool = False) -> None:
        self._lapse_locks()
        session = self.sessions[session_id]
        user = session.user_id
        now_ms = epoch_ms(self.now)
        out = reserve_attempt(session, self._lockout(user), now=self.now)
        if session.state_at(now_ms) is not SessionState.PENDING:
            assert out == SessionClosed(state=session.state_at(now_ms))
            return
        if user in self.lock_until_ms and not isinstance(out, SessionClosed):
            assert isinstance(out, AccountLocked), "admitted while locked"
            event("attempt refused: account locked")
            return
        if not isinstance(out, AttemptReserved):
            assert isinstance(out, SessionClosed | AccountLocked)
            return
        self.sessions[session_id] = out.session
        self.lockouts[user] = out.lockout
        self.series[user] += 1
        assert self.series[user] <= DEFAULT_LOCKOUT_THRESHOLD, "too many attempts evaluated"
        assert out.locked_account == out.lockout.is_locked(now_ms)
        if out.lockout.is_locked(now_ms):
            event("lock engaged")
            self.lock_until_ms[user] = out.lockout.locked_until_ms
        answer = "right" if right else "wrong"
        presented = {f: digest_for(f, answer) for f in session.challenged}
        stored = self.records.get(user)
        record = None if stored is None else stored[0]
        compared = compare_factors(out, record=record, presented=presented, pepper=PEPPER)
        unwrapped = False
        if isinstance(compared, KeyDerivationRequested):
            assert right
            assert stored is not None
            assert not session.decoy
            row = stored[1]
            unwrapped = derive_and_unwrap(
                compared.material, row.salt, row.iterations, row.wrapped, user
            )
            assert unwrapped
        # The user's device signs this attempt's linked data; a decoy's passkeys sign nothing.
        possession: PossessionProven | PossessionRefused | None = None
        if session.challenges_possession:
            if signed and not session.decoy:
                possession = PossessionProven(credential_id=session.passkey_ids[0], sign_count=1)
            else:
                possession = PossessionRefused(reason="not signed")
        proven = attempt_proven(out.session, key_unwrapped=unwrapped, possession=possession)
        flight = InFlight(
            session_id,
            user,
            out.attempt,
            proven,
            possession is not None and signed,
            generation=self.generation[user],
        )
        self.in_flight.append(flight)

    @precondition(lambda self: bool(self.sessions))
    @rule(data=st.data())
    def attempt_meets_an_outage(self, data: st.DataObject) -> None:
        """Reserved, then a dependency fails before anything is compared."""
        self._lapse_locks()
        session_id = data.draw(st.sampled_from(sorted(self.sessions)))
        session = self.sessions[session_id]
        out = reserve_attempt(session, self._lockout(session.user_id), now=self.now)
        if not isinstance(out, AttemptReserved):
            return
        self.sessions[session_id] = out.session
        self.lockouts[session.user_id] = out.lockout
        if out.lockout.is_locked(epoch_ms(self.now)):
            self.lock_until_ms[session.user_id] = out.lockout.locked_until_ms
        self.outages.append(InFlight(session_id, session.user_id, out.attempt, False))

    @precondition(lambda self: bool(self.outages))
    @rule(data=st.data())
    def release_after_outage(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.outages) - 1))
        flight = self.outages.pop(index)
        self._lapse_locks()
        out = release_attempt(
            self.sessions.get(flight.session_id),
            self._lockout(flight.user),
            attempt=flight.attempt,
            now=self.now,
        )
        if out.session is not None:
            event("outage: session attempt given back")
            self.sessions[flight.session_id] = out.session
        self.lockouts[flight.user] = out.lockout
        if not out.lockout.is_locked(epoch_ms(self.now)) and flight.user in self.lock_until_ms:
            event("outage: lock lifted")
            del self.lock_until_ms[flight.user]

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def finish_attempt(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.in_flight) - 1))
        flight = self.in_flight.pop(index)
        stored = self.sessions[flight.session_id]
        self.counter += 1
        out = conclude_attempt(
            stored,
            attempt=flight.attempt,
            key_unwrapped=flight.unwrapped,
            now=self.now,
            token_entropy=entropy(32, f"token{self.counter}"),
            reserved_generation=flight.generation,
            current_generation=self.generation[flight.user],
        )
        if stored.state is not SessionState.PENDING:
            assert out == SessionClosed(state=stored.state)
            event("late attempt refused: session already concluded")
            return
        stale = flight.generation != self.generation[flight.user]
        if stale and flight.unwrapped:
            event("a proof raced an enrollment change")
        if isinstance(out, VerificationSucceeded):
            assert not stale, "a token issued for an enrollment that changed"
            self.tokens.append((flight.user, self.generation[flight.user]))
            event("session verified")
            if stored.challenges_possession:
                event("session verified with a passkey")
                assert flight.possession_proven, "verified without the challenged passkey"
                assert out.receipt.sca == ("knowledge", "possession")
                linked = stored.linked_data(flight.attempt).challenge()
                assert out.receipt.linked_challenge == linked
            else:
                assert out.receipt.sca == ("knowledge",)
            self.successes[flight.session_id] += 1
            self.sessions[flight.session_id] = out.session
            self.lockouts[flight.user] = out.lockout
            self.series[flight.user] = 0
            self.lock_until_ms.pop(flight.user, None)
        else:
            assert isinstance(out, VerificationFailed)
            self.sessions[flight.session_id] = out.session

    @precondition(
        lambda self: any(s.state is not SessionState.PENDING for s in self.sessions.values())
    )
    @rule(data=st.data())
    def replay_concluded_session(self, data: st.DataObject) -> None:
        done = sorted(k for k, s in self.sessions.items() if s.state is not SessionState.PENDING)
        session = self.sessions[data.draw(st.sampled_from(done))]
        out = reserve_attempt(session, self._lockout(session.user_id), now=self.now)
        assert out == SessionClosed(state=session.state)

    @rule(seconds=st.sampled_from([0.001, 1, 59, 299, 301, 900, 3600]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: bool(self.lock_until_ms))
    @rule(data=st.data())
    def wait_for_lock_expiry(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.lock_until_ms)))
        self.now = max(self.now, self.lock_until_ms[user] / 1000)

    @invariant()
    def at_most_one_success_per_session(self) -> None:
        self.steps += 1
        assert all(count <= 1 for count in self.successes.values())
        for session_id, count in self.successes.items():
            assert count == 0 or self.sessions[session_id].state is SessionState.VERIFIED

    @invariant()
    def outages_alone_lock_nobody(self) -> None:
        now_ms = epoch_ms(self.now)
        busy = {f.user for f in self.in_flight} | {f.user for f in self.outages}
        for user in USERS:
            if user not in busy and self.series[user] == 0:
                lockout = self._lockout(user).current(now_ms)
                assert lockout.failures == 0, "a failure counted for outages alone"
                assert not lockout.is_locked(now_ms), "locked by outages alone"

    @invariant()
    def no_token_outlives_what_it_proved(self) -> None:
        for user, generation in self.tokens:
            valid = token_valid(generation, self.generation[user])
            assert valid is (generation == self.generation[user])
            if not valid:
                event("a token made invalid by an enrollment change")

    @invariant()
    def decoys_never_verify(self) -> None:
        assert not any(s.decoy and s.state is SessionState.VERIFIED for s in self.sessions.values())


VerificationMachine.TestCase.settings = settings(
    VerificationMachine.TestCase.settings, max_examples=150, stateful_step_count=60
)
TestVerificationMachine = VerificationMachine.TestCase
