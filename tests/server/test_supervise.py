"""Background tasks are restarted, never allowed to end the process."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from zeropay_server.supervise import backoff_delay, supervise


async def test_a_failing_task_is_counted_and_restarted_with_growing_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures: list[str] = []
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) <= 4:
            raise RuntimeError("NOGROUP No such key")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: supervise("flusher", flaky, failures.append, jitter=lambda: 1.0))
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert failures == ["flusher"] * 4
    assert len(starts) == 5  # running again after the fourth failure
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0, 4.0])


async def test_cancellation_still_ends_a_supervised_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(True)

    with trio.move_on_after(5):
        await supervise("gauges", forever, lambda _: None)
    assert cancelled == [True]


async def test_a_task_that_returns_is_started_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = []

    async def once() -> None:
        runs.append(trio.current_time())

    with trio.move_on_after(10):
        await supervise("gauges", once, lambda _: None, jitter=lambda: 1.0)
    assert len(runs) >= 4


def test_backoff_is_capped_and_jittered() -> None:
    assert backoff_delay(1, initial=0.5, maximum=30, jitter=1.0) == 0.5
    assert backoff_delay(20, initial=0.5, maximum=30, jitter=1.0) == 30
    assert backoff_delay(20, initial=0.5, maximum=30, jitter=0.5) == 15
    assert backoff_delay(3, initial=0.5, maximum=30, jitter=0.0) == 0.05  # never zero
