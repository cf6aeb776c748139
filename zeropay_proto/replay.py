"""Replay protection for state-changing requests (SPEC section 3).

Every state-changing request carries ``X-Nonce`` (a UUIDv4) and ``X-Timestamp`` (milliseconds
since the epoch). The timestamp must lie within :data:`DEFAULT_MAX_PAST_MS` in the past and
:data:`DEFAULT_MAX_FUTURE_MS` in the future; the nonce is accepted once. The driver claims the
nonce with one atomic ``SET NX`` for :attr:`NonceClaim.ttl_ms`, which outlives the timestamp
window, so a replayed request is refused either for its nonce or for its age; the original
service's ``EXISTS``-then-``SETEX`` let ten concurrent replays through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import _patterns as patterns
from ._errors import RemoteProtocolError
from ._patterns import matcher
from ._units import epoch_ms

#: Accepted clock skew: 5 minutes in the past, 30 seconds in the future (SPEC section 3).
DEFAULT_MAX_PAST_MS = 5 * 60 * 1000
DEFAULT_MAX_FUTURE_MS = 30 * 1000

_UUID4 = matcher(patterns.UUID4)
_DIGITS = re.compile(r"[0-9]{1,16}\Z")


@dataclass(frozen=True, kw_only=True)
class NonceClaim:
    """Claim ``nonce`` atomically for ``ttl_ms``; if it was already claimed, refuse (403)."""

    nonce: str
    ttl_ms: int


@dataclass(frozen=True, kw_only=True)
class NonceAccepted:
    """The nonce was new: the request may proceed."""


@dataclass(frozen=True, kw_only=True)
class NonceReused:
    """The nonce was seen before: the request is a replay."""


def check_replay_headers(
    nonce: str | None,
    timestamp: str | None,
    *,
    now: float,
    max_past_ms: int = DEFAULT_MAX_PAST_MS,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> NonceClaim:
    """Validate the two headers and return the claim to make, or raise a 400."""
    if nonce is None or not _UUID4.match(nonce.lower()):
        raise RemoteProtocolError("X-Nonce must be a UUIDv4", code="INVALID_NONCE", field="X-Nonce")
    if timestamp is None or not _DIGITS.match(timestamp):
        raise RemoteProtocolError(
            "X-Timestamp must be milliseconds since the epoch",
            code="INVALID_TIMESTAMP",
            field="X-Timestamp",
        )
    skew = int(timestamp) - epoch_ms(now)
    if not -max_past_ms <= skew <= max_future_ms:
        raise RemoteProtocolError(
            "X-Timestamp is outside the accepted window (5 minutes past, 30 seconds ahead)",
            code="TIMESTAMP_OUT_OF_WINDOW",
            field="X-Timestamp",
        )
    # Long enough that the request's timestamp has left the window before the nonce is
    # forgotten, whatever the skew was.
    return NonceClaim(nonce=nonce.lower(), ttl_ms=max_past_ms + max_future_ms)


def decide_nonce(*, already_claimed: bool) -> NonceAccepted | NonceReused:
    """The outcome of the driver's atomic claim."""
    return NonceReused() if already_claimed else NonceAccepted()
