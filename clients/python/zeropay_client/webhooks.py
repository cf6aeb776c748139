"""Checking a webhook: ``ZeroPay-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]`` where a
``v1`` is HMAC-SHA256 of ``<t>.<raw body>`` under the endpoint's signing secret.

Check the raw body as received (before any JSON parsing), refuse old timestamps (a replayed
delivery), and deduplicate by the event's ``id``: deliveries are at least once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any


class InvalidWebhook(ValueError):
    """The signature does not match, is too old, or the payload is not an event."""


def verify_webhook(
    payload: bytes,
    header: str,
    secret: str | bytes,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The event if ``header`` (``ZeroPay-Signature``) signs ``payload`` with ``secret``
    within ``tolerance`` seconds, else :class:`InvalidWebhook`."""
    key = secret.encode() if isinstance(secret, str) else secret
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidWebhook("no timestamp or no v1 signature")
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidWebhook("the signature is too old (or from the future)")
    expected = hmac.new(key, b"%d." % timestamp + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise InvalidWebhook("the signature does not match")
    event = json.loads(payload)
    if not isinstance(event, dict) or "id" not in event or "type" not in event:
        raise InvalidWebhook("not an event")
    return event
