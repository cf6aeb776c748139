"""Webhooks: what a merchant is told, how it is signed, when a delivery is tried again, and
where the service may send one.

- **Signing** is Stripe's scheme: ``ZeroPay-Signature: t=<unix seconds>,v1=<hex>`` where each
  ``v1`` is HMAC-SHA256 of ``<t>.<body>`` under one of the endpoint's secrets (two while a
  rotated secret's old one is still honoured). A receiver recomputes it with its secret,
  compares in constant time, and refuses a ``t`` older than its tolerance (a replay).
- **Retries**: a delivery that did not get a 2xx is tried again after an exponential back-off
  with jitter (:func:`next_attempt_delay_ms`), for up to :data:`DELIVERY_WINDOW_MS` (3 days)
  after the event became due, then dead-lettered.
- **Where**: a webhook URL is HTTPS, and every address its host resolves to must be a public
  one (:func:`address_refused`): never loopback, link-local, private, shared, multicast or
  reserved, so a merchant cannot aim the service at its own network (SSRF). The check is made
  on the addresses resolved for each delivery, so a name rebound after registration is caught.
  A deployment may allow loopback (development and tests).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._errors import LocalProtocolError, RemoteProtocolError
from ._urls import split_absolute_url
from .audit import LOCK_END_DETAIL, AuditEvent, DetailValue
from .passkeys import LinkedData
from .receipt import PaymentBinding, Receipt

SIGNATURE_HEADER = "ZeroPay-Signature"
SIGNATURE_SCHEME = "v1"
#: A receiver refuses a signature older than this (seconds), as the SDK's helper does.
DEFAULT_TOLERANCE_SECONDS = 300
#: A delivery is retried until this long after its event, then dead-lettered.
DELIVERY_WINDOW_MS = 3 * 24 * 60 * 60 * 1000
#: The first retry waits about this long; each next one twice as long, up to the cap.
FIRST_RETRY_MS = 10_000
MAX_RETRY_DELAY_MS = 6 * 60 * 60 * 1000
SECRET_BYTES = 32

#: The event types a merchant can subscribe to.
EVENT_TYPES = (
    "session.verified",
    "session.failed",
    "session.expired",
    "account.locked",
    "account.unlocked",
    "passkey.clone_suspected",
    "enrollment.changed",
)


def signature_header(secrets: Iterable[bytes], timestamp: int, body: bytes) -> str:
    """The ``ZeroPay-Signature`` value: the time, and one ``v1`` per secret."""
    signed = b"%d." % timestamp + body
    parts = [f"t={timestamp}"]
    parts += [f"{SIGNATURE_SCHEME}={_mac(secret, signed)}" for secret in secrets]
    if len(parts) == 1:
        raise LocalProtocolError("a webhook is signed with at least one secret")
    return ",".join(parts)


def _mac(secret: bytes, signed: bytes) -> str:
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()


def signature_valid(
    header: str,
    body: bytes,
    secret: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance``
    seconds of ``now`` (constant-time comparison of every ``v1``)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, b"%d." % timestamp + body)
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def next_attempt_delay_ms(attempt: int, entropy: bytes) -> int:
    """How long to wait after failed attempt number ``attempt`` (1-based): 10 s, 20 s, 40 s,
    ... up to 6 h, each between half and all of that (``entropy``: 2 CSPRNG bytes), so that
    the retries of many events after one outage do not arrive together."""
    if attempt < 1 or len(entropy) != 2:
        raise LocalProtocolError("an attempt is 1-based; the jitter takes 2 bytes")
    ceiling: int = min(MAX_RETRY_DELAY_MS, FIRST_RETRY_MS << min(attempt - 1, 30))
    fraction = int.from_bytes(entropy, "big") / 0xFFFF
    return ceiling // 2 + int(ceiling // 2 * fraction)


def gives_up(due_at_ms: int, next_attempt_at_ms: int) -> bool:
    """Whether a delivery whose next attempt would come at ``next_attempt_at_ms`` is
    dead-lettered instead (past its window, which runs from when the event became due:
    :func:`event_due_at_ms`)."""
    return next_attempt_at_ms - due_at_ms > DELIVERY_WINDOW_MS


def parse_webhook_url(value: str, *, allow_loopback: bool) -> str:
    """A webhook URL as registered: absolute HTTPS with a host, no credentials, at most 2048
    characters (plain HTTP only where loopback is allowed). Its addresses are checked at each
    delivery (:func:`address_refused`), and by the registering command."""
    url, parts = split_absolute_url(value, field="url")
    if parts.scheme != "https" and not (allow_loopback and parts.scheme == "http"):
        raise RemoteProtocolError("must be HTTPS", field="url")
    return url


def address_refused(address: str, *, allow_loopback: bool) -> str | None:
    """Why the service must not connect to ``address`` (a resolved IP), or ``None``."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    checks: Mapping[str, bool] = {
        "unspecified": ip.is_unspecified,
        "link-local": ip.is_link_local,
        "private": ip.is_private,
        "multicast": ip.is_multicast,
        "reserved": ip.is_reserved,
        "not globally routable": not ip.is_global,
    }
    return next((why for why, refused in checks.items() if refused), None)


