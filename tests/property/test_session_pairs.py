"""Every (state, input) pair of the session machine: an output or a protocol error, nothing else.

After h2's ``tests/test_state_machines.py``: Hypothesis builds arbitrary stored snapshots
(any state, any attempt count, any lockout, any clock) and feeds each step of a verification.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import OTHER_USER, PEPPER, USER, enroll
from zeropay_proto import (
    CATALOGUE,
    AccountLocked,
    AttemptReserved,
    EnrollmentRecord,
    Factor,
    FactorsMismatched,
    KeyDerivationRequested,
    LocalProtocolError,
    Lockout,
    Session,
    SessionClosed,
    SessionState,
    SessionStatus,
    VerificationFailed,
    VerificationSucceeded,
    compare_factors,
    conclude_attempt,
    describe_session,
    reserve_attempt,
)
from zeropay_proto.session import TRANSITIONS, SessionInput, transition

T0_MS = 1_800_000_000_000
RECORD = enroll()[0].record
OTHER_RECORD = enroll(user=OTHER_USER)[0].record

instants = st.integers(min_value=T0_MS - 10**9, max_value=T0_MS + 10**9)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    max_attempts = draw(st.integers(min_value=1, max_value=5))
    return Session(
        session_id="s",
        user_id=USER,
        challenged=tuple(
            draw(st.lists(st.sampled_from(CATALOGUE), min_size=1, max_size=4, unique=True))
        ),
        expires_at_ms=draw(instants),
        state=draw(st.sampled_from(SessionState)),
        attempts_used=draw(st.integers(min_value=0, max_value=max_attempts)),
        max_attempts=max_attempts,
        decoy=draw(st.booleans()),
    )


lockouts = st.builds(
    Lockout,
    failures=st.integers(min_value=0, max_value=10),
    level=st.integers(min_value=0, max_value=10),
    locked_until_ms=instants,
    updated_ms=instants,
)
digests = st.dictionaries(
    st.sampled_from(CATALOGUE), st.binary(min_size=32, max_size=32), max_size=6
)


@given(st.sampled_from(SessionState), st.sampled_from(SessionInput))
def test_transition_is_in_the_table_or_a_local_protocol_error(
    state: SessionState, event: SessionInput
) -> None:
    try:
        new = transition(state, event)
    except LocalProtocolError:
        assert (state, event) not in TRANSITIONS
    else:
        assert TRANSITIONS[(state, event)] is new


@given(sessions(), lockouts, instants)
def test_reserve_never_admits_a_closed_session_or_a_locked_account(
    session: Session, lockout: Lockout, now_ms: int
) -> None:
    out = reserve_attempt(session, lockout, now=now_ms / 1000)
    assert isinstance(out, SessionClosed | AccountLocked | AttemptReserved)
    if isinstance(out, AttemptReserved):
        assert session.state_at(now_ms) is SessionState.PENDING
        assert session.attempts_used < session.max_attempts
        assert not lockout.current(now_ms).is_locked(now_ms)
        assert out.session.attempts_used == session.attempts_used + 1
        assert out.lockout.failures == lockout.current(now_ms).failures + 1
        assert out.lockout.failures <= 5


@given(sessions(), lockouts, instants, digests, st.sampled_from([RECORD, OTHER_RECORD, None]))
def test_compare_is_an_output_and_a_decoy_never_matches(
    session: Session,
    lockout: Lockout,
    now_ms: int,
    presented: dict[Factor, bytes],
    record: EnrollmentRecord | None,
) -> None:
    reserved = reserve_attempt(session, lockout, now=now_ms / 1000)
    if not isinstance(reserved, AttemptReserved):
        return
    out = compare_factors(reserved, record=record, presented=presented, pepper=PEPPER)
    assert isinstance(out, KeyDerivationRequested | FactorsMismatched)
    if session.decoy or record is not RECORD:
        assert isinstance(out, FactorsMismatched)


@given(sessions(), st.integers(min_value=-1, max_value=6), st.booleans(), instants)
def test_conclude_is_an_output_or_a_local_protocol_error(
    session: Session, attempt: int, unwrapped: bool, now_ms: int
) -> None:
    try:
        out = conclude_attempt(
            session, attempt=attempt, key_unwrapped=unwrapped, now=now_ms / 1000,
            token_entropy=b"t" * 32,
        )  # fmt: skip
    except LocalProtocolError:
        assert not 1 <= attempt <= session.attempts_used
        return
    assert isinstance(out, VerificationSucceeded | VerificationFailed | SessionClosed)
    if session.state is not SessionState.PENDING:
        assert out == SessionClosed(state=session.state)
    elif isinstance(out, VerificationSucceeded):
        assert unwrapped
        assert out.session.state is SessionState.VERIFIED
    else:
        assert isinstance(out, VerificationFailed)
        assert out.session.state in {SessionState.PENDING, SessionState.FAILED}


@given(sessions(), instants)
def test_status_is_consistent(session: Session, now_ms: int) -> None:
    status = describe_session(session, now=now_ms / 1000)
    assert isinstance(status, SessionStatus)
    assert status.expires_in_ms >= 0
    if status.state is not SessionState.PENDING:
        assert status.attempts_remaining == 0
