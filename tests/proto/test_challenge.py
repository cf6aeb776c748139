"""Challenge size and the per-window draw."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.helpers import T0, USER, entropy
from zeropay_proto import (
    CATALOGUE,
    ChallengeWindow,
    Factor,
    LocalProtocolError,
    RiskLevel,
    challenge_size,
    draw_factors,
    select_window,
)
from zeropay_proto.challenge import _EntropyStream, decoy_entropy, window_index

FIVE = frozenset({Factor.PIN, Factor.COLOUR, Factor.EMOJI, Factor.NFC, Factor.FACE})


@pytest.mark.parametrize(
    ("amount", "risk", "size"),
    [
        (Decimal("29.99"), RiskLevel.LOW, 2),
        (Decimal(0), RiskLevel.LOW, 2),
        (Decimal(30), RiskLevel.LOW, 3),
        (Decimal("29.99"), RiskLevel.MEDIUM, 3),
        (Decimal(1), RiskLevel.HIGH, 3),
        (None, RiskLevel.LOW, 3),
    ],
)
def test_challenge_size_is_risk_based(amount: Decimal | None, risk: RiskLevel, size: int) -> None:
    assert challenge_size(amount, risk) == size


def test_draw_is_deterministic_distinct_and_within_candidates() -> None:
    a = draw_factors(FIVE, 3, entropy(32))
    assert a == draw_factors(FIVE, 3, entropy(32))
    assert len(set(a)) == 3
    assert set(a) <= FIVE
    assert (
        draw_factors(FIVE, 3, entropy(32, "x")) != a or draw_factors(FIVE, 3, entropy(32, "y")) != a
    )
    assert len(draw_factors(FIVE, 10, entropy(32))) == 5
    assert len(draw_factors(CATALOGUE, 3, entropy(32))) == 3


def test_draw_guards_its_inputs() -> None:
    with pytest.raises(LocalProtocolError):
        draw_factors(FIVE, 3, b"too short")
    with pytest.raises(LocalProtocolError):
        draw_factors(FIVE, 0, entropy(32))


def test_entropy_stream_rejects_words_that_would_bias_the_draw() -> None:
    # For n = 2**31 + 1 only words below n itself are usable (2**32 % n == 2**31 - 1), so
    # about half of all words are rejected: the draw must skip them, not fold them in.
    n = (1 << 31) + 1
    raw = _EntropyStream(b"seed")
    words = [int.from_bytes(raw._take(4), "big") for _ in range(64)]
    expected = [w for w in words if w < n]
    assert 0 < len(expected) < len(words)  # this seed does exercise rejection
    stream = _EntropyStream(b"seed")
    assert [stream.below(n) for _ in expected] == expected


def test_window_is_reused_while_current_and_enrolled() -> None:
    window, opened = select_window(current=None, enrolled=FIVE, now=T0, entropy=entropy(32))
    assert opened
    assert window.index == window_index(T0)
    assert window.ends_at_ms == (window.index + 1) * 900_000
    again, opened = select_window(
        current=window, enrolled=FIVE, now=T0 + 1, entropy=entropy(32, "z")
    )
    assert (again, opened) == (window, False)
    later, opened = select_window(
        current=window, enrolled=FIVE, now=window.ends_at_ms / 1000, entropy=entropy(32, "z")
    )
    assert opened
    assert later.index == window.index + 1
    other_length, opened = select_window(
        current=window, enrolled=FIVE, now=T0, entropy=entropy(32), window_seconds=60
    )
    assert opened
    assert other_length.window_seconds == 60


def test_window_validates_its_fields() -> None:
    with pytest.raises(LocalProtocolError):
        ChallengeWindow(factors=(), index=0)
    with pytest.raises(LocalProtocolError):
        ChallengeWindow(factors=(Factor.PIN, Factor.PIN), index=0)
    with pytest.raises(LocalProtocolError):
        ChallengeWindow(factors=(Factor.PIN,), index=0, window_seconds=0)


def test_decoy_entropy_is_keyed_by_user_and_window() -> None:
    a = decoy_entropy(b"k" * 32, USER, 7)
    assert len(a) == 32
    assert a == decoy_entropy(b"k" * 32, USER, 7)
    assert a != decoy_entropy(b"k" * 32, USER, 8)
    assert a != decoy_entropy(b"j" * 32, USER, 7)
