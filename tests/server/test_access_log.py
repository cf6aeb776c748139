"""The access log line: the same JSON shape and stream as every log line, built without a
``logging`` round when the server configured logging itself."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from zeropay_server import observability
from zeropay_server.observability import AccessLog, configure_logging


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging on a captured stderr; the root logger restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    monkeypatch.setattr(observability, "_json_handler", None)
    configure_logging("INFO")
    yield captured
    root.handlers[:], level = saved
    root.setLevel(level)


def test_the_line_is_one_json_object_like_any_other_log_line(json_logs: io.StringIO) -> None:
    AccessLog()("/v1/verification/status/{session_id}", "GET", 404, 0.001234)
    logging.getLogger("zeropay.http").info("other", extra={"fields": {"x": 1}})
    access, other = (json.loads(line) for line in json_logs.getvalue().splitlines())
    assert access == {
        "time": access["time"],
        "level": "INFO",
        "logger": "zeropay.access",
        "message": "request",
        "route": "/v1/verification/status/{session_id}",
        "method": "GET",
        "status": 404,
        "duration_ms": 1.23,
    }
    assert set(other) == {"time", "level", "logger", "message", "x"}
    assert len(access["time"]) == len(other["time"]) == len("2026-11-28T19:31:52.123Z")


def test_nothing_is_written_below_its_level(json_logs: io.StringIO) -> None:
    logging.getLogger().setLevel("WARNING")
    AccessLog()("/health/live", "GET", 200, 0.0001)
    assert json_logs.getvalue() == ""


def test_without_the_servers_logging_the_line_goes_through_logging(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "_json_handler", None)
    with caplog.at_level(logging.INFO, logger="zeropay.access"):
        AccessLog()("/health/live", "GET", 200, 0.0001)
    (record,) = caplog.records
    assert record.getMessage() == "request"
    assert record.fields == {  # type: ignore[attr-defined]
        "route": "/health/live",
        "method": "GET",
        "status": 200,
        "duration_ms": 0.1,
    }
