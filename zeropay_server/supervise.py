"""Background work that never takes the server down.

The audit flusher and the gauge refresher run beside the HTTP server in one nursery; an
exception escaping either would cancel the nursery and end the process (every instance at
once, when Redis comes back empty). :func:`supervise` runs such a task forever: it catches
what escapes, counts it (``zeropay_background_failures_total{task}``), logs it, waits with
exponential back-off and full jitter (so that N instances do not retry in step), and starts
the task again. Cancellation passes through: shutdown still ends it. Only the HTTP server's
own failure ends the process.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("zeropay.supervise")

#: First and longest pause before a restart, in seconds. A dependency that failed is usually
#: back within seconds (a restart, a failover); thirty seconds bounds the wait after a long
#: outage.
DEFAULT_INITIAL_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0
#: A task that ran this long before failing is considered to have been healthy: its
#: back-off starts again from the beginning.
HEALTHY_AFTER = 60.0


def backoff_delay(failures: int, *, initial: float, maximum: float, jitter: float) -> float:
    """The pause after ``failures`` consecutive failures (1-based): exponential, capped, and
    scaled by ``jitter`` in [0, 1) ("full jitter"), never below a tenth of ``initial``."""
    ceiling = min(maximum, initial * 2.0 ** (failures - 1))
    return max(initial / 10, ceiling * jitter)


def _jitter() -> float:
    return secrets.randbelow(1 << 20) / (1 << 20)


async def supervise(
    name: str,
    task: Callable[[], Awaitable[object]],
    on_failure: Callable[[str], None],
    *,
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    jitter: Callable[[], float] = _jitter,
) -> None:
    """Run ``task`` until cancelled, restarting it after any exception (or a return)."""
    failures = 0
    while True:
        started = trio.current_time()
        try:
            await task()
            log.warning("background task returned; restarting", extra={"fields": {"task": name}})
        except Exception as exc:  # Cancelled is a BaseException: shutdown passes through
            on_failure(name)
            log.exception(
                "background task failed; restarting",
                extra={"fields": {"task": name, "error": type(exc).__name__}},
            )
        if trio.current_time() - started >= HEALTHY_AFTER:
            failures = 0
        failures += 1
        await trio.sleep(
            backoff_delay(failures, initial=initial_backoff, maximum=max_backoff, jitter=jitter())
        )