@dataclass(frozen=True, kw_only=True)
class WebhookEndpoint:
    """Where a merchant is told: a URL, the event types it subscribes to, whether it is on.
    Its signing secret is kept apart (sealed), never in this value."""

    endpoint_id: str
    merchant_id: str
    url: str
    events: frozenset[str]
    enabled: bool = True
    created_at_ms: int = 0
    #: While a rotated secret's old one is still honoured (it signs beside the new one).
    previous_secret_until_ms: int | None = None

    def __post_init__(self) -> None:
        if not self.events or not self.events <= set(EVENT_TYPES):
            raise LocalProtocolError("an endpoint subscribes to known event types")

    def subscribes(self, event_type: str) -> bool:
        return self.enabled and event_type in self.events


def parse_event_types(words: Iterable[str]) -> frozenset[str]:
    """Event types as an operator names them (none: every type)."""
    chosen = frozenset(words) or frozenset(EVENT_TYPES)
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise RemoteProtocolError(
            f"unknown event types {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})",
            field="events",
        )
    return chosen


@dataclass(frozen=True)
class EventRule:
    """One audit action a merchant is told of, as data.

    ``when``: ``now``, or ``last_attempt`` (only an attempt that closed its session: the last
    failure is ``session.failed``). ``due_detail``: the detail (epoch ms) at which the event
    is due, if not at once: ``session.expired`` is scheduled with its session, due when it
    expires, and withdrawn if the session is decided before; ``account.unlocked`` with its
    lock, due when the lock ends, so neither is polled for. (A lock is lifted early only
    when the attempt that engaged it is given back, on the service's own outage; its
    ``account.unlocked`` still comes at the end the lock was given.)
    ``audience``: ``session``, the merchant of the session the event is about (named in it,
    or the one that opened the session); or ``user``, every merchant that opened a session
    for the user in the last :data:`AUDIENCE_DAYS` days. ``second``: a second event drawn
    from an audit row another rule already draws one from (its id differs:
    :func:`webhook_event_id`)."""

    action: str
    event_type: str
    when: str = "now"
    audience: str = "session"
    due_detail: str | None = None
    second: bool = False


AUDIENCE_DAYS = 90
EVENT_RULES: tuple[EventRule, ...] = (
    EventRule("VERIFICATION_SUCCEEDED", "session.verified"),
    EventRule("VERIFICATION_FAILED", "session.failed", when="last_attempt"),
    EventRule("SESSION_INITIATED", "session.expired", due_detail="expires_at_ms"),
    EventRule("ACCOUNT_LOCKED", "account.locked"),
    EventRule("ACCOUNT_LOCKED", "account.unlocked", due_detail=LOCK_END_DETAIL, second=True),
    EventRule("PASSKEY_CLONE_SUSPECTED", "passkey.clone_suspected"),
    EventRule("ENROLLMENT_UPDATED", "enrollment.changed", audience="user"),
    EventRule("ENROLLMENT_DELETED", "enrollment.changed", audience="user"),
    EventRule("PASSKEY_REGISTERED", "enrollment.changed", audience="user"),
    EventRule("PASSKEY_DELETED", "enrollment.changed", audience="user"),
)
#: The decisions that withdraw a session's scheduled ``session.expired``.
DECIDING_TYPES = ("session.verified", "session.failed")
#: The event types drawn second from their audit rows.
SECOND_TYPES = frozenset(rule.event_type for rule in EVENT_RULES if rule.second)
#: An event id's UUID version bits (RFC 9562): the audit row's (4), or 8 (the RFC's
#: vendor-specific version) for the second event drawn from the row.
_VERSION_SHIFT = 76
_VERSION_MASK = 0xF << _VERSION_SHIFT
EVENT_ID_PREFIX = "evt_"


