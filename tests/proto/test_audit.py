"""Audit events: round trip through stream fields, anonymised clients, bounded details."""

from __future__ import annotations

import pytest

from tests.helpers import USER, entropy
from zeropay_proto import LocalProtocolError
from zeropay_proto.audit import (
    LOCK_END_DETAIL,
    AuditAction,
    AuditEvent,
    anonymise_client,
    new_event_id,
    with_lock_end,
)

EVENT_ID = new_event_id(entropy(16, "event"))


def event(**details: object) -> AuditEvent:
    return AuditEvent(
        event_id=EVENT_ID,
        action=AuditAction.VERIFICATION_FAILED,
        user_id=USER,
        client="203.0.113.0/24",
        at_ms=1_800_000_000_000,
        details=details,  # type: ignore[arg-type]
    )


def test_event_round_trips_through_stream_fields() -> None:
    original = event(attempts_remaining=2, decoy=False, merchant="m-1", note=None)
    fields = original.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert AuditEvent.from_fields(fields) == original
    anonymous = AuditEvent(
        event_id=EVENT_ID, action=AuditAction.SESSION_INITIATED, user_id=None, client=None, at_ms=1
    )
    assert AuditEvent.from_fields(anonymous.to_fields()) == anonymous


def test_a_lock_event_gains_the_lock_end_and_keeps_the_rest() -> None:
    template = event(session="s", merchant="m-1")
    locked = with_lock_end(template, 1_800_000_900_000)
    assert dict(locked.details) == {
        "session": "s",
        "merchant": "m-1",
        LOCK_END_DETAIL: 1_800_000_900_000,
    }
    assert (locked.event_id, locked.at_ms) == (template.event_id, template.at_ms)
    assert AuditEvent.from_fields(locked.to_fields()) == locked


def test_event_id_is_a_uuid4() -> None:
    assert EVENT_ID[14] == "4"
    with pytest.raises(LocalProtocolError):
        new_event_id(b"short")
    with pytest.raises(ValueError, match="badly formed"):
        AuditEvent(event_id="nope", action=AuditAction.ENROLLED, user_id=None, client=None, at_ms=0)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {**event().to_fields(), "action": "NOPE"},
        {**event().to_fields(), "at": "x"},
        {**event().to_fields(), "details": "[1]"},
        {**event().to_fields(), "details": "{"},
    ],
)
def test_malformed_entries_are_local_protocol_errors(fields: dict[str, str]) -> None:
    with pytest.raises(LocalProtocolError):
        AuditEvent.from_fields(fields)


def test_details_are_bounded() -> None:
    with pytest.raises(LocalProtocolError):
        event(**{f"k{i}": i for i in range(17)})
    with pytest.raises(LocalProtocolError):
        event(note="x" * 129)
    with pytest.raises(LocalProtocolError):
        event(**{"k" * 129: 1})


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("not an address", None),
        ("", None),
        (None, None),
    ],
)
def test_client_addresses_are_anonymised(address: str | None, expected: str | None) -> None:
    assert anonymise_client(address) == expected
