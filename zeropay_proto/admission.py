"""Admission at the door: which limiters count a request, and how long each state is kept.

A request meets up to six decisions (SPEC section 6, and the merchant measures of issue 3):

- **the shared limiters** decide together (:func:`decide_shared_limits`): the global fixed
  window, the per-IP sliding window and, on merchant routes, the merchant's token bucket and its
  lock cap. Either every one admits and every one counts the request, or none counts it: a
  request refused by one limiter consumes nothing from the others. The lock cap is only read
  here (it counts the accounts a merchant's sessions locked, :func:`count_merchant_lock`);
- **the per-user token bucket** counts every request, admitted or not
  (:func:`decide_user_bucket`), so that hammering one user costs the hammerer;
- **the nonce** is single-use (:func:`~zeropay_proto.replay.decide_nonce`), whatever the
  limiters said, and kept until :func:`nonce_kept_until_ms`.

Each state to store comes with its expiry (:class:`Kept`): a fixed window is kept to its end, a
sliding window one window longer (the next window weighs it), and a bucket until it would be
full again anyway, when forgetting it changes nothing. The Redis scripts transcribe these
functions; the adapter checks every reply against them at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from ._units import epoch_ms
from .ratelimit import (
    FixedWindowState,
    RateLimited,
    RequestAdmitted,
    SlidingWindowState,
    StateT,
    TokenBucketState,
    decide_fixed_window,
    decide_sliding_window,
    decide_token_bucket,
)
from .replay import NonceAccepted, NonceClaim, NonceReused

#: Effectively no limit: the lock cap's window only counts (:func:`count_merchant_lock`).
UNCAPPED = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-window limits (``RATE_LIMIT_*``); a limit of 0 switches that limiter off.

    On merchant routes also: ``per_merchant`` requests per window, and ``merchant_locks``:
    once a merchant's sessions locked that many accounts within ``lock_window_ms``, its new
    sessions are refused until the window ends (the measure against targeted lockout).
    """

    global_limit: int
    per_ip: int
    per_user: int
    window_ms: int
    per_merchant: int = 0
    merchant_locks: int = 0
    lock_window_ms: int = 3_600_000


@dataclass(frozen=True, kw_only=True)
class AdmissionRequest:
    """One request at the door: who, from where, with which nonce (state-changing routes)."""

    now: float
    client_ip: str
    user_id: str | None
    nonce: NonceClaim | None
    limits: Limits
    #: The authenticated merchant on merchant routes (its limits apply), else ``None``.
    merchant_id: str | None = None

    @property
    def per_user(self) -> int:
        """The per-user limit in force (0: off, or no user named)."""
        return self.limits.per_user if self.user_id is not None else 0

    @property
    def per_merchant(self) -> int:
        """The merchant's request limit in force (0: off, or not a merchant route)."""
        return self.limits.per_merchant if self.merchant_id is not None else 0

    @property
    def merchant_lock_cap(self) -> int:
        """The merchant's lock cap in force (0: off, or not a merchant route)."""
        return self.limits.merchant_locks if self.merchant_id is not None else 0

    @property
    def meets_shared_limits(self) -> bool:
        """Whether any shared limiter is switched on for this request."""
        limits = self.limits
        return bool(
            limits.global_limit or limits.per_ip or self.per_merchant or self.merchant_lock_cap
        )


@dataclass(frozen=True, kw_only=True)
class Kept(Generic[StateT]):
    """A limiter state to store, and when to forget it (epoch milliseconds)."""

    state: StateT
    expires_at_ms: int


def fixed_window_kept(state: FixedWindowState, window_ms: int) -> Kept[FixedWindowState]:
    """A fixed window matters until it ends."""
    return Kept(state=state, expires_at_ms=state.window_start_ms + window_ms)


def sliding_window_kept(state: SlidingWindowState, window_ms: int) -> Kept[SlidingWindowState]:
    """A sliding window's count is the next window's ``previous``: kept two windows."""
    return Kept(state=state, expires_at_ms=state.window_start_ms + 2 * window_ms)


