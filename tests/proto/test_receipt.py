"""Token encoding and the receipt's canonical bytes."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from tests.helpers import USER, entropy
from zeropay_proto import (
    BearerToken,
    LocalProtocolError,
    PaymentBinding,
    Receipt,
    RemoteProtocolError,
    b64url,
)
from zeropay_proto.money import MAX_MINOR_UNITS, major_units
from zeropay_proto.receipt import encode_token, parse_bearer, token_digest

RAW = entropy(32, "token")


def test_token_names_its_user_and_round_trips_through_the_bearer_header() -> None:
    text = encode_token(USER, RAW)
    assert len(text) == 64
    parsed = parse_bearer(f"Bearer {text}")
    assert parsed == BearerToken(user_id=USER, digest=token_digest(text))
    assert len(parsed.digest) == 32
    assert encode_token(USER, entropy(32, "other")) != text
    with pytest.raises(LocalProtocolError):
        encode_token(USER, b"short")


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer ", "Bearer " + "!" * 64, "Bearer " + "A" * 63,
     "Bearer " + "é" * 64, "Bearer " + "!" + "A" * 63, "Bearer " + "!!!" + "A" * 61],
)  # fmt: skip
def test_malformed_bearer_is_a_401(header: str | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_bearer(header)
    assert info.value.error_status_hint == 401
    assert info.value.code == "UNAUTHENTICATED"


def test_receipt_canonical_bytes_are_stable_and_bind_every_field() -> None:
    binding = PaymentBinding(amount=1250, currency="EUR", merchant_id="shop-7")
    receipt = Receipt(session_id="s", user_id=USER, binding=binding, issued_at_ms=1)
    expected = (
        b"zeropay-receipt/v1\n"
        b'{"amount":1250,"currency":"EUR","issued_at_ms":1,"merchant_id":"shop-7",'
        b'"sca":["knowledge"],"session_id":"s","user_uuid":"' + USER.encode() + b'"}'
    )
    assert receipt.canonical_bytes() == expected
    others = [
        Receipt(session_id="t", user_id=USER, binding=binding, issued_at_ms=1),
        Receipt(session_id="s", user_id=USER, binding=PaymentBinding(), issued_at_ms=1),
        Receipt(session_id="s", user_id=USER, binding=binding, issued_at_ms=2),
        replace(receipt, linked_challenge=bytes(32)),
    ]
    assert all(o.canonical_bytes() != expected for o in others)


def test_a_binding_holds_whole_minor_units_of_a_known_currency() -> None:
    assert PaymentBinding(amount=4250, currency="EUR").major_amount == Decimal("42.50")
    assert PaymentBinding(amount=500, currency="JPY").major_amount == Decimal(500)
    assert PaymentBinding(amount=1250, currency="KWD").major_amount == Decimal("1.250")
    assert PaymentBinding(currency="EUR").major_amount is None
    for amount, currency in (
        (4250, None),
        (4250, "XYZ"),
        (-1, "EUR"),
        (MAX_MINOR_UNITS + 1, "EUR"),
        (True, "EUR"),
        (Decimal("42.5"), "EUR"),
    ):
        with pytest.raises(LocalProtocolError):
            PaymentBinding(amount=amount, currency=currency)  # type: ignore[arg-type]
    assert major_units(MAX_MINOR_UNITS, "CLF") == Decimal("99999999999.9999")


def test_a_receipt_with_a_passkey_names_both_categories_and_the_signed_challenge() -> None:
    binding = PaymentBinding(amount=4250, currency="EUR", merchant_id="shop-1")
    receipt = Receipt(
        session_id="s", user_id=USER, binding=binding, issued_at_ms=1, linked_challenge=b"\x01" * 32
    )
    fields = receipt.as_dict()
    assert fields["sca"] == ["knowledge", "possession"]
    assert fields["linked_challenge"] == b64url(b"\x01" * 32)
    assert b'"sca":["knowledge","possession"]' in receipt.canonical_bytes()
