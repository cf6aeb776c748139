"""The request-body parsers: every rejection names its field and status."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.helpers import USER, entropy
from zeropay_proto import (
    Factor,
    RemoteProtocolError,
    RiskLevel,
    make_session_id,
    parse_enrollment,
    parse_initiate,
    parse_psp_create,
    parse_verify,
)
from zeropay_proto.requests import (
    load_json_object,
    parse_passkey_options,
    parse_passkey_registration,
)
from zeropay_proto.returns import ReturnUrls

SID = make_session_id(USER, entropy(16))
DIGESTS = {"PIN": "00" * 32, "COLOUR": "11" * 32, "EMOJI": "22" * 32}


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def rejection(parse: Any, raw: bytes, *, loopback: bool = False) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse(raw, **({"allow_loopback_http": True} if loopback else {}))
    return info.value


def test_enrollment_parses() -> None:
    req = parse_enrollment(body(user_uuid=USER.upper(), factors=DIGESTS, device_id="phone-1"))
    assert req.user_id == USER
    assert set(req.factors) == {Factor.PIN, Factor.COLOUR, Factor.EMOJI}
    assert req.device_id == "phone-1"


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"factors": DIGESTS, "device_id": "d"}, "user_uuid", "MISSING_FIELD"),
        ({"user_uuid": USER, "device_id": "d"}, "factors", "MISSING_FIELD"),
        ({"user_uuid": USER, "factors": DIGESTS}, "device_id", "MISSING_FIELD"),
        ({"user_uuid": USER, "factors": DIGESTS, "device_id": "a b"}, "device_id", "INVALID_INPUT"),
        ({"user_uuid": USER, "factors": DIGESTS, "device_id": 5}, "device_id", "INVALID_INPUT"),
        ({"user_uuid": USER, "factors": {"PIN": "00" * 32}, "device_id": "d"}, "factors",
         "FACTOR_COUNT"),
        ({"user_uuid": "x", "factors": DIGESTS, "device_id": "d"}, "user_uuid", "INVALID_UUID"),
    ],
)  # fmt: skip
def test_enrollment_rejections_name_the_field(
    fields: dict[str, Any], field: str, code: str
) -> None:
    err = rejection(parse_enrollment, body(**fields))
    assert (err.field, err.code, err.error_status_hint) == (field, code, 400)


def test_duplicate_factor_keys_are_refused() -> None:
    raw = (
        b'{"user_uuid": "%s", "device_id": "d", "factors": {"PIN": "%s", "PIN": "%s", '
        b'"COLOUR": "%s", "EMOJI": "%s"}}' % (USER.encode(), *(b"00" * 32,) * 4)
    )
    err = rejection(parse_enrollment, raw)
    assert (err.code, err.field) == ("INVALID_JSON", "PIN")


def test_initiate_parses_with_defaults() -> None:
    req = parse_initiate(body(user_uuid=USER))
    assert req.risk is RiskLevel.MEDIUM
    assert req.binding.amount is None
    assert req.psp_config is None
    full = parse_initiate(
        b'{"user_uuid": "%s", "amount": 1250, "currency": "EUR", "merchant_id": "shop-1", '
        b'"risk_level": "LOW", "psp_config": {"provider": "sandbox"}, '
        b'"return_url": "https://shop.example/done?order=7", "cancel_url": "https://shop.example/"}'
        % USER.encode()
    )
    assert full.binding.amount == 1250
    assert full.binding.major_amount == Decimal("12.50")
    assert (full.binding.currency, full.binding.merchant_id) == ("EUR", "shop-1")
    assert full.risk is RiskLevel.LOW
    assert full.psp_config == {"provider": "sandbox"}
    assert full.return_to == ReturnUrls(
        return_url="https://shop.example/done?order=7", cancel_url="https://shop.example/"
    )
    yen = parse_initiate(body(user_uuid=USER, amount=500, currency="JPY")).binding
    dinar = parse_initiate(body(user_uuid=USER, amount=1250, currency="KWD")).binding
    assert (yen.major_amount, dinar.major_amount) == (Decimal(500), Decimal("1.250"))
    assert parse_initiate(body(user_uuid=USER, currency="EUR")).binding.amount is None


def test_return_urls_are_https_or_loopback_http_in_development_only() -> None:
    local = "http://127.0.0.1:8080/done"
    for url in (local, "http://localhost/done", "http://[::1]:9/x"):
        req = parse_initiate(body(user_uuid=USER, return_url=url), allow_loopback_http=True)
        assert req.return_to.return_url == url
    for bad in (
        local,  # not in development
        "http://shop.example/done",
        "javascript:alert(1)",
        "https://user:pw@shop.example/",
        "https:///nohost",
        "https://shop.example:99999/",
        "/relative",
        "https://shop.example/" + "a" * 2048,
        "https://shop.example/\u00e9",
        "https://shop.example/a b",
        7,
    ):
        err = rejection(parse_initiate, body(user_uuid=USER, cancel_url=bad))
        assert (err.field, err.error_status_hint) == ("cancel_url", 400)
    http = rejection(
        parse_initiate, body(user_uuid=USER, return_url="http://shop.example/"), loopback=True
    )
    assert http.field == "return_url"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"transaction_amount": 12}, "transaction_amount"),
        ({"amount": -1, "currency": "EUR"}, "amount"),
        ({"amount": "4250", "currency": "EUR"}, "amount"),
        ({"amount": True, "currency": "EUR"}, "amount"),
        ({"amount": 42.5, "currency": "EUR"}, "amount"),
        ({"amount": 4250.0, "currency": "EUR"}, "amount"),
        ({"amount": 0.001, "currency": "EUR"}, "amount"),
        ({"amount": 1e9, "currency": "EUR"}, "amount"),
        ({"amount": 10**15, "currency": "EUR"}, "amount"),
        ({"amount": 4250}, "currency"),
        ({"amount": 4250, "currency": "XYZ"}, "currency"),
        ({"currency": "eur"}, "currency"),
        ({"currency": 978}, "currency"),
        ({"merchant_id": "a" * 65}, "merchant_id"),
        ({"risk_level": "EXTREME"}, "risk_level"),
        ({"risk_level": ["LOW"]}, "risk_level"),
        ({"psp_config": "sandbox"}, "psp_config"),
    ],
)
def test_initiate_rejections_name_the_field(extra: dict[str, Any], field: str) -> None:
    err = rejection(parse_initiate, body(user_uuid=USER, **extra))
    assert err.field == field
    assert err.error_status_hint == 400


def test_verify_parses() -> None:
    req = parse_verify(body(session_id=SID, user_uuid=USER, factors={"PIN": "00" * 32}))
    assert (req.session_id, req.user_id) == (SID, USER)
    assert req.factors == {Factor.PIN: bytes(32)}


def test_verify_for_another_users_session_is_not_found() -> None:
    other = "00000000-0000-4000-8000-000000000001"
    err = rejection(parse_verify, body(session_id=SID, user_uuid=other, factors=DIGESTS))
    assert (err.code, err.error_status_hint) == ("SESSION_NOT_FOUND", 404)


def test_verify_needs_at_least_one_factor() -> None:
    err = rejection(parse_verify, body(session_id=SID, user_uuid=USER, factors={}))
    assert err.code == "FACTOR_COUNT"


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"", 400, "INVALID_JSON"),
        (b"\xff\xfe", 400, "INVALID_JSON"),
        (b"[]", 400, "INVALID_JSON"),
        (b'{"a": NaN}', 400, "INVALID_JSON"),
        (b"[" * 5000 + b"]" * 5000, 400, "INVALID_JSON"),
        (b'{"a": ' + b"9" * 5000 + b"}", 400, "INVALID_JSON"),
        (b" " * (10 * 1024 + 1), 413, "PAYLOAD_TOO_LARGE"),
    ],
)
def test_bodies_that_are_not_small_json_objects(raw: bytes, status: int, code: str) -> None:
    err = rejection(load_json_object, raw)
    assert (err.error_status_hint, err.code) == (status, code)


def test_psp_create_parses_optional_fields_and_names_its_session_user() -> None:
    empty = parse_psp_create(b"{}")
    assert (empty.session_id, empty.user_id, empty.psp_config) == (None, None, {})
    full = parse_psp_create(body(session_id=SID, amount=5, currency="USD", psp_config={"x": 1}))
    assert (full.session_id, full.user_id) == (SID, USER)
    assert full.binding.amount == 5
    assert full.psp_config == {"x": 1}
    assert rejection(parse_psp_create, body(session_id="nope")).field == "session_id"
    assert rejection(parse_psp_create, body(psp_config=[1])).field == "psp_config"


def test_every_schema_example_parses_with_its_parser() -> None:
    from zeropay_proto import schemas

    pairs: list[tuple[dict[str, Any], Callable[[bytes], object]]] = [
        (schemas.ENROLLMENT, parse_enrollment),
        (schemas.INITIATE, parse_initiate),
        (schemas.VERIFY, parse_verify),
        (schemas.PSP_CREATE, parse_psp_create),
    ]
    for schema, parse in pairs:
        assert schema["examples"]
        for example in schema["examples"]:
            parse(json.dumps(example).encode())


def test_passkey_bodies_name_the_user_and_carry_the_credential_as_is() -> None:
    user = "123e4567-e89b-42d3-a456-426614174000"
    assert parse_passkey_options(json.dumps({"user_uuid": user}).encode()) == user
    body = {"user_uuid": user, "credential": {"id": "abc"}}
    parsed = parse_passkey_registration(json.dumps(body).encode())
    assert (parsed.user_id, dict(parsed.credential)) == (user, {"id": "abc"})
    with pytest.raises(RemoteProtocolError) as bad:
        parse_passkey_registration(json.dumps({"user_uuid": user, "credential": "x"}).encode())
    assert bad.value.field == "credential"
