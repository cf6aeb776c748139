"""The three limiters' reference decisions."""

from __future__ import annotations

from typing import Any

import pytest

from zeropay_proto import (
    FixedWindowState,
    LocalProtocolError,
    RateLimited,
    RequestAdmitted,
    SlidingWindowState,
    TokenBucketState,
    decide_fixed_window,
    decide_sliding_window,
    decide_token_bucket,
)

W = 60_000
T = 1_800_000_000.0  # a multiple of 60 s: a window starts here
T_MS = int(T * 1000)


def test_fixed_window_admits_limit_then_refuses_until_the_next_window() -> None:
    state = None
    for i in range(3):
        out = decide_fixed_window(state, now=T + i, limit=3)
        assert isinstance(out, RequestAdmitted)
        assert out.remaining == 2 - i
        state = out.state
    refused = decide_fixed_window(state, now=T + 10, limit=3)
    assert isinstance(refused, RateLimited)
    assert refused.retry_after_ms == 50_000
    assert refused.state == state
    fresh = decide_fixed_window(state, now=T + 60, limit=3)
    assert isinstance(fresh, RequestAdmitted)
    assert fresh.state == FixedWindowState(window_start_ms=T_MS + W, count=1)


def test_fixed_window_keeps_a_newer_window_written_by_a_faster_clock() -> None:
    newer = FixedWindowState(window_start_ms=T_MS + W, count=3)
    out = decide_fixed_window(newer, now=T + 59, limit=3)
    assert isinstance(out, RateLimited)
    assert out.state == newer


def test_sliding_window_weights_the_previous_window() -> None:
    prev = SlidingWindowState(window_start_ms=T_MS - W, current=10, previous=0)
    # 15 s into the window the previous 10 requests weigh 7.5: 2 more fit under 10.
    first = decide_sliding_window(prev, now=T + 15, limit=10)
    assert isinstance(first, RequestAdmitted)
    assert first.state == SlidingWindowState(window_start_ms=T_MS, current=1, previous=10)
    assert first.remaining == 1
    second = decide_sliding_window(first.state, now=T + 15, limit=10)
    assert isinstance(second, RequestAdmitted)
    assert second.remaining == 0
    third = decide_sliding_window(second.state, now=T + 15, limit=10)
    assert isinstance(third, RateLimited)
    # Admitted when 10 * (60 - e) / 60 <= 7, at e = 18 s.
    assert third.retry_after_ms == 3_000
    assert isinstance(decide_sliding_window(second.state, now=T + 18, limit=10), RequestAdmitted)
    assert isinstance(decide_sliding_window(second.state, now=T + 17.999, limit=10), RateLimited)


def test_sliding_window_full_current_window_waits_into_the_next() -> None:
    full = SlidingWindowState(window_start_ms=T_MS, current=4, previous=0)
    out = decide_sliding_window(full, now=T + 50, limit=4)
    assert isinstance(out, RateLimited)
    # In the next window the 4 weigh 4 * (60 - e) / 60; one fits at e = 15 s: 10 s + 15 s.
    assert out.retry_after_ms == 25_000
    assert isinstance(decide_sliding_window(full, now=T + 75, limit=4), RequestAdmitted)
    assert isinstance(decide_sliding_window(full, now=T + 74.999, limit=4), RateLimited)


def test_sliding_window_starts_empty() -> None:
    out = decide_sliding_window(None, now=T + 1, limit=2)
    assert isinstance(out, RequestAdmitted)
    assert out.state == SlidingWindowState(window_start_ms=T_MS, current=1, previous=0)
    assert (out.remaining, out.reset_after_ms) == (1, 59_000)


def test_sliding_window_forgets_windows_older_than_the_previous() -> None:
    old = SlidingWindowState(window_start_ms=T_MS - 2 * W, current=100, previous=100)
    out = decide_sliding_window(old, now=T, limit=1)
    assert isinstance(out, RequestAdmitted)
    assert out.state == SlidingWindowState(window_start_ms=T_MS, current=1, previous=0)
    newer = SlidingWindowState(window_start_ms=T_MS + W, current=1, previous=0)
    assert isinstance(decide_sliding_window(newer, now=T, limit=1), RateLimited)


def test_token_bucket_drains_and_refills_continuously() -> None:
    state = None
    for i in range(5):
        out = decide_token_bucket(state, now=T, limit=5)
        assert isinstance(out, RequestAdmitted)
        assert out.remaining == 4 - i
        state = out.state
    refused = decide_token_bucket(state, now=T, limit=5)
    assert isinstance(refused, RateLimited)
    assert refused.retry_after_ms == 12_000  # one token per 12 s
    assert refused.reset_after_ms == 60_000
    assert isinstance(decide_token_bucket(state, now=T + 11.999, limit=5), RateLimited)
    later = decide_token_bucket(state, now=T + 12, limit=5)
    assert isinstance(later, RequestAdmitted)
    assert later.remaining == 0


def test_token_bucket_caps_at_capacity_and_ignores_clock_going_back() -> None:
    state = TokenBucketState(level=0, updated_ms=T_MS)
    out = decide_token_bucket(state, now=T + 3600, limit=5)
    assert isinstance(out, RequestAdmitted)
    assert out.remaining == 4
    back = decide_token_bucket(state, now=T - 30, limit=5)
    assert isinstance(back, RateLimited)
    assert back.state == state


@pytest.mark.parametrize(
    "decide", [decide_fixed_window, decide_sliding_window, decide_token_bucket]
)
def test_limiters_refuse_nonsense_limits(decide: object) -> None:
    assert callable(decide)
    with pytest.raises(LocalProtocolError):
        decide(None, now=T, limit=0)
    with pytest.raises(LocalProtocolError):
        decide(None, now=T, limit=1, window_ms=0)


def test_same_millisecond_requests_are_counted_exactly() -> None:
    """The original service used the millisecond as ZSET member and under-counted bursts."""
    deciders: list[Any] = [decide_fixed_window, decide_sliding_window, decide_token_bucket]
    for decide in deciders:
        state = None
        admitted = 0
        for _ in range(150):
            out = decide(state, now=T + 1.234, limit=100)
            state = out.state
            admitted += isinstance(out, RequestAdmitted)
        assert admitted == 100, decide.__name__
