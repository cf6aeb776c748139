"""Webhooks in the core: the signature a receiver checks, the retry schedule, and where the
service may deliver."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace

import pytest

from tests.helpers import USER
from zeropay_proto import LocalProtocolError, PaymentBinding, Receipt, RemoteProtocolError
from zeropay_proto.audit import AuditAction, AuditEvent
from zeropay_proto.passkeys import LinkedData
from zeropay_proto.webhooks import (
    DELIVERY_WINDOW_MS,
    EVENT_RULES,
    EVENT_TYPES,
    FIRST_RETRY_MS,
    MAX_RETRY_DELAY_MS,
    SECOND_TYPES,
    WebhookEndpoint,
    address_refused,
    event_body,
    event_due_at_ms,
    event_receipt,
    event_types_of,
    gives_up,
    next_attempt_delay_ms,
    parse_event_types,
    parse_webhook_event_id,
    parse_webhook_url,
    signature_header,
    signature_valid,
    webhook_event_id,
)

BODY = b'{"id":"evt_1","type":"session.verified"}'
OLD, NEW = b"o" * 32, b"n" * 32


def test_the_signature_is_stripes_scheme_and_checks_with_either_secret() -> None:
    header = signature_header([NEW, OLD], 1_780_000_000, BODY)
    expected = hmac.new(NEW, b"1780000000." + BODY, hashlib.sha256).hexdigest()
    assert header.startswith(f"t=1780000000,v1={expected},v1=")
    for secret in (NEW, OLD):
        assert signature_valid(header, BODY, secret, now=1_780_000_100)
    assert not signature_valid(header, BODY, b"x" * 32, now=1_780_000_100)
    assert not signature_valid(header, BODY + b" ", NEW, now=1_780_000_100)
    assert not signature_valid(header, BODY, NEW, now=1_780_000_301)  # too old: a replay
    assert signature_valid(header, BODY, NEW, now=1_780_000_301, tolerance=400)
    for broken in ("", "v1=abc", "t=x,v1=abc", f"t=1780000000,v0={expected}"):
        assert not signature_valid(broken, BODY, NEW, now=1_780_000_000)
    with pytest.raises(LocalProtocolError):
        signature_header([], 1, BODY)


def test_retries_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    low, high = b"\x00\x00", b"\xff\xff"
    assert next_attempt_delay_ms(1, low) == FIRST_RETRY_MS // 2
    assert next_attempt_delay_ms(1, high) == FIRST_RETRY_MS
    assert next_attempt_delay_ms(3, high) == 4 * FIRST_RETRY_MS
    assert next_attempt_delay_ms(60, high) == MAX_RETRY_DELAY_MS
    for bad in ((0, low), (1, b"\x00")):
        with pytest.raises(LocalProtocolError):
            next_attempt_delay_ms(*bad)
    assert not gives_up(0, DELIVERY_WINDOW_MS)
    assert gives_up(0, DELIVERY_WINDOW_MS + 1)


def test_a_webhook_url_is_https_with_a_host_and_no_credentials() -> None:
    assert parse_webhook_url("https://shop.example/hooks", allow_loopback=False)
    assert parse_webhook_url("http://127.0.0.1:9000/hooks", allow_loopback=True)
    for bad in (
        "http://shop.example/hooks",
        "https://user:pw@shop.example/",
        "https:///nohost",
        "https://shop.example:99999/",
        "https://shop.example/" + "a" * 2048,
        "https://shop.example/\u00e9",
        "ftp://shop.example/",
    ):
        with pytest.raises(RemoteProtocolError) as refused:
            parse_webhook_url(bad, allow_loopback=False)
        assert refused.value.field == "url"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address refused, not bound
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("fc00::1", "private"),
        ("240.0.0.1", "private"),
    ],
)
def test_only_public_addresses_are_delivered_to(address: str, why: str | None) -> None:
    assert address_refused(address, allow_loopback=False) == why


def test_loopback_is_allowed_only_where_the_deployment_says_so() -> None:
    assert address_refused("127.0.0.1", allow_loopback=True) is None
    assert address_refused("10.0.0.1", allow_loopback=True) == "private"


def _audit(action: str, **details: object) -> AuditEvent:
    return AuditEvent(
        event_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        action=AuditAction(action),
        user_id=USER,
        client="192.0.2.0",
        at_ms=1_780_000_000_000,
        details=details,  # type: ignore[arg-type]
    )


PAYMENT = {"session": "s" * 43, "merchant": "shop-1", "amount": 4250, "currency": "EUR"}


UNTIL = 1_780_000_900_000  # a lock's end


def test_audit_events_become_the_event_types_a_merchant_is_told() -> None:
    def types(action: str, **details: object) -> tuple[str, ...]:
        return event_types_of(_audit(action, **details))

    assert types("VERIFICATION_SUCCEEDED", **PAYMENT) == ("session.verified",)
    assert types("VERIFICATION_FAILED", last_attempt=True) == ("session.failed",)
    assert types("VERIFICATION_FAILED", last_attempt=False) == ()
    assert types("ACCOUNT_LOCKED", locked_until_ms=UNTIL) == ("account.locked", "account.unlocked")
    assert types("ACCOUNT_LOCKED") == ("account.locked",)  # its end unknown: no unlock event
    assert types("PASSKEY_CLONE_SUSPECTED") == ("passkey.clone_suspected",)
    assert types("SESSION_INITIATED", expires_at_ms=UNTIL, **PAYMENT) == ("session.expired",)
    assert types("SESSION_INITIATED", **PAYMENT) == ()
    assert types("PASSKEY_DELETED") == ("enrollment.changed",)
    assert types("TOKEN_REVOKED") == ()
    assert {rule.event_type for rule in EVENT_RULES} == set(EVENT_TYPES)


def test_scheduled_events_are_due_at_their_detail_and_made_at_that_time() -> None:
    lock = _audit("ACCOUNT_LOCKED", locked_until_ms=UNTIL, session="s" * 43)
    assert event_due_at_ms(lock, "account.locked") == lock.at_ms
    assert event_due_at_ms(lock, "account.unlocked") == UNTIL
    assert event_due_at_ms(_audit("ACCOUNT_LOCKED"), "account.unlocked") == 1_780_000_000_000
    assert event_due_at_ms(lock, "session.verified") == lock.at_ms  # not this row's type
    unlocked = json.loads(event_body(lock, "account.unlocked", "m"))
    assert unlocked["created_at_ms"] == UNTIL
    assert unlocked["data"] == {"user_uuid": USER, "session_id": "s" * 43, "locked_until_ms": UNTIL}
    assert json.loads(event_body(lock, "account.locked", "m"))["created_at_ms"] == lock.at_ms


def test_the_two_events_of_one_audit_row_have_ids_that_lead_back_to_it() -> None:
    row = "0f8fad5b-d9cb-469f-a165-70867728950e"
    locked, unlocked = (webhook_event_id(row, t) for t in ("account.locked", "account.unlocked"))
    assert locked == "evt_0f8fad5bd9cb469fa16570867728950e"
    assert unlocked == "evt_0f8fad5bd9cb869fa16570867728950e"  # version 8
    assert parse_webhook_event_id(locked) == (row, frozenset(EVENT_TYPES) - SECOND_TYPES)
    assert parse_webhook_event_id(row) == parse_webhook_event_id(locked)
    assert parse_webhook_event_id(unlocked) == (row, frozenset({"account.unlocked"}))
    for broken in ("evt_", "evt_xyz", "0f8fad5b"):
        with pytest.raises(RemoteProtocolError):
            parse_webhook_event_id(broken)


def test_the_receipt_is_rebuilt_from_the_verifications_audit_event() -> None:
    knowledge = event_receipt(_audit("VERIFICATION_SUCCEEDED", attempt=1, **PAYMENT))
    assert knowledge == Receipt(
        session_id="s" * 43,
        user_id=USER,
        binding=PaymentBinding(amount=4250, currency="EUR", merchant_id="shop-1"),
        issued_at_ms=1_780_000_000_000,
    )
    both = event_receipt(_audit("VERIFICATION_SUCCEEDED", attempt=2, possession=True, **PAYMENT))
    assert both is not None
    linked = LinkedData(session_id="s" * 43, amount=4250, currency="EUR", payee="shop-1", attempt=2)
    assert both.linked_challenge == linked.challenge()
    assert event_receipt(_audit("VERIFICATION_FAILED", **PAYMENT)) is None
    assert event_receipt(_audit("VERIFICATION_SUCCEEDED")) is None  # no session recorded


def test_the_body_names_the_event_once_whatever_the_delivery() -> None:
    body = json.loads(
        event_body(
            _audit("VERIFICATION_FAILED", last_attempt=True, attempt=3, **PAYMENT),
            "session.failed",
            "shop-1",
        )
    )
    assert body == {
        "id": "evt_0f8fad5bd9cb469fa16570867728950e",
        "type": "session.failed",
        "created_at_ms": 1_780_000_000_000,
        "merchant_id": "shop-1",
        "data": {
            "user_uuid": USER,
            "session_id": "s" * 43,
            "amount": 4250,
            "currency": "EUR",
            "attempts": 3,
        },
    }
    verified = event_body(_audit("VERIFICATION_SUCCEEDED", **PAYMENT), "session.verified", "m")
    assert b"receipt_jws" not in verified
    signed = event_body(
        _audit("VERIFICATION_SUCCEEDED", **PAYMENT), "session.verified", "m", receipt_jws="a.b.c"
    )
    assert json.loads(signed)["data"]["receipt_jws"] == "a.b.c"
    locked = event_body(_audit("ACCOUNT_LOCKED", session="s" * 43), "account.locked", "m")
    assert json.loads(locked)["data"] == {"user_uuid": USER, "session_id": "s" * 43}


def test_an_endpoint_subscribes_to_known_types_only_while_enabled() -> None:
    endpoint = WebhookEndpoint(
        endpoint_id="e", merchant_id="m", url="https://h.example/", events=frozenset(EVENT_TYPES)
    )
    assert endpoint.subscribes("session.verified")
    assert not replace(endpoint, enabled=False).subscribes("session.verified")
    with pytest.raises(LocalProtocolError):
        replace(endpoint, events=frozenset({"session.won"}))
    with pytest.raises(LocalProtocolError):
        replace(endpoint, events=frozenset())
    assert parse_event_types([]) == frozenset(EVENT_TYPES)
    assert parse_event_types(["account.locked"]) == {"account.locked"}
    with pytest.raises(RemoteProtocolError, match=r"session\.won"):
        parse_event_types(["session.won"])
