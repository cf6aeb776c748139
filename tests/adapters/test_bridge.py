"""The Trio/asyncio bridge keeps a server alive through asyncio's unhandled errors."""

from __future__ import annotations

import logging

import pytest
import trio

from adapters.bridge import aio, open_loop


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