def token_bucket_kept(
    state: TokenBucketState, limit: int, window_ms: int
) -> Kept[TokenBucketState]:
    """A bucket is kept until it would be full again: forgetting it then changes nothing."""
    refill_ms = -((state.level - limit * window_ms) // limit)
    return Kept(state=state, expires_at_ms=state.updated_ms + refill_ms + 1)


FixedDecision = RequestAdmitted[FixedWindowState] | RateLimited[FixedWindowState]
SlidingDecision = RequestAdmitted[SlidingWindowState] | RateLimited[SlidingWindowState]
BucketDecision = RequestAdmitted[TokenBucketState] | RateLimited[TokenBucketState]


@dataclass(frozen=True, kw_only=True)
class SharedLimiterStates:
    """The shared limiters' stored states, as read (``None``: nothing stored)."""

    global_window: FixedWindowState | None = None
    ip_window: SlidingWindowState | None = None
    merchant_bucket: TokenBucketState | None = None
    merchant_locks: FixedWindowState | None = None


@dataclass(frozen=True, kw_only=True)
class SharedLimitsDecided:
    """The shared limiters' decisions (``None``: switched off) and what to store: the
    ``*_kept`` states are set only when :attr:`counted`."""

    global_decision: FixedDecision | None
    ip_decision: SlidingDecision | None
    merchant_decision: BucketDecision | None
    merchant_locks: FixedDecision | None
    #: Every limiter admitted, so each counted the request.
    counted: bool
    global_kept: Kept[FixedWindowState] | None
    ip_kept: Kept[SlidingWindowState] | None
    merchant_kept: Kept[TokenBucketState] | None


def decide_shared_limits(
    read: SharedLimiterStates, request: AdmissionRequest
) -> SharedLimitsDecided:
    """Every shared limiter switched on decides; all count the request, or none does."""
    limits, now, window = request.limits, request.now, request.limits.window_ms
    g = ip = m = ml = None
    if limits.global_limit:
        g = decide_fixed_window(
            read.global_window, now=now, limit=limits.global_limit, window_ms=window
        )
    if limits.per_ip:
        ip = decide_sliding_window(read.ip_window, now=now, limit=limits.per_ip, window_ms=window)
    if request.per_merchant:
        m = decide_token_bucket(
            read.merchant_bucket, now=now, limit=request.per_merchant, window_ms=window
        )
    if request.merchant_lock_cap:
        ml = decide_fixed_window(
            read.merchant_locks,
            now=now,
            limit=request.merchant_lock_cap,
            window_ms=limits.lock_window_ms,
        )
    counted = not any(isinstance(d, RateLimited) for d in (g, ip, m, ml))
    return SharedLimitsDecided(
        global_decision=g,
        ip_decision=ip,
        merchant_decision=m,
        merchant_locks=ml,
        counted=counted,
        global_kept=fixed_window_kept(g.state, window) if counted and g else None,
        ip_kept=sliding_window_kept(ip.state, window) if counted and ip else None,
        merchant_kept=(
            token_bucket_kept(m.state, request.per_merchant, window) if counted and m else None
        ),
    )


@dataclass(frozen=True, kw_only=True)
class UserBucketDecided:
    """The per-user bucket's decision; its state is stored either way."""

    decision: BucketDecision
    kept: Kept[TokenBucketState]


def decide_user_bucket(
    read: TokenBucketState | None, request: AdmissionRequest
) -> UserBucketDecided:
    """The user's bucket counts the request (a refused one too: it holds the state)."""
    limit, window = request.per_user, request.limits.window_ms
    decision = decide_token_bucket(read, now=request.now, limit=limit, window_ms=window)
    return UserBucketDecided(
        decision=decision, kept=token_bucket_kept(decision.state, limit, window)
    )


def nonce_kept_until_ms(claim: NonceClaim, *, now: float) -> int:
    """A claimed nonce is kept long enough to outlive its timestamp's window."""
    return epoch_ms(now) + claim.ttl_ms


def count_merchant_lock(
    read: FixedWindowState | None, *, now: float, window_ms: int
) -> Kept[FixedWindowState]:
    """One more account locked by a merchant's sessions, in the lock cap's window."""
    counted = decide_fixed_window(read, now=now, limit=UNCAPPED, window_ms=window_ms)
    return fixed_window_kept(counted.state, window_ms)


@dataclass(frozen=True, kw_only=True)
class Quota:
    """What the tightest request limiter leaves (the ``X-RateLimit-*`` figures)."""

    limit: int
    remaining: int
    reset_after_ms: int


@dataclass(frozen=True, kw_only=True)
class Admission:
    """The limiters' decisions (those switched on) and the nonce's."""

    global_decision: FixedDecision | None
    ip_decision: SlidingDecision | None
    user_decision: BucketDecision | None
    nonce: NonceAccepted | NonceReused | None
    merchant_decision: BucketDecision | None = None
    merchant_locks: FixedDecision | None = None

    @classmethod
    def of(
        cls,
        shared: SharedLimitsDecided | None,
        user: UserBucketDecided | None,
        nonce: NonceAccepted | NonceReused | None,
    ) -> Admission:
        """The admission made of the three independent decisions (``None``: not taken)."""
        return cls(
            global_decision=shared.global_decision if shared else None,
            ip_decision=shared.ip_decision if shared else None,
            merchant_decision=shared.merchant_decision if shared else None,
            merchant_locks=shared.merchant_locks if shared else None,
            user_decision=user.decision if user else None,
            nonce=nonce,
        )

    @property
    def refused(self) -> bool:
        """Whether the request must stop here: rate limited, or its nonce was reused."""
        return self.rate_limited or isinstance(self.nonce, NonceReused)

    @property
    def limiter_decisions(self) -> list[RequestAdmitted[Any] | RateLimited[Any]]:
        """The request limiters that decided (the merchant lock cap is not one: it counts
        locks, not requests)."""
        decisions = (
            self.global_decision,
            self.ip_decision,
            self.user_decision,
            self.merchant_decision,
        )
        return [d for d in decisions if d is not None]

    @property
    def quota(self) -> Quota | None:
        """The tightest request limiter's figures: a refusing one, else the one with the
        fewest requests remaining (``None``: no limiter decided)."""
        decisions = self.limiter_decisions
        if not decisions:
            return None
        tightest = min(decisions, key=lambda d: 0 if isinstance(d, RateLimited) else d.remaining)
        remaining = 0 if isinstance(tightest, RateLimited) else tightest.remaining
        return Quota(
            limit=tightest.limit, remaining=remaining, reset_after_ms=tightest.reset_after_ms
        )

    @property
    def retry_after_ms(self) -> int:
        """How long until every refusing request limiter would admit (0: none refused)."""
        refused = [d.retry_after_ms for d in self.limiter_decisions if isinstance(d, RateLimited)]
        return max(refused, default=0)

    @property
    def rate_limited(self) -> bool:
        """Whether any limiter refused."""
        return isinstance(self.merchant_locks, RateLimited) or any(
            isinstance(d, RateLimited) for d in self.limiter_decisions
        )
