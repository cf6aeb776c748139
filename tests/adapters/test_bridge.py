"""The Trio/asyncio bridge keeps a server alive through asyncio's unhandled errors, and calls
an adapter's Trio face directly for the methods it names native."""

from __future__ import annotations

import logging

import pytest
import trio

from adapters.bridge import aio, bridged, open_loop
from adapters.errors import DependencyUnavailable


async def test_an_error_asyncio_reports_as_unhandled_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio reports a future whose exception nobody retrieved through the loop's exception
    handler; trio-asyncio's default re-raises it in its nursery, ending the loop (an API
    instance died of asyncpg's when PostgreSQL stopped mid-query)."""
    with caplog.at_level(logging.WARNING, logger="zeropay.bridge"):
        async with open_loop() as loop:
            loop.call_exception_handler(
                {"message": "Future exception was never retrieved", "exception": OSError("x")}
            )
            for _ in range(5):
                await trio.sleep(0)
            ran = await aio(_echo)()  # the asyncio side still runs
    assert ran == "still running"
    (record,) = caplog.records
    assert getattr(record, "fields", None) == {
        "error": "OSError",
        "what": "Future exception was never retrieved",
    }


async def _echo() -> str:
    return "still running"


class _Adapter:
    """An adapter with an asyncio side and a Trio face, as the Redis store has."""

    def __init__(self, loop: str) -> None:
        self.loop = loop

    async def where(self) -> str:
        return self.loop

    async def stalls(self) -> None:
        await trio.sleep_forever()


async def test_native_methods_are_awaited_on_the_face_under_the_same_deadline() -> None:
    durations: list[float] = []
    store = bridged(
        _Adapter("asyncio"),
        dependency="redis",
        timeout=0.05,
        observe=durations.append,
        native=_Adapter("trio"),
        native_methods=frozenset({"where", "stalls"}),
    )
    # No asyncio loop is open: a crossing would fail, a native call does not cross.
    assert await store.where() == "trio"
    with pytest.raises(DependencyUnavailable):
        await store.stalls()
    assert len(durations) == 2
    assert durations[1] >= 0.05


async def test_without_a_face_every_method_crosses() -> None:
    store = bridged(
        _Adapter("asyncio"), dependency="redis", timeout=5, native_methods=frozenset({"where"})
    )
    async with open_loop():
        assert await store.where() == "asyncio"
