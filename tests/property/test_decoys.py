"""Decoys behave like enrolled users (once, decoy challenges drawn from the whole catalogue
were told apart by their windows: 26 of 40 unknown users had no challenged factor in common
across two windows, against 0 of 40 enrolled users).

Deterministic: user ids are fixed, and the thresholds are chi-square critical values at
p = 0.001 or margins far from what each rule yields.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import DECOY_KEY, T0
from zeropay_proto import (
    LocalProtocolError,
    PaymentBinding,
    RiskLevel,
    decoy_enrollment,
    make_session_id,
    open_session,
)
from zeropay_proto.challenge import DEFAULT_DECOY_SIZE_WEIGHTS

USERS = [str(uuid.UUID(int=i, version=4)) for i in range(1, 2001)]
#: Chi-square critical value at p = 0.001 with 12 degrees of freedom (13 sizes).
CHI2_CRITICAL_DF12 = 32.909


def _challenged(user: str, now: float) -> set[object]:
    issued = open_session(
        session_id=make_session_id(user, b"\x01" * 16),
        user_id=user,
        enrolled=None,  # unknown user: a decoy
        window=None,
        binding=PaymentBinding(amount=10000, currency="EUR"),
        risk=RiskLevel.HIGH,
        now=now,
        entropy=b"\x00" * 32,
        decoy_key=DECOY_KEY,
    )
    return set(issued.session.challenged)


def test_pseudo_enrollment_sizes_follow_the_profile() -> None:
    sizes = Counter(len(decoy_enrollment(DECOY_KEY, user)) for user in USERS)
    total_weight = sum(w for _, w in DEFAULT_DECOY_SIZE_WEIGHTS)
    chi2 = sum(
        (sizes[n] - len(USERS) * w / total_weight) ** 2 / (len(USERS) * w / total_weight)
        for n, w in DEFAULT_DECOY_SIZE_WEIGHTS
    )
    assert set(sizes) <= set(range(3, 16))
    assert chi2 < CHI2_CRITICAL_DF12


def test_decoy_windows_overlap_as_an_enrolled_users_do() -> None:
    """Two windows of one decoy share a factor unless its pseudo-enrollment is large, as for a
    real user; drawn from the whole catalogue, 48 % of pairs would be disjoint."""
    disjoint = sum(not (_challenged(u, T0) & _challenged(u, T0 + 900)) for u in USERS[:400])
    assert disjoint < 0.1 * 400


def test_a_decoy_is_challenged_only_from_its_pseudo_enrollment() -> None:
    user = USERS[0]
    seen = set().union(*(_challenged(user, T0 + 900 * i) for i in range(60)))
    assert seen == decoy_enrollment(DECOY_KEY, user)


@given(st.uuids(version=4), st.binary(min_size=32, max_size=32))
def test_pseudo_enrollments_are_stable_and_keyed(user: uuid.UUID, key: bytes) -> None:
    factors = decoy_enrollment(key, str(user))
    assert factors == decoy_enrollment(key, str(user))
    assert 3 <= len(factors) <= 15


def test_pseudo_enrollments_depend_on_the_key() -> None:
    other_key = bytes(32)
    differ = sum(decoy_enrollment(DECOY_KEY, u) != decoy_enrollment(other_key, u) for u in USERS)
    assert differ > 0.8 * len(USERS)


@pytest.mark.parametrize(
    ("sizes", "factors"),
    [
        ((), ((None, 1),)),
        (((3, 0),), ()),
        (((3, 1),), ()),  # three factors from none
    ],
)
def test_decoy_profiles_that_cannot_be_drawn_are_refused(
    sizes: tuple[tuple[int, int], ...], factors: tuple[tuple[object, int], ...]
) -> None:
    with pytest.raises(LocalProtocolError):
        decoy_enrollment(DECOY_KEY, USERS[0], sizes=sizes, factors=factors)  # type: ignore[arg-type]
