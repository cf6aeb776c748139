"""Parsers of the JSON request bodies: untrusted bytes in, validated inputs out.

Each parser either returns a frozen request object or raises
:class:`~zeropay_proto.RemoteProtocolError` naming the field at fault (413 for a body over
10 kB). Nothing else escapes, whatever the bytes: that is what the fuzz harness checks.
Unknown fields are ignored, for compatibility with the original service's clients.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from . import _patterns as patterns
from ._errors import RemoteProtocolError
from ._patterns import matcher
from .challenge import RiskLevel
from .factors import MAX_ENROLLED_FACTORS, MIN_ENROLLED_FACTORS, Factor, parse_factor_digests
from .identifiers import parse_session_id, parse_user_id
from .money import CURRENCY_EXPONENTS, MAX_MINOR_UNITS
from .receipt import PaymentBinding
from .returns import ReturnUrls, parse_return_url

#: SPEC section 3: bodies over 10 kB are refused with 413.
MAX_BODY_BYTES = 10 * 1024

_MERCHANT = matcher(patterns.MERCHANT_ID)
_DEVICE = matcher(patterns.DEVICE_ID)


@dataclass(frozen=True, kw_only=True)
class EnrollmentRequest:
    """``POST /v1/enrollment/store`` and ``PUT /v1/enrollment/update``."""

    user_id: str
    factors: Mapping[Factor, bytes]
    device_id: str
    #: Ask for a passkey's registration options with the new enrollment.
    register_passkey: bool = False
    #: The enrollment grant of the link the payer followed (:mod:`zeropay_proto.grants`).
    grant: str | None = None


@dataclass(frozen=True, kw_only=True)
class InitiateRequest:
    """``POST /v1/verification/initiate``."""

    user_id: str
    binding: PaymentBinding
    risk: RiskLevel
    psp_config: Mapping[str, Any] | None
    #: The merchant asks for the possession factor (a passkey), whatever the amount.
    require_passkey: bool = False
    #: Where the payer's page sends the payer back.
    return_to: ReturnUrls = field(default_factory=ReturnUrls)


@dataclass(frozen=True, kw_only=True)
class VerifyRequest:
    """``POST /v1/verification/verify``."""

    session_id: str
    user_id: str
    factors: Mapping[Factor, bytes]
    #: The browser's assertion (``PublicKeyCredential`` as JSON), checked by
    #: :func:`zeropay_proto.passkeys.check_assertion`, not here.
    passkey: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class PspCreateRequest:
    """``POST /v1/psp/session/create``."""

    session_id: str | None
    user_id: str | None
    binding: PaymentBinding
    psp_config: Mapping[str, Any]


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RemoteProtocolError(
                "duplicate key in JSON object", code="INVALID_JSON", field=key
            )
        obj[key] = value
    return obj


def _reject_constant(name: str) -> None:
    raise RemoteProtocolError(f"{name} is not a JSON number", code="INVALID_JSON")


def load_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object (strict UTF-8, no duplicate keys, no NaN)."""
    if len(body) > MAX_BODY_BYTES:
        raise RemoteProtocolError(
            "request body exceeds 10 kB", code="PAYLOAD_TOO_LARGE", error_status_hint=413
        )
    try:
        decoded = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_float=Decimal,
            parse_constant=_reject_constant,
        )
    # ValueError covers bad UTF-8, bad JSON and integers past Python's digit limit;
    # RecursionError covers pathological nesting.
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError("body is not valid JSON", code="INVALID_JSON") from exc
    if not isinstance(decoded, dict):
        raise RemoteProtocolError("body must be a JSON object", code="INVALID_JSON")
    return decoded


def _required(obj: Mapping[str, Any], name: str) -> Any:
    if obj.get(name) is None:
        raise RemoteProtocolError("is required", code="MISSING_FIELD", field=name)
    return obj[name]


