"""The SDK's webhook check against the service's signing (two implementations, one scheme)."""

from __future__ import annotations

import json

import pytest
from zeropay_client import InvalidWebhook, verify_webhook

from zeropay_proto.webhooks import signature_header

EVENT = {"id": "evt_1", "type": "session.verified", "data": {"amount": 4250}}
BODY = json.dumps(EVENT).encode()


def test_a_signed_event_verifies_with_the_current_or_the_rotated_secret() -> None:
    header = signature_header([b"new-secret", b"old-secret"], 1_780_000_000, BODY)
    for secret in ("new-secret", b"old-secret"):
        assert verify_webhook(BODY, header, secret, now=1_780_000_010) == EVENT


@pytest.mark.parametrize(
    ("body", "secret", "now", "why"),
    [
        (BODY + b" ", "new-secret", 1_780_000_010, "does not match"),
        (BODY, "wrong", 1_780_000_010, "does not match"),
        (BODY, "new-secret", 1_780_000_301, "too old"),
    ],
)
def test_a_tampered_wrong_or_replayed_delivery_is_refused(
    body: bytes, secret: str, now: int, why: str
) -> None:
    header = signature_header([b"new-secret"], 1_780_000_000, BODY)
    with pytest.raises(InvalidWebhook, match=why):
        verify_webhook(body, header, secret, now=now)


def test_a_header_without_a_signature_or_an_event_without_an_id_is_refused() -> None:
    with pytest.raises(InvalidWebhook, match="no timestamp"):
        verify_webhook(BODY, "t=1780000000", "s", now=1_780_000_000)
    header = signature_header([b"s"], 1_780_000_000, b"[]")
    with pytest.raises(InvalidWebhook, match="not an event"):
        verify_webhook(b"[]", header, "s", now=1_780_000_000)
