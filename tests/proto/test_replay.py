"""Nonce and timestamp checks."""

from __future__ import annotations

import pytest

from zeropay_proto import (
    NonceAccepted,
    NonceClaim,
    NonceReused,
    RemoteProtocolError,
    check_replay_headers,
    decide_nonce,
)

NOW = 1_800_000_000.0
NOW_MS = str(int(NOW * 1000))
NONCE = "9f1c2b4e-6a7d-4e8f-9a0b-1c2d3e4f5a6b"


def test_fresh_nonce_and_timestamp_make_a_claim_that_outlives_the_window() -> None:
    claim = check_replay_headers(NONCE.upper(), NOW_MS, now=NOW)
    assert claim == NonceClaim(nonce=NONCE, ttl_ms=330_000)


@pytest.mark.parametrize("skew_ms", [-300_000, 0, 30_000])
def test_timestamp_window_edges_are_accepted(skew_ms: int) -> None:
    check_replay_headers(NONCE, str(int(NOW_MS) + skew_ms), now=NOW)


@pytest.mark.parametrize("skew_ms", [-300_001, 30_001])
def test_timestamp_outside_the_window_is_refused(skew_ms: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_replay_headers(NONCE, str(int(NOW_MS) + skew_ms), now=NOW)
    assert info.value.code == "TIMESTAMP_OUT_OF_WINDOW"
    assert info.value.field == "X-Timestamp"


@pytest.mark.parametrize(
    "nonce",
    [None, "", "not-a-uuid", "9f1c2b4e-6a7d-1e8f-9a0b-1c2d3e4f5a6b",  # version 1
     "9f1c2b4e-6a7d-4e8f-0a0b-1c2d3e4f5a6b",  # wrong variant
     NONCE + "\n"],
)  # fmt: skip
def test_nonce_must_be_a_uuid4(nonce: str | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_replay_headers(nonce, NOW_MS, now=NOW)
    assert info.value.field == "X-Nonce"


@pytest.mark.parametrize("timestamp", [None, "", "12.5", "-5", "1" * 17, "١٢٣"])
def test_timestamp_must_be_integer_milliseconds(timestamp: str | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_replay_headers(NONCE, timestamp, now=NOW)
    assert info.value.code == "INVALID_TIMESTAMP"


def test_a_claimed_nonce_is_a_replay() -> None:
    assert decide_nonce(already_claimed=False) == NonceAccepted()
    assert decide_nonce(already_claimed=True) == NonceReused()
