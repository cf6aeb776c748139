"""Limiter properties over arbitrary request sequences and clock steps.

- a limiter never admits more than its budget (per aligned window for the window limiters,
  capacity plus refill for the bucket);
- a refusal changes no counter;
- ``retry_after_ms`` is exact: with no other traffic, the request is admitted after exactly
  that long, and refused one millisecond earlier.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from zeropay_proto import (
    RateLimited,
    RequestAdmitted,
    decide_fixed_window,
    decide_sliding_window,
    decide_token_bucket,
)

W = 60_000
T0_MS = 1_800_000_000_000
limits = st.integers(min_value=1, max_value=20)
steps = st.lists(
    st.one_of(st.just(0), st.integers(min_value=0, max_value=3 * W)), min_size=1, max_size=80
)
LIMITERS: list[Callable[..., Any]] = [
    decide_fixed_window,
    decide_sliding_window,
    decide_token_bucket,
]


def run(decide: Callable[..., Any], limit: int, gaps: list[int]) -> list[tuple[int, Any, Any]]:
    """Apply requests at T0 + cumulative gaps; return (now_ms, state before, decision)."""
    state = None
    now_ms = T0_MS
    trace = []
    for gap in gaps:
        now_ms += gap
        out = decide(state, now=now_ms / 1000, limit=limit, window_ms=W)
        trace.append((now_ms, state, out))
        state = out.state
    return trace


@given(limits, steps)
def test_fixed_window_never_admits_more_than_limit_per_window(limit: int, gaps: list[int]) -> None:
    admitted = Counter(
        now_ms // W for now_ms, _, out in run(decide_fixed_window, limit, gaps)
        if isinstance(out, RequestAdmitted)
    )  # fmt: skip
    assert all(n <= limit for n in admitted.values())


@given(limits, steps)
def test_sliding_window_never_admits_more_than_limit_per_window(
    limit: int, gaps: list[int]
) -> None:
    trace = run(decide_sliding_window, limit, gaps)
    admitted = Counter(now_ms // W for now_ms, _, out in trace if isinstance(out, RequestAdmitted))
    assert all(n <= limit for n in admitted.values())
    # And the estimate never exceeds the limit right after an admission.
    for now_ms, _, out in trace:
        if isinstance(out, RequestAdmitted):
            s = out.state
            elapsed = now_ms - s.window_start_ms
            assert s.previous * (W - elapsed) + s.current * W <= limit * W


@given(limits, steps)
def test_token_bucket_admits_at_most_capacity_plus_refill(limit: int, gaps: list[int]) -> None:
    trace = run(decide_token_bucket, limit, gaps)
    times = [now_ms for now_ms, _, out in trace if isinstance(out, RequestAdmitted)]
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            span = times[j] - start
            # Tokens available over [start, start + span]: a full bucket plus the refill.
            assert j - i + 1 <= limit + (span * limit) // W


@given(st.sampled_from(LIMITERS), limits, steps)
def test_refusals_change_no_counter_and_retry_after_is_exact(
    decide: Callable[..., Any], limit: int, gaps: list[int]
) -> None:
    for now_ms, _, out in run(decide, limit, gaps):
        if not isinstance(out, RateLimited):
            continue
        state = out.state
        # A refusal consumes nothing: asking again at the same instant is refused identically.
        assert decide(state, now=now_ms / 1000, limit=limit, window_ms=W) == out
        retry = out.retry_after_ms
        assert retry >= 1
        later = decide(state, now=(now_ms + retry) / 1000, limit=limit, window_ms=W)
        assert isinstance(later, RequestAdmitted)
        if retry > 1:
            sooner = decide(state, now=(now_ms + retry - 1) / 1000, limit=limit, window_ms=W)
            assert isinstance(sooner, RateLimited)
