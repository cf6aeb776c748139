"""The challenge draw is uniform: chi-square over many draws with independent entropy.

The entropy of draw ``i`` is SHA-256 of ``i``, standing in for the CSPRNG; the test is
deterministic, and the thresholds are the chi-square critical values at p = 0.001, so a correct
implementation passes with certainty for these inputs and a biased one (modulo reduction,
a biased shuffle) fails.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Hashable

from zeropay_proto import CATALOGUE, Factor, draw_factors

DRAWS = 30_000
# Critical values of the chi-square distribution at p = 0.001.
CHI2_CRITICAL_DF14 = 36.123
CHI2_CRITICAL_DF59 = 98.324


def chi_square(counts: Counter[Hashable], categories: int, total: int) -> float:
    expected = total / categories
    assert len(counts) <= categories
    observed = list(counts.values()) + [0] * (categories - len(counts))
    return sum((o - expected) ** 2 / expected for o in observed)


def seeds() -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(DRAWS)]


def test_first_factor_is_uniform_over_the_catalogue() -> None:
    firsts: Counter[Hashable] = Counter(draw_factors(CATALOGUE, 3, seed)[0] for seed in seeds())
    assert len(firsts) == 15
    assert chi_square(firsts, 15, DRAWS) < CHI2_CRITICAL_DF14


def test_ordered_draws_are_uniform_over_all_arrangements() -> None:
    five = frozenset({Factor.PIN, Factor.COLOUR, Factor.EMOJI, Factor.NFC, Factor.FACE})
    arrangements: Counter[Hashable] = Counter(draw_factors(five, 3, seed) for seed in seeds())
    possible = len(list(itertools.permutations(five, 3)))
    assert possible == 60
    assert set(arrangements) <= set(itertools.permutations(five, 3))
    assert chi_square(arrangements, possible, DRAWS) < CHI2_CRITICAL_DF59


def naive_shuffle_draw(seed: bytes) -> tuple[Factor, ...]:
    """A classic wrong draw: swap each position with any position (not Fisher-Yates), from
    the same entropy. Its orderings are not equally likely."""
    items = list(CATALOGUE)
    for i in range(len(items)):
        j = int.from_bytes(seed[2 * i : 2 * i + 2], "big") % len(items)
        items[i], items[j] = items[j], items[i]
    return tuple(items[:3])


def test_a_biased_draw_would_fail_this_test() -> None:
    # The test's power, on a draw and not on the helper alone: the naive shuffle, fed the
    # same seeds, is rejected by the same threshold the real draw passes.
    firsts: Counter[Hashable] = Counter(naive_shuffle_draw(seed)[0] for seed in seeds())
    assert chi_square(firsts, 15, DRAWS) > CHI2_CRITICAL_DF14
