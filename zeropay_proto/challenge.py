"""Which factors a payment is challenged with.

Two rules (SPEC section 4):

- **Size is risk based**: two factors when the amount is under 30 and the merchant rates the
  payment LOW risk, three otherwise (an absent amount is not "under 30").
- **The subset is drawn once per user per challenge window** and reused by every session opened
  in that window, so an attacker who opens session after session cannot shop for the user's
  weakest factors. The window stores an *ordered* draw of three factors; a two-factor session
  takes the first two, so lowering the risk level does not reveal a new factor either.

Windows are aligned to multiples of the window length since the epoch. A user who is not
enrolled gets a decoy that behaves like an enrolled user: a stable *pseudo-enrollment*
(:func:`decoy_enrollment`, a keyed hash of the user id picks a plausible set size and plausible
factors), and windows drawn from it exactly as from a real enrollment, with entropy from a keyed
hash of (user, window index). Across windows a decoy's challenges therefore overlap as a real
user's do (they come from the same few factors), and within a window they are stable, so
re-initiating tells nothing apart.

Randomness is an input. :class:`_EntropyStream` expands the driver's CSPRNG bytes with SHA-256
in counter mode and draws indices by rejection sampling, so a choice among ``n`` is exactly
uniform whatever ``n`` is (no modulo bias).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from ._errors import LocalProtocolError
from .factors import CATALOGUE, Factor

T = TypeVar("T")

#: Below this amount (in major units: 30.00 of the payment's currency) a LOW-risk payment
#: needs only two factors (SPEC section 4).
LOW_RISK_AMOUNT_LIMIT = Decimal(30)
#: Factors challenged for a LOW-risk small payment and for everything else (SPEC section 4).
LOW_RISK_CHALLENGE_SIZE = 2
DEFAULT_CHALLENGE_SIZE = 3
#: How long one user's drawn subset is reused: 15 minutes by default, so that a guesser across
#: sessions keeps meeting the same factors.
DEFAULT_CHALLENGE_WINDOW_SECONDS = 15 * 60
#: Entropy the driver must hand in for one draw: 256 bits, enough to seed the expansion.
SELECTION_ENTROPY_BYTES = 32


class RiskLevel(enum.Enum):
    """The merchant's (or PSP's) assessment of a payment, as sent on initiate."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


def challenge_size(amount: Decimal | None, risk: RiskLevel) -> int:
    """Number of factors to challenge for a payment."""
    if amount is not None and amount < LOW_RISK_AMOUNT_LIMIT and risk is RiskLevel.LOW:
        return LOW_RISK_CHALLENGE_SIZE
    return DEFAULT_CHALLENGE_SIZE


class _EntropyStream:
    """Deterministic uniform integers from a seed: SHA-256(seed ‖ counter) blocks."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._buffer += block
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` by rejection sampling over 32-bit draws."""
        bound = (1 << 32) - (1 << 32) % n  # largest multiple of n not above 2**32
        while True:
            x = int.from_bytes(self._take(4), "big")
            if x < bound:
                return x % n


