"""JSON Schemas (draft 2020-12) of the request bodies :mod:`zeropay_proto.requests` parses.

The server's OpenAPI document is generated from these, so the contract is declared once, here,
beside the parsers; ``tests/property/test_schemas.py`` checks that a body the parser accepts
is valid by its schema, and that each schema's examples parse. Unknown fields are allowed, as
the parsers ignore them.
"""

from __future__ import annotations

from typing import Any

from . import _patterns as patterns
from ._patterns import schema_pattern
from .factors import CATALOGUE, MAX_ENROLLED_FACTORS, MIN_ENROLLED_FACTORS
from .money import CURRENCY_EXPONENTS, MAX_MINOR_UNITS

UUID_PATTERN = schema_pattern(patterns.UUID)
DIGEST_PATTERN = schema_pattern(patterns.DIGEST)
SESSION_ID_PATTERN = schema_pattern(patterns.SESSION_ID)

USER_UUID: dict[str, Any] = {
    "type": "string",
    "pattern": UUID_PATTERN,
    "description": "The user's UUID.",
}


AMOUNT: dict[str, Any] = {
    "type": ["integer", "null"],
    "minimum": 0,
    "maximum": MAX_MINOR_UNITS,
    "description": "The amount in minor units of the currency, which it needs: 42.50 EUR is "
    "4250, 500 JPY is 500, 1.250 KWD is 1250.",
    "examples": [4250],
}
CURRENCY: dict[str, Any] = {
    "type": ["string", "null"],
    "enum": [*sorted(CURRENCY_EXPONENTS), None],
    "description": "An ISO 4217 currency code.",
    "examples": ["EUR"],
}


def _factor_map(minimum: int) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Factor name to the client-side SHA-256 digest of the answer (64 hex).",
        "propertyNames": {"enum": [f.value for f in CATALOGUE]},
        "additionalProperties": {"type": "string", "pattern": DIGEST_PATTERN},
        "minProperties": minimum,
        "maxProperties": MAX_ENROLLED_FACTORS,
    }


ENROLLMENT: dict[str, Any] = {
    "type": "object",
    "required": ["user_uuid", "factors", "device_id"],
    "properties": {
        "user_uuid": USER_UUID,
        "factors": _factor_map(MIN_ENROLLED_FACTORS),
        "device_id": {"type": "string", "pattern": schema_pattern(patterns.DEVICE_ID)},
        "register_passkey": {
            "type": "boolean",
            "description": "Answer a passkey's registration options with the enrollment, "
            "good for one registration without a token (POST /v1/passkeys) for 2 minutes.",
        },
        "grant": {
            "type": "string",
            "pattern": "^zpg_[A-Za-z0-9_-]{1,196}$",
            "description": "The enrollment grant of the link the payer followed "
            "(POST /v1/enrollment/grants): single-use, for this user, and only to create "
            "an enrollment (an update refuses it).",
        },
    },
    "examples": [
        {
            "user_uuid": "123e4567-e89b-42d3-a456-426614174000",
            "factors": {"PIN": "a" * 64, "COLOUR": "b" * 64, "EMOJI": "c" * 64},
            "device_id": "phone-1",
        }
    ],
}

ENROLLMENT_GRANT: dict[str, Any] = {
    "type": "object",
    "required": ["user_uuid"],
    "properties": {"user_uuid": USER_UUID},
    "examples": [{"user_uuid": "123e4567-e89b-42d3-a456-426614174000"}],
}

INITIATE: dict[str, Any] = {
    "type": "object",
    "required": ["user_uuid"],
    "properties": {
        "user_uuid": USER_UUID,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "merchant_id": {
            "type": ["string", "null"],
            "pattern": schema_pattern(patterns.MERCHANT_ID),
        },
        "risk_level": {"enum": ["LOW", "MEDIUM", "HIGH"]},
        "psp_config": {"type": ["object", "null"]},
        "require_passkey": {
            "type": "boolean",
            "description": "Challenge the user's passkey whatever the amount (if they have one).",
        },
    },
    "examples": [
        {
            "user_uuid": "123e4567-e89b-42d3-a456-426614174000",
            "amount": 1250,
            "currency": "EUR",
            "merchant_id": "shop-1",
            "risk_level": "LOW",
        }
    ],
}

PSP_CREATE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "session_id": {"type": ["string", "null"], "pattern": SESSION_ID_PATTERN},
        "amount": AMOUNT,
        "currency": INITIATE["properties"]["currency"],
        "merchant_id": INITIATE["properties"]["merchant_id"],
        "psp_config": {"type": ["object", "null"]},
    },
    "examples": [{"amount": 1250, "currency": "EUR", "merchant_id": "shop-1"}],
}

VERIFY: dict[str, Any] = {
    "type": "object",
    "required": ["session_id", "user_uuid", "factors"],
    "properties": {
        "session_id": {"type": "string", "pattern": SESSION_ID_PATTERN},
        "user_uuid": USER_UUID,
        "factors": _factor_map(1),
        "passkey": {
            "type": ["object", "null"],
            "description": "the PublicKeyCredential of navigator.credentials.get, as JSON, when "
            "the session's required_factors end in PASSKEY",
        },
    },
    "examples": [
        {
            "session_id": "Ej5FZ-ibQtOkVkJmFBdAAHkVl9_UcSSnztfoZ5RRAec",
            "user_uuid": "123e4567-e89b-42d3-a456-426614174000",
            "factors": {"PIN": "a" * 64, "COLOUR": "b" * 64},
        }
    ],
}

PASSKEY_OPTIONS: dict[str, Any] = {
    "type": "object",
    "required": ["user_uuid"],
    "properties": {"user_uuid": USER_UUID},
    "examples": [{"user_uuid": "123e4567-e89b-42d3-a456-426614174000"}],
}

PASSKEY_REGISTRATION: dict[str, Any] = {
    "type": "object",
    "required": ["user_uuid", "credential"],
    "properties": {
        "user_uuid": USER_UUID,
        "credential": {
            "type": "object",
            "description": "the PublicKeyCredential of navigator.credentials.create, as JSON",
        },
    },
    "examples": [
        {
            "user_uuid": "123e4567-e89b-42d3-a456-426614174000",
            "credential": {"id": "Y3JlZC0x", "rawId": "Y3JlZC0x", "type": "public-key"},
        }
    ],
}
