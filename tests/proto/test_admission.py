"""Admission at the door: the shared limiters all count a request or none does, the user's
bucket and the nonce decide apart, and every stored state has the expiry the rules give it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zeropay_proto import (
    FixedWindowState,
    NonceAccepted,
    NonceClaim,
    NonceReused,
    RateLimited,
    RequestAdmitted,
    SlidingWindowState,
    TokenBucketState,
    decide_token_bucket,
)
from zeropay_proto.admission import (
    Admission,
    AdmissionRequest,
    Limits,
    Quota,
    SharedLimiterStates,
    count_merchant_lock,
    decide_shared_limits,
    decide_user_bucket,
    nonce_kept_until_ms,
    token_bucket_kept,
)

W = 60_000
T = 1_800_000_000.0  # a window starts here
T_MS = int(T * 1000)
USER = "7d4c8f0e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"


def request(
    *, user: str | None = USER, merchant: str | None = None, **limits: int
) -> AdmissionRequest:
    return AdmissionRequest(
        now=T,
        client_ip="192.0.2.1",
        user_id=user,
        nonce=None,
        limits=Limits(window_ms=W, **{"global_limit": 0, "per_ip": 0, "per_user": 0, **limits}),
        merchant_id=merchant,
    )


def test_limits_in_force_depend_on_who_asks() -> None:
    anonymous = request(user=None, per_user=5, per_merchant=7, merchant_locks=3)
    assert (anonymous.per_user, anonymous.per_merchant, anonymous.merchant_lock_cap) == (0, 0, 0)
    assert not anonymous.meets_shared_limits
    merchant = request(merchant="m1", per_user=5, per_merchant=7, merchant_locks=3)
    assert (merchant.per_user, merchant.per_merchant, merchant.merchant_lock_cap) == (5, 7, 3)
    assert merchant.meets_shared_limits
    assert request(global_limit=1).meets_shared_limits


def test_every_shared_limiter_counts_an_admitted_request_with_its_expiry() -> None:
    shared = decide_shared_limits(
        SharedLimiterStates(),
        request(merchant="m1", global_limit=10, per_ip=10, per_merchant=10, merchant_locks=2),
    )
    assert shared.counted
    assert shared.global_kept is not None
    assert shared.global_kept.expires_at_ms == T_MS + W
    assert shared.ip_kept is not None
    assert shared.ip_kept.expires_at_ms == T_MS + 2 * W
    assert shared.merchant_kept is not None
    # A bucket one token short of full is full again after one token's refill (W / limit).
    assert shared.merchant_kept.expires_at_ms == T_MS + W // 10 + 1
    assert isinstance(shared.merchant_locks, RequestAdmitted)


def test_a_request_refused_by_one_shared_limiter_is_counted_by_none() -> None:
    full_ip = SlidingWindowState(window_start_ms=T_MS, current=1, previous=0)
    shared = decide_shared_limits(
        SharedLimiterStates(ip_window=full_ip), request(global_limit=10, per_ip=1)
    )
    assert not shared.counted
    assert isinstance(shared.global_decision, RequestAdmitted)
    assert isinstance(shared.ip_decision, RateLimited)
    assert (shared.global_kept, shared.ip_kept, shared.merchant_kept) == (None, None, None)


def test_a_merchant_at_its_lock_cap_is_refused_and_nothing_counts() -> None:
    locks = FixedWindowState(window_start_ms=T_MS, count=2)
    shared = decide_shared_limits(
        SharedLimiterStates(merchant_locks=locks),
        request(merchant="m1", global_limit=10, merchant_locks=2),
    )
    assert isinstance(shared.merchant_locks, RateLimited)
    assert not shared.counted
    assert shared.global_kept is None


def test_switched_off_limiters_decide_nothing() -> None:
    shared = decide_shared_limits(SharedLimiterStates(), request())
    assert shared.counted
    assert (shared.global_decision, shared.ip_decision, shared.merchant_decision) == (
        None,
        None,
        None,
    )
    assert shared.merchant_locks is None


def test_the_users_bucket_keeps_its_state_when_it_refuses() -> None:
    empty = TokenBucketState(level=0, updated_ms=T_MS)
    user = decide_user_bucket(empty, request(per_user=5))
    assert isinstance(user.decision, RateLimited)
    assert user.kept.state == user.decision.state
    assert user.kept.expires_at_ms == T_MS + W + 1  # empty: a whole window to refill


@given(
    limit=st.integers(1, 50),
    level=st.integers(0, 50 * W),
    elapsed=st.integers(0, 3 * W),
)
def test_a_bucket_is_forgotten_only_once_it_is_full_again(
    limit: int, level: int, elapsed: int
) -> None:
    """At its expiry a bucket decides as a missing one would; a millisecond earlier, it may
    not (the expiry is the earliest such time, give or take the rounding millisecond)."""
    state = TokenBucketState(level=min(level, limit * W), updated_ms=T_MS)
    kept = token_bucket_kept(state, limit, W)
    at = kept.expires_at_ms + elapsed
    forgotten = decide_token_bucket(None, now=at / 1000, limit=limit, window_ms=W)
    remembered = decide_token_bucket(state, now=at / 1000, limit=limit, window_ms=W)
    assert remembered == forgotten
    if state.level < limit * W - limit:
        early = decide_token_bucket(
            state, now=(kept.expires_at_ms - 2) / 1000, limit=limit, window_ms=W
        )
        assert early != decide_token_bucket(
            None, now=(kept.expires_at_ms - 2) / 1000, limit=limit, window_ms=W
        )


def test_a_nonce_outlives_its_claims_window() -> None:
    claim = NonceClaim(nonce="n", ttl_ms=330_000)
    assert nonce_kept_until_ms(claim, now=T) == T_MS + 330_000


def test_merchant_locks_count_without_a_cap_in_their_own_window() -> None:
    hour = 3_600_000
    first = count_merchant_lock(None, now=T, window_ms=hour)
    second = count_merchant_lock(first.state, now=T + 1, window_ms=hour)
    assert second.state.count == 2
    assert second.expires_at_ms == second.state.window_start_ms + hour


def test_an_admission_is_refused_by_any_limiter_or_a_reused_nonce() -> None:
    nothing = Admission.of(None, None, None)
    assert not nothing.refused
    assert nothing.limiter_decisions == []
    refused_ip = decide_shared_limits(
        SharedLimiterStates(ip_window=SlidingWindowState(window_start_ms=T_MS, current=1)),
        request(per_ip=1),
    )
    assert Admission.of(refused_ip, None, NonceAccepted()).rate_limited
    user = decide_user_bucket(None, request(per_user=5))
    admitted = Admission.of(None, user, NonceAccepted())
    assert not admitted.refused
    assert admitted.limiter_decisions == [user.decision]
    assert Admission.of(None, user, NonceReused()).refused
    locked_out = decide_shared_limits(
        SharedLimiterStates(merchant_locks=FixedWindowState(window_start_ms=T_MS, count=1)),
        request(merchant="m1", merchant_locks=1),
    )
    assert Admission.of(locked_out, None, None).rate_limited


def test_the_quota_is_the_tightest_limiter_and_the_wait_the_longest_refusal() -> None:
    assert Admission.of(None, None, None).quota is None
    assert Admission.of(None, None, None).retry_after_ms == 0
    roomy = decide_shared_limits(SharedLimiterStates(), request(global_limit=100, per_ip=10))
    user = decide_user_bucket(None, request(per_user=3))
    admitted = Admission.of(roomy, user, None)
    assert admitted.quota == Quota(limit=3, remaining=2, reset_after_ms=W // 3 + 1 - 1)
    assert admitted.retry_after_ms == 0
    full_ip = SlidingWindowState(window_start_ms=T_MS, current=10)
    refused = decide_shared_limits(
        SharedLimiterStates(ip_window=full_ip), request(global_limit=100, per_ip=10)
    )
    assert refused.ip_decision is not None
    limited = Admission.of(refused, user, None)
    assert limited.quota is not None
    assert limited.quota.remaining == 0
    assert limited.quota.limit == 10
    assert isinstance(refused.ip_decision, RateLimited)
    assert limited.retry_after_ms == refused.ip_decision.retry_after_ms