def event_types_of(event: AuditEvent) -> tuple[str, ...]:
    """The webhook event types an audit event is (an account lock is two: ``account.locked``
    now, ``account.unlocked`` when the lock ends)."""
    return tuple(
        rule.event_type
        for rule in EVENT_RULES
        if event.action.value == rule.action
        and (rule.when != "last_attempt" or event.details.get("last_attempt") is True)
        and (rule.due_detail is None or _int(event.details.get(rule.due_detail)) is not None)
    )


def webhook_event_id(audit_event_id: str, event_type: str) -> str:
    """The id a receiver deduplicates by: ``evt_`` and the audit row's UUID in hex; for an
    event drawn second from its row (:data:`SECOND_TYPES`), the same UUID with version 8,
    so the two events of one row never share an id and either leads back to the row."""
    number = uuid.UUID(audit_event_id).int
    if event_type in SECOND_TYPES:
        number = (number & ~_VERSION_MASK) | (8 << _VERSION_SHIFT)
    return EVENT_ID_PREFIX + uuid.UUID(int=number).hex


def parse_webhook_event_id(text: str) -> tuple[str, frozenset[str]]:
    """An event id as a receiver sees it (or its audit row's UUID): the audit row's id, and
    the event types the id can name. Raises ``RemoteProtocolError`` for anything else."""
    try:
        number = uuid.UUID(text.removeprefix(EVENT_ID_PREFIX)).int
    except ValueError:
        raise RemoteProtocolError(f"{text!r} is not an event id", field="event") from None
    second = number & _VERSION_MASK == 8 << _VERSION_SHIFT
    if second:
        number = (number & ~_VERSION_MASK) | (4 << _VERSION_SHIFT)
    types = SECOND_TYPES if second else frozenset(EVENT_TYPES) - SECOND_TYPES
    return str(uuid.UUID(int=number)), types


def _int(value: DetailValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: DetailValue) -> str | None:
    return value if isinstance(value, str) else None


def event_receipt(event: AuditEvent) -> Receipt | None:
    """The receipt a successful verification issued, rebuilt from its audit event (the
    receipt's time is the event's: one clock reading per request), so the webhook carries
    the same receipt, and under the same key the same JWS, as the verify's answer."""
    session = _text(event.details.get("session"))
    if event.action.value != "VERIFICATION_SUCCEEDED" or session is None or event.user_id is None:
        return None
    binding = PaymentBinding(
        amount=_int(event.details.get("amount")),
        currency=_text(event.details.get("currency")),
        merchant_id=_text(event.details.get("merchant")),
    )
    attempt = _int(event.details.get("attempt")) or 1
    linked = None
    if event.details.get("possession") is True:
        linked = LinkedData(
            session_id=session,
            amount=binding.amount,
            currency=binding.currency,
            payee=binding.merchant_id,
            attempt=attempt,
        ).challenge()
    return Receipt(
        session_id=session,
        user_id=event.user_id,
        binding=binding,
        issued_at_ms=event.at_ms,
        linked_challenge=linked,
    )


def event_due_at_ms(event: AuditEvent, event_type: str) -> int:
    """When the event of ``event_type`` drawn from ``event`` became due (epoch ms): its
    rule's due detail (a session's expiry, a lock's end), or the audit row's time. It is the
    event's ``created_at_ms``, and its delivery window runs from it."""
    for rule in EVENT_RULES:
        if rule.event_type == event_type and rule.action == event.action.value:
            due = None if rule.due_detail is None else _int(event.details.get(rule.due_detail))
            return event.at_ms if due is None else due
    return event.at_ms


def event_body(
    event: AuditEvent, event_type: str, merchant_id: str, *, receipt_jws: str | None = None
) -> bytes:
    """The JSON a merchant receives: ``id`` (the same for every delivery of the event: a
    receiver deduplicates by it), ``type``, ``created_at_ms``, ``merchant_id`` and ``data``."""
    details = event.details
    data: dict[str, object] = {"user_uuid": event.user_id}
    for name, key in (
        ("session_id", "session"),
        ("amount", "amount"),
        ("currency", "currency"),
        ("locked_until_ms", LOCK_END_DETAIL),
    ):
        if details.get(key) is not None:
            data[name] = details[key]
    if event_type == "session.failed":
        data["attempts"] = details.get("attempt")
    if receipt_jws is not None:
        data["receipt_jws"] = receipt_jws
    body = {
        "id": webhook_event_id(event.event_id, event_type),
        "type": event_type,
        "created_at_ms": event_due_at_ms(event, event_type),
        "merchant_id": merchant_id,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
