"""Rate-limit decisions: the reference model that the Redis Lua scripts must agree with.

Three limiters guard every request (SPEC section 6), each a pure function
``(state, now, limit) -> decision`` whose decision carries the new state to store:

- **global fixed window** (:func:`decide_fixed_window`): ``RATE_LIMIT_GLOBAL`` per minute;
- **per-IP sliding window** (:func:`decide_sliding_window`): ``RATE_LIMIT_PER_IP`` per minute,
  estimated from two counters (this window's and the previous one's, the latter weighted by how
  much of it still overlaps the sliding minute), which costs O(1) memory where the original
  service kept a ZSET log keyed by millisecond and under-counted same-millisecond requests;
- **per-user token bucket** (:func:`decide_token_bucket`): ``RATE_LIMIT_PER_USER`` per minute,
  refilled continuously.

All arithmetic is on integers (milliseconds, and tokens scaled by the window length), so a Lua
script using Redis's doubles computes bit-for-bit the same values as Python: the differential
tests compare them exactly. A refused request changes no counter.

Clocks of several API instances can disagree slightly; a state stamped later than ``now`` is
treated as current (never as "expired"), so a lagging instance cannot reset a counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from ._errors import LocalProtocolError
from ._units import epoch_ms

#: Limits per minute from the seed's ``RATE_LIMIT_*`` defaults (design document, "Make Rate
#: Limiting Configurable"): global 1000, per IP 100, per user 50.
DEFAULT_RATE_LIMIT_GLOBAL = 1000
DEFAULT_RATE_LIMIT_PER_IP = 100
DEFAULT_RATE_LIMIT_PER_USER = 50
#: The seed's ``windowMs: 60000``.
DEFAULT_RATE_WINDOW_MS = 60_000


@dataclass(frozen=True, kw_only=True)
class FixedWindowState:
    """Requests counted in the window starting at ``window_start_ms``."""

    window_start_ms: int = 0
    count: int = 0


@dataclass(frozen=True, kw_only=True)
class SlidingWindowState:
    """Counts of the window starting at ``window_start_ms`` and of the one before it."""

    window_start_ms: int = 0
    current: int = 0
    previous: int = 0


@dataclass(frozen=True, kw_only=True)
class TokenBucketState:
    """``level`` in units of 1/window_ms of a token, as of ``updated_ms``.

    ``None`` in place of a state means a full bucket.
    """

    level: int
    updated_ms: int


StateT = TypeVar("StateT", FixedWindowState, SlidingWindowState, TokenBucketState)


@dataclass(frozen=True, kw_only=True)
class RequestAdmitted(Generic[StateT]):
    """The limiter let the request through; store ``state``."""

    state: StateT
    limit: int
    remaining: int
    reset_after_ms: int


@dataclass(frozen=True, kw_only=True)
class RateLimited(Generic[StateT]):
    """The limiter refused the request; ``retry_after_ms`` is when it would admit one."""

    state: StateT
    limit: int
    retry_after_ms: int
    reset_after_ms: int


def _check(limit: int, window_ms: int) -> None:
    if limit < 1 or window_ms < 1:
        raise LocalProtocolError("a limiter needs a positive limit and window")


def decide_fixed_window(
    state: FixedWindowState | None,
    *,
    now: float,
    limit: int,
    window_ms: int = DEFAULT_RATE_WINDOW_MS,
) -> RequestAdmitted[FixedWindowState] | RateLimited[FixedWindowState]:
    """At most ``limit`` requests per aligned window of ``window_ms``."""
    _check(limit, window_ms)
    now_ms = epoch_ms(now)
    start = now_ms - now_ms % window_ms
    count = 0
    if state is not None and state.window_start_ms >= start:
        start, count = state.window_start_ms, state.count
    reset_after = start + window_ms - now_ms
    if count < limit:
        return RequestAdmitted(
            state=FixedWindowState(window_start_ms=start, count=count + 1),
            limit=limit,
            remaining=limit - count - 1,
            reset_after_ms=reset_after,
        )
    return RateLimited(
        state=FixedWindowState(window_start_ms=start, count=count),
        limit=limit,
        retry_after_ms=reset_after,
        reset_after_ms=reset_after,
    )


def decide_sliding_window(
    state: SlidingWindowState | None,
    *,
    now: float,
    limit: int,
    window_ms: int = DEFAULT_RATE_WINDOW_MS,
) -> RequestAdmitted[SlidingWindowState] | RateLimited[SlidingWindowState]:
    """At most ``limit`` requests per sliding ``window_ms``, by the two-counter estimate
    ``previous * (window - elapsed) / window + current``."""
    _check(limit, window_ms)
    now_ms = epoch_ms(now)
    start = now_ms - now_ms % window_ms
    current = previous = 0
    if state is not None:
        if state.window_start_ms >= start:
            start, current, previous = state.window_start_ms, state.current, state.previous
        elif state.window_start_ms == start - window_ms:
            previous = state.current
    elapsed = max(0, now_ms - start)
    reset_after = start + window_ms - now_ms
    # The estimate times window_ms, kept integral.
    weighted = previous * (window_ms - elapsed) + current * window_ms
    if weighted + window_ms <= limit * window_ms:
        return RequestAdmitted(
            state=SlidingWindowState(window_start_ms=start, current=current + 1, previous=previous),
            limit=limit,
            remaining=(limit * window_ms - weighted - window_ms) // window_ms,
            reset_after_ms=reset_after,
        )
    if current < limit:
        # Admitted once the previous window's weight has decayed enough, within this window:
        # previous * (window - e) <= (limit - current - 1) * window.
        room = (limit - current - 1) * window_ms
        retry_after = window_ms - room // previous - elapsed
    else:
        # Only in the next window, where this window's count becomes the weighted one.
        retry_after = reset_after + window_ms - ((limit - 1) * window_ms) // current
    return RateLimited(
        state=SlidingWindowState(window_start_ms=start, current=current, previous=previous),
        limit=limit,
        retry_after_ms=max(1, retry_after),
        reset_after_ms=reset_after,
    )


def decide_token_bucket(
    state: TokenBucketState | None,
    *,
    now: float,
    limit: int,
    window_ms: int = DEFAULT_RATE_WINDOW_MS,
) -> RequestAdmitted[TokenBucketState] | RateLimited[TokenBucketState]:
    """A bucket of ``limit`` tokens refilled at ``limit`` per ``window_ms``; one per request.

    One token is ``window_ms`` units and the refill is ``limit`` units per millisecond, so
    every quantity is an integer.
    """
    _check(limit, window_ms)
    now_ms = epoch_ms(now)
    full = limit * window_ms
    if state is None:
        level, updated = full, now_ms
    else:
        elapsed = max(0, now_ms - state.updated_ms)
        level = min(full, state.level + elapsed * limit)
        updated = max(state.updated_ms, now_ms)
    if level >= window_ms:
        level -= window_ms
        return RequestAdmitted(
            state=TokenBucketState(level=level, updated_ms=updated),
            limit=limit,
            remaining=level // window_ms,
            reset_after_ms=-((level - full) // limit),
        )
    return RateLimited(
        state=TokenBucketState(level=level, updated_ms=updated),
        limit=limit,
        retry_after_ms=-((level - window_ms) // limit),
        reset_after_ms=-((level - full) // limit),
    )