def _optional_text(obj: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise RemoteProtocolError(f"has an invalid format ({pattern.pattern})", field=name)
    return value


def _amount(obj: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """``amount`` (an integer of minor units) and ``currency`` (ISO 4217), which an amount
    needs. The decoder made every number with a fraction or an exponent a ``Decimal``, so
    ``42.5``, ``4250.0`` and ``1e3`` are refused here, not rounded."""
    if "transaction_amount" in obj:
        raise RemoteProtocolError(
            "was replaced by amount, an integer of the currency's minor units "
            "(42.50 EUR is amount 4250, currency EUR)",
            code="FIELD_REMOVED",
            field="transaction_amount",
        )
    currency = obj.get("currency")
    if currency is not None and (
        not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS
    ):
        raise RemoteProtocolError("must be an ISO 4217 currency code", field="currency")
    amount = obj.get("amount")
    if amount is None:
        return None, currency
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise RemoteProtocolError("must be an integer of minor units", field="amount")
    if not 0 <= amount <= MAX_MINOR_UNITS:
        raise RemoteProtocolError(f"must be between 0 and {MAX_MINOR_UNITS}", field="amount")
    if currency is None:
        raise RemoteProtocolError(
            "is required with an amount", code="MISSING_FIELD", field="currency"
        )
    return amount, currency


def parse_enrollment(body: bytes) -> EnrollmentRequest:
    """``{user_uuid, factors: {NAME: 64-hex}, device_id, register_passkey?}`` with 3-15
    distinct factors."""
    obj = load_json_object(body)
    user_id = parse_user_id(_required(obj, "user_uuid"))
    factors = parse_factor_digests(
        _required(obj, "factors"),
        field="factors",
        minimum=MIN_ENROLLED_FACTORS,
        maximum=MAX_ENROLLED_FACTORS,
    )
    device_id = _required(obj, "device_id")
    if not isinstance(device_id, str) or not _DEVICE.match(device_id):
        raise RemoteProtocolError("must be 1-128 printable ASCII characters", field="device_id")
    return EnrollmentRequest(
        user_id=user_id,
        factors=factors,
        device_id=device_id,
        register_passkey=_flag(obj, "register_passkey"),
        grant=_grant(obj),
    )


def parse_enrollment_grant(body: bytes) -> str:
    """``POST /v1/enrollment/grants``: ``{user_uuid}``; the user id."""
    return parse_user_id(_required(load_json_object(body), "user_uuid"))


def _grant(obj: Mapping[str, Any]) -> str | None:
    grant = obj.get("grant")
    if grant is not None and not isinstance(grant, str):
        raise RemoteProtocolError("must be an enrollment grant", field="grant")
    return grant


def _flag(obj: Mapping[str, Any], name: str) -> bool:
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise RemoteProtocolError("must be true or false", field=name)
    return value


def _binding(obj: Mapping[str, Any]) -> PaymentBinding:
    amount, currency = _amount(obj)
    return PaymentBinding(
        amount=amount,
        currency=currency,
        merchant_id=_optional_text(obj, "merchant_id", _MERCHANT),
    )


def _psp_config(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    config = obj.get("psp_config")
    if config is not None and not isinstance(config, dict):
        raise RemoteProtocolError("must be an object", field="psp_config")
    return None if config is None else MappingProxyType(config)


def parse_initiate(body: bytes, *, allow_loopback_http: bool = False) -> InitiateRequest:
    """``{user_uuid, amount?, currency?, merchant_id?, risk_level?, psp_config?,
    require_passkey?, return_url?, cancel_url?}``; the URLs are HTTPS, or plain HTTP to a
    loopback host where ``allow_loopback_http`` (development)."""
    obj = load_json_object(body)
    user_id = parse_user_id(_required(obj, "user_uuid"))
    risk_text = obj.get("risk_level", RiskLevel.MEDIUM.value)
    try:
        risk = RiskLevel(risk_text)
    except (ValueError, TypeError):
        raise RemoteProtocolError("must be LOW, MEDIUM or HIGH", field="risk_level") from None
    return InitiateRequest(
        user_id=user_id,
        binding=_binding(obj),
        risk=risk,
        psp_config=_psp_config(obj),
        require_passkey=_flag(obj, "require_passkey"),
        return_to=ReturnUrls(
            return_url=parse_return_url(
                obj.get("return_url"), field="return_url", allow_loopback_http=allow_loopback_http
            ),
            cancel_url=parse_return_url(
                obj.get("cancel_url"), field="cancel_url", allow_loopback_http=allow_loopback_http
            ),
        ),
    )


def parse_psp_create(body: bytes) -> PspCreateRequest:
    """``{session_id?, amount?, currency?, merchant_id?, psp_config?}``."""
    obj = load_json_object(body)
    session_id = user_id = None
    if obj.get("session_id") is not None:
        session_id, user_id = parse_session_id(obj["session_id"])
    return PspCreateRequest(
        session_id=session_id,
        user_id=user_id,
        binding=_binding(obj),
        psp_config=_psp_config(obj) or MappingProxyType({}),
    )


def parse_verify(body: bytes) -> VerifyRequest:
    """``{session_id, user_uuid, factors: {NAME: 64-hex}, passkey?: {...}}``."""
    obj = load_json_object(body)
    session_id, session_user = parse_session_id(_required(obj, "session_id"))
    user_id = parse_user_id(_required(obj, "user_uuid"))
    if user_id != session_user:
        raise RemoteProtocolError(
            "session not found", code="SESSION_NOT_FOUND", field="session_id", error_status_hint=404
        )
    factors = parse_factor_digests(
        _required(obj, "factors"), field="factors", minimum=1, maximum=MAX_ENROLLED_FACTORS
    )
    passkey = obj.get("passkey")
    if passkey is not None and not isinstance(passkey, dict):
        raise RemoteProtocolError("must be the browser's PublicKeyCredential", field="passkey")
    return VerifyRequest(
        session_id=session_id,
        user_id=user_id,
        factors=factors,
        passkey=None if passkey is None else MappingProxyType(passkey),
    )


@dataclass(frozen=True, kw_only=True)
class PasskeyRegistrationRequest:
    """``POST /v1/passkeys``: the browser's registration response, for ``user_id``."""

    user_id: str
    credential: Mapping[str, Any]


def parse_passkey_options(body: bytes) -> str:
    """``{user_uuid}``: whose passkey is about to be registered."""
    return parse_user_id(_required(load_json_object(body), "user_uuid"))


def parse_passkey_registration(body: bytes) -> PasskeyRegistrationRequest:
    """``{user_uuid, credential: {...}}``: the credential is checked by
    :func:`zeropay_proto.passkeys.check_registration`, not here."""
    obj = load_json_object(body)
    credential = _required(obj, "credential")
    if not isinstance(credential, dict):
        raise RemoteProtocolError("must be the browser's PublicKeyCredential", field="credential")
    user_id = parse_user_id(_required(obj, "user_uuid"))
    return PasskeyRegistrationRequest(user_id=user_id, credential=MappingProxyType(credential))
