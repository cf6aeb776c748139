"""The verification session's rules, driven synchronously with a hand-advanced clock."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from tests.helpers import (
    DECOY_KEY,
    ENROLLED,
    OTHER_USER,
    PEPPER,
    T0,
    USER,
    digest_for,
    enroll,
    entropy,
    issue,
)
from zeropay_proto import (
    AccountLocked,
    AttemptReserved,
    ChallengeWindow,
    Factor,
    FactorsMismatched,
    KeyDerivationRequested,
    LocalProtocolError,
    Lockout,
    PaymentBinding,
    Policy,
    RiskLevel,
    Session,
    SessionClosed,
    SessionState,
    VerificationFailed,
    VerificationSucceeded,
    attempt_proven,
    authorizes_enrollment_change,
    compare_factors,
    conclude_attempt,
    decoy_enrollment,
    derive_and_unwrap,
    describe_session,
    encode_token,
    open_session,
    release_attempt,
    reserve_attempt,
    token_digest,
    token_valid,
)
from zeropay_proto.crypto import EnrollmentRecord
from zeropay_proto.passkeys import (
    CloneSuspected,
    PossessionPolicy,
    PossessionProven,
    PossessionRefused,
)
from zeropay_proto.session import (
    DEFAULT_LOCKOUT_DURATIONS_SECONDS,
    TRANSITIONS,
    SessionInput,
    transition,
)

TOKEN = entropy(32, "token")


def right(session: Session) -> dict[Factor, bytes]:
    return {f: digest_for(f) for f in session.challenged}


def wrong(session: Session) -> dict[Factor, bytes]:
    # Only the last challenged factor is wrong: the comparison must not stop early to notice.
    answers = right(session)
    answers[session.challenged[-1]] = digest_for(session.challenged[-1], "wrong")
    return answers


NEVER_FAILED = Lockout()


def reserved(session: Session, lockout: Lockout = NEVER_FAILED, now: float = T0) -> AttemptReserved:
    out = reserve_attempt(session, lockout, now=now)
    assert isinstance(out, AttemptReserved)
    return out


def record() -> EnrollmentRecord:
    return enroll()[0].record


# --- opening ---------------------------------------------------------------------------------


def test_open_session_challenges_three_enrolled_factors_by_default() -> None:
    out = issue()
    assert len(out.session.challenged) == 3
    assert set(out.session.challenged) <= set(ENROLLED)
    assert out.session.state is SessionState.PENDING
    assert out.session.attempts_used == 0
    assert out.session.expires_at_ms == int(T0 * 1000) + 300_000
    assert out.window_opened
    assert out.window is not None
    assert out.window.factors[:3] == out.session.challenged
    assert not out.session.decoy


def test_low_risk_small_payment_challenges_two_factors_from_the_same_window() -> None:
    high = issue(amount="100", risk=RiskLevel.HIGH)
    assert high.window is not None

    def reopen(amount: str | None, risk: RiskLevel) -> tuple[Factor, ...]:
        out = open_session(
            session_id=high.session.session_id,
            user_id=USER,
            enrolled=frozenset(ENROLLED),
            window=high.window,
            binding=PaymentBinding(
                amount=None if amount is None else int(Decimal(amount).scaleb(2)), currency="EUR"
            ),
            risk=risk,
            now=T0 + 1,
            entropy=entropy(32, "a draw that must not be used"),
            decoy_key=b"d" * 32,
        )
        assert not out.window_opened
        return out.session.challenged

    assert reopen("29.99", RiskLevel.LOW) == high.session.challenged[:2]
    assert reopen("30", RiskLevel.LOW) == high.session.challenged
    assert reopen("5", RiskLevel.MEDIUM) == high.session.challenged
    assert reopen(None, RiskLevel.LOW) == high.session.challenged  # no amount: not "under 30"


def test_sessions_in_one_window_reuse_the_stored_draw() -> None:
    first = issue(label="a")
    assert first.window is not None
    second = open_session(
        session_id=first.session.session_id,
        user_id=USER,
        enrolled=frozenset(ENROLLED),
        window=first.window,
        binding=first.session.binding,
        risk=RiskLevel.MEDIUM,
        now=T0 + 60,
        entropy=entropy(32, "a different draw"),
        decoy_key=b"d" * 32,
    )
    assert second.session.challenged == first.session.challenged
    assert not second.window_opened


def test_unknown_user_gets_a_decoy_that_is_stable_within_the_window() -> None:
    a = issue(enrolled=None, label="a")
    b = issue(enrolled=None, label="b", now=T0 + 30)  # even without the stored window
    assert a.session.decoy
    assert a.window_opened  # stored like a real user's window: the same storage work
    assert a.window is not None
    assert set(a.window.factors) <= decoy_enrollment(DECOY_KEY, USER)
    assert a.session.challenged == b.session.challenged
    assert len(a.session.challenged) == 3
    later = issue(enrolled=None, now=T0 + 15 * 60)
    other_user = issue(enrolled=None, user=OTHER_USER)
    assert (later.session.challenged, other_user.session.challenged) != (
        a.session.challenged,
        a.session.challenged,
    )


# --- the transition table --------------------------------------------------------------------


def test_only_pending_sessions_have_transitions() -> None:
    assert {state for state, _ in TRANSITIONS} == {SessionState.PENDING}
    for state in SessionState:
        for event in SessionInput:
            if (state, event) in TRANSITIONS:
                assert transition(state, event) is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(LocalProtocolError):
                    transition(state, event)


def test_session_validates_its_fields() -> None:
    session = issue().session
    with pytest.raises(LocalProtocolError):
        replace(session, challenged=())
    with pytest.raises(LocalProtocolError):
        replace(session, challenged=(Factor.PIN, Factor.PIN))
    with pytest.raises(LocalProtocolError):
        replace(session, attempts_used=4)
    with pytest.raises(LocalProtocolError):
        replace(session, passkey_ids=(b"cred-1", b"cred-1"))


# --- possession: a passkey beside the factors ------------------------------------------------

KEYS = (b"cred-1", b"cred-2")
PASSKEYS = PossessionPolicy()


def test_a_user_with_a_passkey_is_challenged_it_when_the_payment_needs_it() -> None:
    def allowed(**kwargs: object) -> tuple[bytes, ...]:
        defaults: dict[str, object] = {"possession": PASSKEYS, "passkey_ids": KEYS}
        return issue(**{**defaults, **kwargs}).session.passkey_ids  # type: ignore[arg-type]

    assert allowed(amount="30") == KEYS  # the threshold
    assert allowed(amount="29.99") == ()
    assert allowed(amount="5", risk=RiskLevel.HIGH) == KEYS
    assert allowed(amount=None, merchant_asks_possession=True) == KEYS
    assert allowed(amount="1000", passkey_ids=()) == ()  # no passkey, no possession
    assert allowed(amount="1000", possession=None) == ()  # passkeys off here
    lower = PossessionPolicy(threshold=Decimal(10))
    assert allowed(amount="10", possession=lower) == KEYS
    session = issue(possession=PASSKEYS, passkey_ids=KEYS).session
    assert session.challenges_possession
    assert not issue().session.challenges_possession


def test_an_unknown_users_decoy_shows_decoy_passkeys_as_often_as_real_users_have_them() -> None:
    users = [f"00000000-0000-4000-8000-{n:012d}" for n in range(300)]
    sessions = [
        issue(user=u, enrolled=None, possession=PASSKEYS, amount="100").session for u in users
    ]
    having = [s for s in sessions if s.challenges_possession]
    assert 0.2 < len(having) / len(users) < 0.46
    again = issue(user=having[0].user_id, enrolled=None, possession=PASSKEYS, amount="100")
    assert again.session.passkey_ids == having[0].passkey_ids  # stable
    assert all(len(i) == 32 for s in having for i in s.passkey_ids)
    small = issue(user=having[0].user_id, enrolled=None, possession=PASSKEYS, amount="5")
    assert not small.session.challenges_possession  # the same rule as a real user's


def test_each_attempt_links_the_payment_and_its_own_number() -> None:
    session = issue(possession=PASSKEYS, passkey_ids=KEYS).session
    first, second = session.linked_data(1), session.linked_data(2)
    assert (first.session_id, first.amount, first.currency, first.payee) == (
        session.session_id,
        10000,
        "EUR",
        "m-1",
    )
    assert first.challenge() != second.challenge()


def test_an_attempt_proves_possession_only_with_a_proven_assertion() -> None:
    with_passkey = issue(possession=PASSKEYS, passkey_ids=KEYS).session
    plain = issue().session
    proven = PossessionProven(credential_id=b"cred-1", sign_count=2)
    refused = PossessionRefused(reason="signature")
    clone = CloneSuspected(credential_id=b"cred-1", stored_count=5, presented_count=5)
    assert attempt_proven(with_passkey, key_unwrapped=True, possession=proven)
    for possession in (refused, clone, None):
        assert not attempt_proven(with_passkey, key_unwrapped=True, possession=possession)
    assert not attempt_proven(with_passkey, key_unwrapped=False, possession=proven)
    assert attempt_proven(plain, key_unwrapped=True, possession=None)
    assert not attempt_proven(plain, key_unwrapped=False, possession=proven)


def test_a_success_with_a_passkey_receipts_both_categories_and_the_signed_challenge() -> None:
    session = issue(possession=PASSKEYS, passkey_ids=KEYS).session
    step1 = reserved(reserved(session).session)  # the second attempt
    out = conclude_attempt(
        step1.session, attempt=2, key_unwrapped=True, now=T0 + 1, token_entropy=TOKEN
    )
    assert isinstance(out, VerificationSucceeded)
    assert out.receipt.sca == ("knowledge", "possession")
    assert out.receipt.linked_challenge == session.linked_data(2).challenge()
    plain = conclude_attempt(
        reserved(issue().session).session,
        attempt=1,
        key_unwrapped=True,
        now=T0 + 1,
        token_entropy=TOKEN,
    )
    assert isinstance(plain, VerificationSucceeded)
    assert plain.receipt.sca == ("knowledge",)
    assert plain.receipt.linked_challenge is None


def test_policy_rejects_non_positive_numbers() -> None:
    with pytest.raises(LocalProtocolError):
        Policy(max_attempts=0)
    with pytest.raises(LocalProtocolError):
        Policy(lockout_durations_seconds=())
    with pytest.raises(LocalProtocolError):
        Policy(lockout_durations_seconds=(0,))


# --- a whole verification --------------------------------------------------------------------


def test_right_factors_verify_and_mint_a_token_and_receipt() -> None:
    plan, wrapped = enroll()
    session = issue().session
    step1 = reserved(session)
    assert step1.attempt == 1
    assert step1.session.attempts_used == 1
    assert step1.lockout.failures == 1  # counted before the comparison
    step2 = compare_factors(step1, record=plan.record, presented=right(session), pepper=PEPPER)
    assert isinstance(step2, KeyDerivationRequested)
    row = plan.wrapped_key(wrapped)
    assert derive_and_unwrap(step2.material, row.salt, row.iterations, row.wrapped, USER)
    step3 = conclude_attempt(
        step1.session, attempt=1, key_unwrapped=True, now=T0 + 1, token_entropy=TOKEN
    )
    assert isinstance(step3, VerificationSucceeded)
    assert step3.session.state is SessionState.VERIFIED
    assert step3.lockout == Lockout()
    assert step3.auth_token == encode_token(USER, TOKEN)
    assert step3.token_digest == token_digest(step3.auth_token)
    assert step3.token_expires_at_ms == int((T0 + 1) * 1000) + 300_000
    assert step3.receipt.session_id == session.session_id
    assert step3.receipt.binding == session.binding


def test_wrong_factor_fails_without_naming_it() -> None:
    session = issue().session
    step1 = reserved(session)
    step2 = compare_factors(step1, record=record(), presented=wrong(session), pepper=PEPPER)
    assert step2 == FactorsMismatched()
    step3 = conclude_attempt(
        step1.session, attempt=1, key_unwrapped=False, now=T0, token_entropy=TOKEN
    )
    assert step3 == VerificationFailed(session=step1.session, attempts_remaining=2)


def test_missing_factor_or_wrong_pepper_or_other_users_record_mismatch() -> None:
    session = issue().session
    step1 = reserved(session)
    partial = right(session)
    del partial[session.challenged[0]]
    assert isinstance(
        compare_factors(step1, record=record(), presented=partial, pepper=PEPPER),
        FactorsMismatched,
    )
    assert isinstance(
        compare_factors(step1, record=record(), presented=right(session), pepper=b"x" * 32),
        FactorsMismatched,
    )
    other = enroll(user=OTHER_USER)[0].record
    assert isinstance(
        compare_factors(step1, record=other, presented=right(session), pepper=PEPPER),
        FactorsMismatched,
    )
    assert isinstance(
        compare_factors(step1, record=None, presented=right(session), pepper=PEPPER),
        FactorsMismatched,
    )


def test_challenged_factor_not_in_record_mismatches() -> None:
    session = issue().session
    step1 = reserved(session)
    rec = record()
    smaller = EnrollmentRecord(
        user_id=USER,
        verifiers={f: v for f, v in rec.verifiers.items() if f != session.challenged[1]},
        enrolled_at_s=rec.enrolled_at_s,
    )
    out = compare_factors(step1, record=smaller, presented=right(session), pepper=PEPPER)
    assert isinstance(out, FactorsMismatched)


def test_compare_factors_rejects_malformed_digests_from_the_driver() -> None:
    session = issue().session
    bad = dict.fromkeys(session.challenged, b"short")
    with pytest.raises(LocalProtocolError):
        compare_factors(reserved(session), record=record(), presented=bad, pepper=PEPPER)


def test_decoy_session_always_fails_the_same_way() -> None:
    real = issue(label="r").session
    decoy = issue(enrolled=None, label="d").session
    outputs = []
    for session in (real, decoy):
        step1 = reserved(session)
        # Even the "right" answers for a decoy, against a real record, cannot match.
        step2 = compare_factors(step1, record=record(), presented=right(session), pepper=PEPPER)
        if session is real:
            step2 = compare_factors(step1, record=record(), presented=wrong(session), pepper=PEPPER)
        assert isinstance(step2, FactorsMismatched)
        out = conclude_attempt(
            step1.session, attempt=1, key_unwrapped=False, now=T0, token_entropy=TOKEN
        )
        assert isinstance(out, VerificationFailed)
        outputs.append(out.attempts_remaining)
    assert outputs == [2, 2]


def test_key_unwrap_failure_is_a_failure() -> None:
    session = issue().session
    step1 = reserved(session)
    out = conclude_attempt(
        step1.session, attempt=1, key_unwrapped=False, now=T0, token_entropy=TOKEN
    )
    assert isinstance(out, VerificationFailed)


def test_three_failures_fail_the_session_and_it_accepts_nothing_more() -> None:
    session = issue().session
    lockout = Lockout()
    for attempt in (1, 2, 3):
        step1 = reserved(session, lockout)
        assert step1.attempt == attempt
        out = conclude_attempt(
            step1.session, attempt=attempt, key_unwrapped=False, now=T0, token_entropy=TOKEN
        )
        assert isinstance(out, VerificationFailed)
        assert out.attempts_remaining == 3 - attempt
        session, lockout = out.session, step1.lockout
    assert session.state is SessionState.FAILED
    assert reserve_attempt(session, lockout, now=T0) == SessionClosed(state=SessionState.FAILED)


def test_verified_session_cannot_be_verified_again() -> None:
    session = issue().session
    first = reserved(session)
    done = conclude_attempt(
        first.session, attempt=1, key_unwrapped=True, now=T0, token_entropy=TOKEN
    )
    assert isinstance(done, VerificationSucceeded)
    assert reserve_attempt(done.session, done.lockout, now=T0) == SessionClosed(
        state=SessionState.VERIFIED
    )


def test_a_proof_of_a_changed_enrollment_is_a_failure() -> None:
    """Reserved under generation 3; the user changed their factors (or passkeys) before the
    attempt concluded: what it proved is gone, so it is one more generic failure."""
    step = reserved(issue().session)
    stale = conclude_attempt(
        step.session,
        attempt=1,
        key_unwrapped=True,
        now=T0,
        token_entropy=TOKEN,
        reserved_generation=3,
        current_generation=5,
    )
    assert isinstance(stale, VerificationFailed)
    assert stale.session.state is SessionState.PENDING
    current = conclude_attempt(
        step.session,
        attempt=1,
        key_unwrapped=True,
        now=T0,
        token_entropy=TOKEN,
        reserved_generation=5,
        current_generation=5,
    )
    assert isinstance(current, VerificationSucceeded)


def test_a_token_is_valid_only_under_the_generation_it_was_issued_in() -> None:
    assert token_valid(0, 0)
    assert token_valid(7, 7)
    assert not token_valid(0, 1)  # the enrollment changed after the token was issued
    assert not token_valid(2, 1)  # never matched by a counter that went back


def test_concurrent_attempts_conclude_at_most_one_success() -> None:
    session = issue().session
    a = reserved(session)
    b = reserved(a.session, a.lockout)
    stored = b.session  # both reservations persisted
    first = conclude_attempt(stored, attempt=1, key_unwrapped=True, now=T0, token_entropy=TOKEN)
    assert isinstance(first, VerificationSucceeded)
    second = conclude_attempt(
        first.session, attempt=2, key_unwrapped=True, now=T0, token_entropy=TOKEN
    )
    assert second == SessionClosed(state=SessionState.VERIFIED)


def test_all_attempts_in_flight_refuses_a_fourth() -> None:
    session = issue().session
    lockout = Lockout()
    for _ in range(3):
        step = reserved(session, lockout)
        session, lockout = step.session, step.lockout
    assert reserve_attempt(session, lockout, now=T0) == SessionClosed(state=SessionState.PENDING)


def test_earlier_attempt_failing_after_the_last_does_not_reopen() -> None:
    session = issue().session
    lockout = Lockout()
    for _ in range(3):
        step = reserved(session, lockout)
        session, lockout = step.session, step.lockout
    last = conclude_attempt(session, attempt=3, key_unwrapped=False, now=T0, token_entropy=TOKEN)
    assert isinstance(last, VerificationFailed)
    assert last.session.state is SessionState.FAILED
    late = conclude_attempt(
        last.session, attempt=2, key_unwrapped=False, now=T0, token_entropy=TOKEN
    )
    assert late == SessionClosed(state=SessionState.FAILED)


def test_conclude_guards_its_inputs() -> None:
    session = issue().session
    with pytest.raises(LocalProtocolError):
        conclude_attempt(session, attempt=1, key_unwrapped=True, now=T0, token_entropy=TOKEN)
    step = reserved(session)
    with pytest.raises(LocalProtocolError):
        conclude_attempt(step.session, attempt=1, key_unwrapped=True, now=T0, token_entropy=b"")


def test_session_expires_after_its_lifetime() -> None:
    session = issue().session
    assert describe_session(session, now=T0 + 299.999).state is SessionState.PENDING
    assert reserve_attempt(session, Lockout(), now=T0 + 300) == SessionClosed(
        state=SessionState.EXPIRED
    )
    status = describe_session(session, now=T0 + 400)
    assert status.state is SessionState.EXPIRED
    assert status.attempts_remaining == 0
    assert status.expires_in_ms == 0


def test_describe_reports_attempts() -> None:
    session = reserved(issue().session).session
    status = describe_session(session, now=T0 + 100)
    assert status.state is SessionState.PENDING
    assert (status.attempts_used, status.attempts_remaining) == (1, 2)
    assert status.expires_in_ms == 200_000


# --- lockout ---------------------------------------------------------------------------------


def fail_once(lockout: Lockout, now: float, label: str) -> Lockout | AccountLocked:
    session = issue(label=label, now=now).session
    out = reserve_attempt(session, lockout, now=now)
    if isinstance(out, AccountLocked):
        return out
    assert isinstance(out, AttemptReserved)
    return out.lockout


def test_five_failures_across_sessions_lock_with_escalating_durations() -> None:
    lockout = Lockout()
    now = T0
    for level, duration in enumerate((*DEFAULT_LOCKOUT_DURATIONS_SECONDS, 86_400)):
        for i in range(5):
            result = fail_once(lockout, now, f"{level}-{i}")
            assert isinstance(result, Lockout)
            lockout = result
        assert lockout.failures == 5
        assert lockout.level == level + 1
        assert lockout.locked_until_ms == int(now * 1000) + duration * 1000
        refused = fail_once(lockout, now + 1, "locked")
        assert isinstance(refused, AccountLocked)
        assert refused.retry_after_ms == duration * 1000 - 1000
        now += duration  # the lock has run out: a new series starts
        assert lockout.current(int(now * 1000)).failures == 0


def test_success_clears_the_counter_and_the_escalation() -> None:
    lockout = Lockout(failures=4, level=2, locked_until_ms=0, updated_ms=int(T0 * 1000))
    session = issue().session
    step = reserved(session, lockout)
    assert step.lockout.locked_until_ms > 0  # the fifth reservation locks at once
    done = conclude_attempt(
        step.session, attempt=1, key_unwrapped=True, now=T0, token_entropy=TOKEN
    )
    assert isinstance(done, VerificationSucceeded)
    assert done.lockout == Lockout()


def test_lockout_state_is_forgotten_after_a_quiet_day() -> None:
    lockout = Lockout(failures=3, level=1, locked_until_ms=0, updated_ms=int(T0 * 1000))
    assert lockout.forget_at_ms() == int(T0 * 1000) + 86_400_000
    assert lockout.current(int(T0 * 1000) + 86_399_999) == lockout
    assert lockout.current(int(T0 * 1000) + 86_400_000) == Lockout()


def test_locked_account_with_closed_session_reports_the_session() -> None:
    lockout = Lockout(
        failures=5, level=1, locked_until_ms=int(T0 * 1000) + 10_000, updated_ms=int(T0 * 1000)
    )
    closed = replace(issue().session, state=SessionState.VERIFIED)
    assert reserve_attempt(closed, lockout, now=T0) == SessionClosed(state=SessionState.VERIFIED)
    assert isinstance(reserve_attempt(issue().session, lockout, now=T0), AccountLocked)


def test_window_is_redrawn_when_a_factor_is_no_longer_enrolled() -> None:
    window = ChallengeWindow(factors=(Factor.NFC, Factor.PIN, Factor.FACE), index=int(T0 // 900))
    out = open_session(
        session_id=issue().session.session_id,
        user_id=USER,
        enrolled=frozenset(ENROLLED),
        window=window,
        binding=issue().session.binding,
        risk=RiskLevel.HIGH,
        now=T0,
        entropy=entropy(32),
        decoy_key=b"d" * 32,
    )
    assert out.window_opened
    assert set(out.session.challenged) <= set(ENROLLED)


def test_comparison_does_the_same_work_whatever_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """The original service stopped at the first wrong factor (3 ms vs 22 ms, an oracle)."""
    import zeropay_proto.crypto
    import zeropay_proto.session as session_module

    calls: list[Factor] = []
    real = zeropay_proto.crypto.compute_verifier

    def counting(pepper: bytes, user: str, factor: Factor, digest: bytes) -> bytes:
        calls.append(factor)
        return real(pepper, user, factor, digest)

    monkeypatch.setattr(session_module, "compute_verifier", counting)
    session = issue().session
    first_wrong = right(session)
    first_wrong[session.challenged[0]] = digest_for(session.challenged[0], "wrong")
    cases = {
        "right": (record(), right(session)),
        "first wrong": (record(), first_wrong),
        "last wrong": (record(), wrong(session)),
        "all missing": (record(), {}),
        "no record": (None, right(session)),
    }
    work = {}
    for name, (rec, presented) in cases.items():
        calls.clear()
        compare_factors(reserved(session), record=rec, presented=presented, pepper=PEPPER)
        work[name] = list(calls)
    assert all(w == work["right"] for w in work.values())
    assert len(work["right"]) == 2 * len(session.challenged)  # verifier and dummy, every factor


# ---------------------------------------------------------------------------------------------
# An outage is never a failed attempt: release_attempt.


def test_a_released_reservation_gives_back_the_failure_and_the_session_attempt() -> None:
    session = issue().session
    step = reserved(session)
    out = release_attempt(step.session, step.lockout, attempt=step.attempt, now=T0 + 1)
    assert out.session == session  # the attempt is back
    assert out.lockout == replace(step.lockout, failures=0, updated_ms=int((T0 + 1) * 1000))


def test_releasing_the_reservation_that_locked_lifts_the_lock_one_level_down() -> None:
    before = Lockout(failures=4, level=2, locked_until_ms=0, updated_ms=int(T0 * 1000))
    step = reserved(issue().session, before)
    assert step.lockout.is_locked(int(T0 * 1000))
    assert step.lockout.level == 3
    out = release_attempt(step.session, step.lockout, attempt=1, now=T0)
    assert out.lockout == replace(before, updated_ms=int(T0 * 1000))
    assert isinstance(reserve_attempt(issue().session, out.lockout, now=T0), AttemptReserved)


def test_only_the_latest_reservation_of_a_pending_session_is_given_back() -> None:
    first = reserved(issue().session)
    second = reserved(first.session, first.lockout)
    out = release_attempt(second.session, second.lockout, attempt=first.attempt, now=T0)
    assert out.session is None  # attempt 2 is in flight: the numbering must not move
    assert out.lockout.failures == 1
    closed = replace(second.session, state=SessionState.FAILED)
    assert release_attempt(closed, second.lockout, attempt=2, now=T0).session is None
    assert release_attempt(None, second.lockout, attempt=2, now=T0).session is None
    expired = T0 + 10_000
    assert release_attempt(second.session, second.lockout, attempt=2, now=expired).session is None


def test_nothing_is_given_back_after_a_success_or_a_lapsed_lock() -> None:
    cleared = release_attempt(None, Lockout(), attempt=1, now=T0)
    assert cleared.lockout == Lockout()
    locked = Lockout(failures=5, level=1, locked_until_ms=int(T0 * 1000) + 5, updated_ms=0)
    lapsed = release_attempt(None, locked, attempt=1, now=T0 + 1)
    assert lapsed.lockout == locked.current(int((T0 + 1) * 1000))
    assert lapsed.lockout.failures == 0
    assert lapsed.lockout.level == 1


def test_only_a_strong_fresh_token_authorizes_an_enrollment_change() -> None:
    issued = int(T0 * 1000)
    assert authorizes_enrollment_change(factors_proven=3, issued_at_ms=issued, now=T0 + 300)
    assert not authorizes_enrollment_change(factors_proven=2, issued_at_ms=issued, now=T0)
    assert not authorizes_enrollment_change(factors_proven=3, issued_at_ms=issued, now=T0 + 301)
    strict = Policy(step_up_factors=4, step_up_seconds=60)
    assert not authorizes_enrollment_change(
        factors_proven=3, issued_at_ms=issued, now=T0, policy=strict
    )


def test_a_success_says_how_many_factors_it_proved() -> None:
    step = reserved(issue().session)
    done = conclude_attempt(
        step.session, attempt=1, key_unwrapped=True, now=T0, token_entropy=TOKEN
    )
    assert isinstance(done, VerificationSucceeded)
    assert done.factors_proven == len(step.session.challenged)


def test_a_reservation_says_whether_it_locked_the_account() -> None:
    session = issue().session
    fourth = Lockout(failures=3, level=0, locked_until_ms=0, updated_ms=int(T0 * 1000))
    assert not reserved(session, fourth).locked_account
    fifth = reserved(session, replace(fourth, failures=4))
    assert fifth.locked_account
    lapsed = fifth.lockout.locked_until_ms / 1000
    after_lapse = reserved(issue(now=lapsed).session, fifth.lockout, now=lapsed)
    assert not after_lapse.locked_account  # an old lock left in the state is not this one's
