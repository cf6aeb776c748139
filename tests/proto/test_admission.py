"""Admission at the door: limiters spend only for the caller (its address, its merchant's
budget, its own bucket for a user it is accountable for), all of a request's limiters count
it or none does, the global limit never refuses an address within its reserve, a merchant's
failure budget is reserved before anything is compared and refunded when no failure
happened, and every stored state has the expiry the rules give it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeropay_proto import (
    FixedWindowState,
    LocalProtocolError,
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
    beyond_reserve,
    decide_auth_failure,
    decide_shared_limits,
    limiter_fails_open,
    nonce_kept_until_ms,
    refund_merchant_failure,
    reserve_merchant_failure,
    shard_of,
    token_bucket_kept,
)

W = 60_000
HOUR = 3_600_000
T = 1_800_000_000.0  # a window starts here, and an hour does
T_MS = int(T * 1000)
USER = "7d4c8f0e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"


def limits(**given: int) -> Limits:
    return Limits(
        window_ms=W, **{"global_limit": 0, "per_ip": 0, "per_user": 0, "shards": 1, **given}
    )


def request(
    *,
    user: str | None = USER,
    merchant: str | None = None,
    charged: bool = False,
    now: float = T,
    **given: int,
) -> AdmissionRequest:
    return AdmissionRequest(
        now=now,
        client_ip="192.0.2.1",
        user_id=user,
        nonce=None,
        limits=limits(**given),
        merchant_id=merchant,
        charged_user=charged,
    )


def test_limits_in_force_depend_on_who_is_accountable() -> None:
    def every(merchant: str | None = None, *, charged: bool = False) -> AdmissionRequest:
        return request(
            merchant=merchant,
            charged=charged,
            global_limit=9,
            per_ip=8,
            per_user=5,
            per_merchant=7,
            merchant_failures=3,
        )

    anonymous = every()
    assert (anonymous.per_ip, anonymous.global_limit, anonymous.per_user) == (8, 9, 0)
    assert (anonymous.per_merchant, anonymous.merchant_failures) == (0, 0)
    bearer = every(charged=True)
    assert (bearer.per_ip, bearer.per_user) == (8, 5)
    merchant = every("m1", charged=True)
    assert (merchant.per_ip, merchant.global_limit) == (0, 0)  # its own budget instead
    assert (merchant.per_merchant, merchant.merchant_failures, merchant.per_user) == (7, 3, 5)
    assert request(user=None, charged=True, per_user=5).per_user == 0
    assert not request().meets_shared_limits
    assert request(global_limit=1).meets_shared_limits


def test_the_global_limit_is_shared_out_and_its_shards_are_stable() -> None:
    assert Limits(global_limit=1000, per_ip=0, per_user=0, window_ms=W).global_shard_limit == 125
    assert limits(global_limit=10, shards=3).global_shard_limit == 4  # rounded up
    assert shard_of("192.0.2.1", 8) == shard_of("192.0.2.1", 8)
    assert len({shard_of(f"10.0.0.{n}", 8) for n in range(64)}) == 8
    with pytest.raises(LocalProtocolError):
        limits(shards=0)


def test_every_limiter_counts_an_admitted_request_with_its_expiry() -> None:
    shared = decide_shared_limits(
        SharedLimiterStates(),
        request(global_limit=10, per_ip=10, per_user=10, charged=True, global_reserve=0),
    )
    assert shared.counted
    assert shared.global_kept is not None
    assert shared.global_kept.expires_at_ms == T_MS + W
    assert shared.ip_kept is not None
    assert shared.ip_kept.expires_at_ms == T_MS + 2 * W
    assert shared.user_kept is not None
    # A bucket one token short of full is full again after one token's refill (W / limit).
    assert shared.user_kept.expires_at_ms == T_MS + W // 10 + 1
    merchant = decide_shared_limits(
        SharedLimiterStates(), request(merchant="m1", per_merchant=10, merchant_failures=2)
    )
    assert merchant.merchant_kept is not None
    assert isinstance(merchant.merchant_failures, RequestAdmitted)  # read, never counted here


def test_a_request_refused_by_one_limiter_is_counted_by_none() -> None:
    empty = TokenBucketState(level=0, updated_ms=T_MS)
    shared = decide_shared_limits(
        SharedLimiterStates(user_bucket=empty),
        request(global_limit=10, per_ip=10, per_user=5, charged=True, global_reserve=0),
    )
    assert not shared.counted
    assert isinstance(shared.ip_decision, RequestAdmitted)
    assert isinstance(shared.user_decision, RateLimited)
    assert (shared.ip_kept, shared.global_kept, shared.user_kept) == (None, None, None)


def test_the_global_limit_counts_an_address_only_beyond_its_reserve() -> None:
    full = FixedWindowState(window_start_ms=T_MS, count=10)
    light = SlidingWindowState(window_start_ms=T_MS, current=2)
    heavy = SlidingWindowState(window_start_ms=T_MS, current=3)
    asked = request(global_limit=10, per_ip=100, global_reserve=3)
    within = decide_shared_limits(SharedLimiterStates(ip_window=light, global_window=full), asked)
    assert within.counted  # its third request: the full global limit is not consulted
    assert within.global_decision is None
    beyond = decide_shared_limits(SharedLimiterStates(ip_window=heavy, global_window=full), asked)
    assert isinstance(beyond.global_decision, RateLimited)
    assert not beyond.counted
    assert beyond.ip_kept is None  # refused: the address's own window spends nothing either
    assert beyond_reserve(None, 3)  # no per-IP limit: every request is counted
    refused_ip = decide_shared_limits(
        SharedLimiterStates(ip_window=SlidingWindowState(window_start_ms=T_MS, current=100)),
        asked,
    )
    assert isinstance(refused_ip.ip_decision, RateLimited)
    assert refused_ip.global_decision is None  # the address's limit decides first


def test_a_merchant_whose_failure_budget_is_spent_opens_no_session() -> None:
    spent = SlidingWindowState(window_start_ms=T_MS, current=2)
    shared = decide_shared_limits(
        SharedLimiterStates(merchant_failures=spent),
        request(merchant="m1", per_merchant=10, merchant_failures=2),
    )
    assert isinstance(shared.merchant_failures, RateLimited)
    assert not shared.counted
    assert shared.merchant_kept is None


def test_a_failure_is_reserved_until_the_budget_is_spent_then_refused() -> None:
    budget = limits(merchant_failures=2)
    first, kept = reserve_merchant_failure(None, now=T, limits=budget)
    assert isinstance(first, RequestAdmitted)
    assert kept is not None
    assert kept.expires_at_ms == T_MS + 2 * HOUR
    second, kept = reserve_merchant_failure(kept.state, now=T + 1, limits=budget)
    assert isinstance(second, RequestAdmitted)
    assert kept is not None
    third, nothing = reserve_merchant_failure(kept.state, now=T + 2, limits=budget)
    assert isinstance(third, RateLimited)
    assert nothing is None


def test_a_failure_that_did_not_happen_is_refunded_where_it_was_counted() -> None:
    budget = limits(merchant_failures=5)
    state = SlidingWindowState(window_start_ms=T_MS, current=2, previous=3)
    same = refund_merchant_failure(state, reserved_window_ms=T_MS, limits=budget)
    assert same is not None
    assert (same.state.current, same.state.previous) == (1, 3)
    assert same.expires_at_ms == T_MS + 2 * HOUR
    moved_on = SlidingWindowState(window_start_ms=T_MS + HOUR, current=1, previous=2)
    previous = refund_merchant_failure(moved_on, reserved_window_ms=T_MS, limits=budget)
    assert previous is not None
    assert (previous.state.current, previous.state.previous) == (1, 1)
    assert refund_merchant_failure(None, reserved_window_ms=T_MS, limits=budget) is None
    older = SlidingWindowState(window_start_ms=T_MS + 2 * HOUR, current=4)
    assert refund_merchant_failure(older, reserved_window_ms=T_MS, limits=budget) is None
    empty = SlidingWindowState(window_start_ms=T_MS, current=0, previous=0)
    assert refund_merchant_failure(empty, reserved_window_ms=T_MS, limits=budget) is None
    none_before = SlidingWindowState(window_start_ms=T_MS + HOUR, current=1, previous=0)
    assert refund_merchant_failure(none_before, reserved_window_ms=T_MS, limits=budget) is None


def test_wrong_keys_are_counted_per_address_until_refused() -> None:
    bound = limits(auth_failures=2)
    first, kept = decide_auth_failure(None, now=T, limits=bound)
    assert isinstance(first, RequestAdmitted)
    assert kept is not None
    _, kept = decide_auth_failure(kept.state, now=T, limits=bound)
    assert kept is not None
    third, nothing = decide_auth_failure(kept.state, now=T, limits=bound)
    assert isinstance(third, RateLimited)
    assert nothing is None


def test_switched_off_limiters_decide_nothing() -> None:
    shared = decide_shared_limits(SharedLimiterStates(), request())
    assert shared.counted
    decisions = (
        shared.ip_decision,
        shared.global_decision,
        shared.merchant_decision,
        shared.merchant_failures,
        shared.user_decision,
    )
    assert decisions == (None,) * 5


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


def test_an_admission_is_refused_by_any_limiter_or_a_reused_nonce() -> None:
    nothing = Admission.of(None, None)
    assert not nothing.refused
    assert nothing.limiter_decisions == []
    refused_ip = decide_shared_limits(
        SharedLimiterStates(ip_window=SlidingWindowState(window_start_ms=T_MS, current=1)),
        request(per_ip=1),
    )
    assert Admission.of(refused_ip, NonceAccepted()).rate_limited
    user = decide_shared_limits(SharedLimiterStates(), request(per_user=5, charged=True))
    admitted = Admission.of(user, NonceAccepted())
    assert not admitted.refused
    assert admitted.limiter_decisions == [user.user_decision]
    assert Admission.of(user, NonceReused()).refused
    spent = decide_shared_limits(
        SharedLimiterStates(merchant_failures=SlidingWindowState(window_start_ms=T_MS, current=1)),
        request(merchant="m1", merchant_failures=1),
    )
    assert Admission.of(spent, None).rate_limited


def test_the_quota_is_the_tightest_limiter_and_the_wait_the_longest_refusal() -> None:
    assert Admission.of(None, None).quota is None
    assert Admission.of(None, None).retry_after_ms == 0
    roomy = decide_shared_limits(
        SharedLimiterStates(),
        request(global_limit=100, per_ip=10, per_user=3, charged=True, global_reserve=0),
    )
    admitted = Admission.of(roomy, None)
    assert admitted.quota == Quota(limit=3, remaining=2, reset_after_ms=W // 3 + 1 - 1)
    assert admitted.retry_after_ms == 0
    full_ip = SlidingWindowState(window_start_ms=T_MS, current=10)
    refused = decide_shared_limits(
        SharedLimiterStates(ip_window=full_ip), request(global_limit=100, per_ip=10)
    )
    assert refused.ip_decision is not None
    limited = Admission.of(refused, None)
    assert limited.quota is not None
    assert limited.quota.remaining == 0
    assert limited.quota.limit == 10
    assert isinstance(refused.ip_decision, RateLimited)
    assert limited.retry_after_ms == refused.ip_decision.retry_after_ms


def test_unreachable_limiters_fail_open_for_a_bounded_time() -> None:
    bound = limits(fail_open_ms=30_000)
    assert limiter_fails_open(T_MS, now=T, limits=bound)
    assert limiter_fails_open(T_MS, now=T + 29.999, limits=bound)
    assert not limiter_fails_open(T_MS, now=T + 30, limits=bound)
    assert not limiter_fails_open(T_MS, now=T, limits=limits(fail_open_ms=0))  # fail closed
    assert Admission.of(None, NonceAccepted(), failed_open=True).failed_open