def draw_factors(candidates: Iterable[Factor], count: int, entropy: bytes) -> tuple[Factor, ...]:
    """Draw ``min(count, len(candidates))`` distinct factors, uniformly, in random order.

    A partial Fisher-Yates shuffle over the candidates in catalogue order, driven by
    ``entropy`` (at least 32 bytes from a CSPRNG).
    """
    if len(entropy) < SELECTION_ENTROPY_BYTES:
        raise LocalProtocolError("a draw needs at least 32 bytes of entropy")
    if count < 1:
        raise LocalProtocolError("a challenge has at least one factor")
    pool = sorted(set(candidates), key=CATALOGUE.index)
    stream = _EntropyStream(entropy)
    k = min(count, len(pool))
    for i in range(k):
        j = i + stream.below(len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return tuple(pool[:k])


def window_index(now: float, window_seconds: int = DEFAULT_CHALLENGE_WINDOW_SECONDS) -> int:
    """Which challenge window ``now`` (epoch seconds) falls in."""
    return int(now // window_seconds)


@dataclass(frozen=True, kw_only=True)
class ChallengeWindow:
    """One user's drawn factors for one window. Stored by the driver until ``ends_at_ms``."""

    factors: tuple[Factor, ...]
    index: int
    window_seconds: int = DEFAULT_CHALLENGE_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if not self.factors or len(set(self.factors)) != len(self.factors):
            raise LocalProtocolError("a window holds distinct factors")
        if self.window_seconds < 1:
            raise LocalProtocolError("a window lasts at least a second")

    @property
    def ends_at_ms(self) -> int:
        """When the window closes, in epoch milliseconds (the driver's storage expiry)."""
        return (self.index + 1) * self.window_seconds * 1000

    def is_current(self, now: float) -> bool:
        """Whether ``now`` falls inside this window."""
        return window_index(now, self.window_seconds) == self.index


#: How many factors users enroll, as relative weights for sizes 3 to 15: most enroll a few,
#: some many. This shapes decoys (:func:`decoy_enrollment`); a deployment with measured
#: figures of its own passes them instead.
DEFAULT_DECOY_SIZE_WEIGHTS: tuple[tuple[int, int], ...] = (
    (3, 30),
    (4, 24),
    (5, 18),
    (6, 10),
    (7, 6),
    (8, 4),
    (9, 2),
    (10, 2),
    (11, 1),
    (12, 1),
    (13, 1),
    (14, 1),
    (15, 1),
)
#: How often each factor is enrolled, as relative weights: the memorable knowledge factors and
#: the phone's biometrics most, special hardware (stylus, balance board, NFC) least.
DEFAULT_DECOY_FACTOR_WEIGHTS: tuple[tuple[Factor, int], ...] = (
    (Factor.PIN, 12),
    (Factor.COLOUR, 9),
    (Factor.EMOJI, 9),
    (Factor.WORDS, 8),
    (Factor.PATTERN_MICRO, 5),
    (Factor.PATTERN_NORMAL, 6),
    (Factor.MOUSE_DRAW, 3),
    (Factor.STYLUS_DRAW, 2),
    (Factor.VOICE, 3),
    (Factor.IMAGE_TAP, 4),
    (Factor.BALANCE, 2),
    (Factor.RHYTHM_TAP, 3),
    (Factor.NFC, 3),
    (Factor.FINGERPRINT, 8),
    (Factor.FACE, 7),
)


def _weighted(stream: _EntropyStream, weights: Sequence[tuple[T, int]]) -> int:
    """Index of a choice drawn with probability proportional to its weight."""
    point = stream.below(sum(weight for _, weight in weights))
    for i, (_, weight) in enumerate(weights[:-1]):
        if point < weight:
            return i
        point -= weight
    return len(weights) - 1


def decoy_enrollment(
    decoy_key: bytes,
    user_id: str,
    *,
    sizes: Sequence[tuple[int, int]] = DEFAULT_DECOY_SIZE_WEIGHTS,
    factors: Sequence[tuple[Factor, int]] = DEFAULT_DECOY_FACTOR_WEIGHTS,
) -> frozenset[Factor]:
    """The factors an unknown user "has enrolled": stable for the user, unpredictable without
    the server's key, with set sizes drawn by ``sizes`` and factors by ``factors`` (weighted,
    without replacement), so that decoys look like the population of real enrollments."""
    if not sizes or any(w < 1 for _, w in (*sizes, *factors)):
        raise LocalProtocolError("decoy weights must be positive")
    if not 1 <= min(n for n, _ in sizes) <= max(n for n, _ in sizes) <= len(factors):
        raise LocalProtocolError("decoy sizes must fit the factors that can be drawn")
    seed = hmac.new(
        decoy_key, b"zeropay/decoy-enrollment/v1\x00" + user_id.encode(), hashlib.sha256
    ).digest()
    stream = _EntropyStream(seed)
    size = sizes[_weighted(stream, sizes)][0]
    remaining = list(factors)
    return frozenset(remaining.pop(_weighted(stream, remaining))[0] for _ in range(size))


def decoy_entropy(decoy_key: bytes, user_id: str, index: int) -> bytes:
    """Entropy for an unknown user's decoy draw: ``HMAC-SHA256(key, user ‖ window index)``.

    Stable for the window, unpredictable without the server's key.
    """
    message = b"zeropay/decoy/v1\x00%s\x00%d" % (user_id.encode(), index)
    return hmac.new(decoy_key, message, hashlib.sha256).digest()


def select_window(
    *,
    current: ChallengeWindow | None,
    enrolled: frozenset[Factor],
    now: float,
    entropy: bytes,
    window_seconds: int = DEFAULT_CHALLENGE_WINDOW_SECONDS,
) -> tuple[ChallengeWindow, bool]:
    """The window to challenge from, and whether it is new (so the driver must store it).

    The stored window is reused while it is current and every factor in it is still enrolled
    (an enrollment update invalidates it).
    """
    if (
        current is not None
        and current.window_seconds == window_seconds
        and current.is_current(now)
        and enrolled.issuperset(current.factors)
    ):
        return current, False
    drawn = draw_factors(enrolled, DEFAULT_CHALLENGE_SIZE, entropy)
    return (
        ChallengeWindow(
            factors=drawn, index=window_index(now, window_seconds), window_seconds=window_seconds
        ),
        True,
    )
