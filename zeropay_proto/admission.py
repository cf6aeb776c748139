"""Admission at the door: which limiters count a request, whom they charge, and how long
each state is kept.

Limiters only ever spend for the caller. A request is charged to who is accountable for it,
never to someone it merely names:

- an **anonymous** request (a payer's verify, a session's status, a passkey registration by
  grant) to its address: the per-IP sliding window, then the global fixed window;
- a **bearer** request (the user's own token) to its address as well, and to the user's bucket
  *at that address* (:attr:`AdmissionRequest.charged_user`): a stolen token drains only the
  thief's share;
- a **merchant** request (an ``X-API-Key`` route) to the merchant's own budget: its token
  bucket, its failure budget (read here, spent by :func:`reserve_merchant_failure`), and the
  bucket of each user it names *for that merchant*. Per-IP and global limits, which exist for
  anonymous traffic, do not apply: one merchant's backend is one address.

Every limiter of a request decides together (:func:`decide_shared_limits`) over states kept in
one place (one Redis hash slot): all of them count the request, or none does. A refused request
spends nothing anywhere.

The global limit cannot be taken by a few addresses: it only counts what an address sends
beyond its first :attr:`Limits.global_reserve` requests of a window, so a light client (a payer
makes a handful of requests a minute) is never refused by it, whatever heavy clients do. It is
split into :attr:`Limits.shards` shards by the address's hash, each with its share of the limit,
so the state of the whole limit is never in one place (in Redis, one slot).

A merchant is accountable for the verifications that fail in its sessions
(:func:`reserve_merchant_failure`): each verify of one of its sessions reserves a failure in
the merchant's sliding window before anything is compared, and the reservation is given back
unless the attempt failed (:func:`refund_merchant_failure`). Once the window holds
``merchant_failures``, its sessions' verifies and its new sessions are refused: no number of
open sessions can run past the budget, and no other merchant's failures count against it.
The per-account rule (five failures lock the account, PSD2 RTS article 4) is the session's,
and unchanged.

The nonce is single-use (:func:`~zeropay_proto.replay.decide_nonce`), whatever the limiters
said, and kept until :func:`nonce_kept_until_ms`.

Each state to store comes with its expiry (:class:`Kept`): a fixed window is kept to its end, a
sliding window one window longer (the next window weighs it), and a bucket until it would be
full again anyway, when forgetting it changes nothing. The Redis scripts transcribe these
functions; the adapter checks every reply against them at run time.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Generic

from ._errors import LocalProtocolError
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

#: The global limit's shards (``RATE_LIMIT_SHARDS``): with the seed's 1,000 a minute, each
#: shard's share (125) stays above the per-IP limit (100), so one address meets its own limit
#: first; eight shards spread over any Cluster of up to eight masters.
DEFAULT_RATE_LIMIT_SHARDS = 8
#: Requests of a window that an address sends before the global limit counts it
#: (``RATE_LIMIT_GLOBAL_RESERVE``): more than a payer makes in a minute (status polls, a
#: verify, a retry), so no payer is refused because heavy clients filled the global limit.
DEFAULT_GLOBAL_RESERVE = 10
#: Wrong merchant keys an address may present per window (``RATE_LIMIT_AUTH_FAILURES``).
DEFAULT_AUTH_FAILURES_PER_IP = 10
#: Failed verifications in one merchant's sessions per window before its sessions are refused
#: (``MERCHANT_FAILURES_PER_HOUR``): 20 accounts' worth of PSD2's five failures.
DEFAULT_MERCHANT_FAILURES = 100
#: The merchant failure budget's sliding window: an hour.
DEFAULT_MERCHANT_FAILURE_WINDOW_MS = 3_600_000
#: How long limiters whose state cannot be reached admit without counting
#: (``RATE_LIMIT_FAIL_OPEN_SECONDS``): a Cluster master's failover takes a few seconds, and
#: for those the users whose own keys are elsewhere keep paying; a longer outage refuses.
DEFAULT_LIMITER_FAIL_OPEN_MS = 30_000


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-window limits (``RATE_LIMIT_*``); a limit of 0 switches that limiter off.

    Anonymous and bearer routes meet ``per_ip`` and ``global_limit`` (split over ``shards``,
    counting an address only beyond its ``global_reserve``); merchant routes meet
    ``per_merchant`` and the merchant's failure budget (``merchant_failures`` per
    ``failure_window_ms``); ``per_user`` is each accountable caller's budget for one user.
    ``auth_failures`` bounds the wrong merchant keys one address may present per window.
    """

    global_limit: int
    per_ip: int
    per_user: int
    window_ms: int
    per_merchant: int = 0
    merchant_failures: int = 0
    failure_window_ms: int = DEFAULT_MERCHANT_FAILURE_WINDOW_MS
    shards: int = DEFAULT_RATE_LIMIT_SHARDS
    global_reserve: int = DEFAULT_GLOBAL_RESERVE
    auth_failures: int = DEFAULT_AUTH_FAILURES_PER_IP
    fail_open_ms: int = DEFAULT_LIMITER_FAIL_OPEN_MS

    def __post_init__(self) -> None:
        if self.shards < 1 or self.global_reserve < 0 or self.failure_window_ms < 1:
            raise LocalProtocolError("limits need a shard, a reserve and a failure window")

    @property
    def global_shard_limit(self) -> int:
        """Each shard's share of the global limit, rounded up (0: off)."""
        return -(-self.global_limit // self.shards)


@dataclass(frozen=True, kw_only=True)
class AdmissionRequest:
    """One request at the door: who, from where, with which nonce (state-changing routes),
    and who is accountable for it (module docstring)."""

    now: float
    client_ip: str
    #: The user the request names (its session's, or its enrollment's).
    user_id: str | None
    nonce: NonceClaim | None
    limits: Limits
    #: The authenticated merchant on merchant routes (its budget applies), else ``None``.
    merchant_id: str | None = None
    #: Whether the caller is accountable for ``user_id`` (a merchant naming its user, or the
    #: user's own token), so that the caller's bucket for that user counts the request. An
    #: anonymous request only names a user, and charges no user's bucket.
    charged_user: bool = False

    @property
    def anonymous_limits(self) -> bool:
        """Whether the per-IP and global limits apply (every route but the merchants')."""
        return self.merchant_id is None

    @property
    def per_ip(self) -> int:
        return self.limits.per_ip if self.anonymous_limits else 0

    @property
    def global_limit(self) -> int:
        """This request's shard's share of the global limit (0: off here)."""
        return self.limits.global_shard_limit if self.anonymous_limits else 0

    @property
    def per_user(self) -> int:
        """The caller's limit for the named user (0: off, no user, or not accountable)."""
        charged = self.charged_user and self.user_id is not None
        return self.limits.per_user if charged else 0

    @property
    def per_merchant(self) -> int:
        """The merchant's request limit in force (0: off, or not a merchant route)."""
        return self.limits.per_merchant if self.merchant_id is not None else 0

    @property
    def merchant_failures(self) -> int:
        """The merchant's failure budget in force (0: off, or not a merchant route)."""
        return self.limits.merchant_failures if self.merchant_id is not None else 0

    @property
    def meets_shared_limits(self) -> bool:
        """Whether any limiter is switched on for this request."""
        return bool(
            self.per_ip
            or self.global_limit
            or self.per_merchant
            or self.merchant_failures
            or self.per_user
        )


def limiter_fails_open(down_since_ms: int, *, now: float, limits: Limits) -> bool:
    """Whether limiters whose state has been unreachable since ``down_since_ms`` admit
    without counting (fail open) rather than refuse (503): for :attr:`Limits.fail_open_ms`.

    Only limiters of throughput and of a merchant's budget fail open: they bound how much is
    asked, not what may be guessed. A user's lockout and the nonce are in the user's own
    slot, read and written with the session, and always fail closed."""
    return epoch_ms(now) - down_since_ms < limits.fail_open_ms


def shard_of(client_ip: str, shards: int) -> int:
    """The global limit's shard an address is counted in (stable, spread by CRC-32)."""
    return zlib.crc32(client_ip.encode()) % shards


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
    """The request's limiters' stored states, as read (``None``: nothing stored)."""

    ip_window: SlidingWindowState | None = None
    global_window: FixedWindowState | None = None
    merchant_bucket: TokenBucketState | None = None
    merchant_failures: SlidingWindowState | None = None
    user_bucket: TokenBucketState | None = None


@dataclass(frozen=True, kw_only=True)
class SharedLimitsDecided:
    """The limiters' decisions (``None``: switched off, or the global limit not reached by
    this address's reserve) and what to store: the ``*_kept`` states are set only when
    :attr:`counted`. ``merchant_failures`` is only read here."""

    ip_decision: SlidingDecision | None
    global_decision: FixedDecision | None
    merchant_decision: BucketDecision | None
    merchant_failures: SlidingDecision | None
    user_decision: BucketDecision | None
    #: Every limiter admitted, so each counted the request.
    counted: bool
    ip_kept: Kept[SlidingWindowState] | None
    global_kept: Kept[FixedWindowState] | None
    merchant_kept: Kept[TokenBucketState] | None
    user_kept: Kept[TokenBucketState] | None


def beyond_reserve(ip: SlidingDecision | None, reserve: int) -> bool:
    """Whether the global limit counts this request: its address admitted it past the first
    ``reserve`` of its window (always, where per-IP is off; never, where per-IP refused)."""
    if ip is None:
        return True
    return isinstance(ip, RequestAdmitted) and ip.state.current > reserve


def decide_shared_limits(
    read: SharedLimiterStates, request: AdmissionRequest
) -> SharedLimitsDecided:
    """Every limiter of the request decides, the address's before the global one; all count
    the request, or none does."""
    limits, now, window = request.limits, request.now, request.limits.window_ms
    ip = g = m = mf = u = None
    if request.per_ip:
        ip = decide_sliding_window(read.ip_window, now=now, limit=request.per_ip, window_ms=window)
    if request.global_limit and beyond_reserve(ip, limits.global_reserve):
        g = decide_fixed_window(
            read.global_window, now=now, limit=request.global_limit, window_ms=window
        )
    if request.per_merchant:
        m = decide_token_bucket(
            read.merchant_bucket, now=now, limit=request.per_merchant, window_ms=window
        )
    if request.merchant_failures:
        mf = decide_sliding_window(
            read.merchant_failures,
            now=now,
            limit=request.merchant_failures,
            window_ms=limits.failure_window_ms,
        )
    if request.per_user:
        u = decide_token_bucket(read.user_bucket, now=now, limit=request.per_user, window_ms=window)
    counted = not any(isinstance(d, RateLimited) for d in (ip, g, m, mf, u))
    return SharedLimitsDecided(
        ip_decision=ip,
        global_decision=g,
        merchant_decision=m,
        merchant_failures=mf,
        user_decision=u,
        counted=counted,
        ip_kept=sliding_window_kept(ip.state, window) if counted and ip else None,
        global_kept=fixed_window_kept(g.state, window) if counted and g else None,
        merchant_kept=(
            token_bucket_kept(m.state, request.per_merchant, window) if counted and m else None
        ),
        user_kept=token_bucket_kept(u.state, request.per_user, window) if counted and u else None,
    )


def decide_auth_failure(
    read: SlidingWindowState | None, *, now: float, limits: Limits
) -> tuple[SlidingDecision, Kept[SlidingWindowState] | None]:
    """A wrong merchant key from an address: counted in the address's window of failures
    (what to store, ``None`` once refused). Refused past :attr:`Limits.auth_failures`: the
    address then gets 429 for wrong keys, while a right key from it still works (an attacker
    sharing a merchant's address cannot lock the merchant out)."""
    window = limits.window_ms
    decision = decide_sliding_window(read, now=now, limit=limits.auth_failures, window_ms=window)
    if isinstance(decision, RateLimited):
        return decision, None
    return decision, sliding_window_kept(decision.state, window)


def reserve_merchant_failure(
    read: SlidingWindowState | None, *, now: float, limits: Limits
) -> tuple[SlidingDecision, Kept[SlidingWindowState] | None]:
    """Before a verify of a merchant's session compares anything: one failure reserved in the
    merchant's budget (what to store), or refused once the budget is spent (nothing stored).
    Reserved atomically, so no number of concurrent verifies runs past the budget."""
    window = limits.failure_window_ms
    decision = decide_sliding_window(
        read, now=now, limit=limits.merchant_failures, window_ms=window
    )
    if isinstance(decision, RateLimited):
        return decision, None
    return decision, sliding_window_kept(decision.state, window)


def refund_merchant_failure(
    read: SlidingWindowState | None, *, reserved_window_ms: int, limits: Limits
) -> Kept[SlidingWindowState] | None:
    """A reserved failure that did not happen (the attempt succeeded, was closed by another,
    or met an outage) is taken back from the window it was counted in: this window's count,
    or the previous one's once the window moved on; nothing once it is older, or gone.
    ``None``: nothing to store."""
    window = limits.failure_window_ms
    if read is None:
        return None
    if read.window_start_ms == reserved_window_ms and read.current > 0:
        state = SlidingWindowState(
            window_start_ms=read.window_start_ms, current=read.current - 1, previous=read.previous
        )
    elif read.window_start_ms == reserved_window_ms + window and read.previous > 0:
        state = SlidingWindowState(
            window_start_ms=read.window_start_ms, current=read.current, previous=read.previous - 1
        )
    else:
        return None
    return sliding_window_kept(state, window)


def nonce_kept_until_ms(claim: NonceClaim, *, now: float) -> int:
    """A claimed nonce is kept long enough to outlive its timestamp's window."""
    return epoch_ms(now) + claim.ttl_ms


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
    merchant_failures: SlidingDecision | None = None
    #: The limiters' state could not be reached and they admitted without counting
    #: (:func:`limiter_fails_open`).
    failed_open: bool = False

    @classmethod
    def of(
        cls,
        shared: SharedLimitsDecided | None,
        nonce: NonceAccepted | NonceReused | None,
        *,
        failed_open: bool = False,
    ) -> Admission:
        """The admission made of the two independent decisions (``None``: not taken)."""
        return cls(
            failed_open=failed_open,
            global_decision=shared.global_decision if shared else None,
            ip_decision=shared.ip_decision if shared else None,
            merchant_decision=shared.merchant_decision if shared else None,
            merchant_failures=shared.merchant_failures if shared else None,
            user_decision=shared.user_decision if shared else None,
            nonce=nonce,
        )

    @property
    def refused(self) -> bool:
        """Whether the request must stop here: rate limited, or its nonce was reused."""
        return self.rate_limited or isinstance(self.nonce, NonceReused)

    @property
    def limiter_decisions(self) -> list[RequestAdmitted[Any] | RateLimited[Any]]:
        """The request limiters that decided (the merchant failure budget is not one: it
        counts failures, not requests)."""
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
        return isinstance(self.merchant_failures, RateLimited) or any(
            isinstance(d, RateLimited) for d in self.limiter_decisions
        )
