"""The schemas of the service's answers: every field each route sends, and nothing else.

The request bodies' schemas live beside their parsers (:mod:`zeropay_proto.schemas`); these
describe what the flows answer, and :mod:`zeropay_server.openapi` publishes both. Objects
are closed (``additionalProperties: false``): the contract test (schemathesis, response
conformance) fails on any field a flow sends that is not declared here.
"""

from __future__ import annotations

from typing import Any

from zeropay_proto import schemas
from zeropay_proto.factors import CATALOGUE

from .problems import PROBLEMS


def closed(
    properties: dict[str, Any],
    *,
    optional: tuple[str, ...] = (),
    description: str | None = None,
    example: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An object with exactly ``properties``, all required but ``optional``."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    if example is not None:
        schema["examples"] = [example]
    return schema


def _text(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _int(description: str, minimum: int = 0) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": description}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


USER = "123e4567-e89b-42d3-a456-426614174000"
SESSION = "Ej5FZ-ibQtOkVkJmFBdAAHkVl9_UcSSnztfoZ5RRAec"
_SUCCESS = {"const": True, "description": "Always true on a 2xx answer (errors are problems)."}
_MS = _int("Milliseconds since the epoch.")
_SESSION_ID = _text("The verification session's id.", pattern=schemas.SESSION_ID_PATTERN)
_FACTOR_NAMES = {"enum": [*(f.value for f in CATALOGUE), "PASSKEY"]}
_B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$", "description": "base64url"}

PROBLEM = closed(
    {
        "type": _text("A stable URI reference per `code`; GET it for its meaning."),
        "title": _text("The type's short summary."),
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": _text("What went wrong with this request."),
        "code": {"enum": sorted(PROBLEMS), "description": "The machine-readable code."},
        "field": _text("The input at fault: a body field (dotted), header or path parameter."),
        "attempts_remaining": _int("A failed verification: attempts the session has left."),
        "retry_after": _int("Seconds to wait before retrying, as `Retry-After` says.", 1),
    },
    optional=("field", "attempts_remaining", "retry_after"),
    description="RFC 9457 problem details, with the service's extension members.",
    example={
        "type": "/problems/verification-failed",
        "title": "Verification failed",
        "status": 401,
        "detail": "verification failed",
        "code": "VERIFICATION_FAILED",
        "attempts_remaining": 2,
    },
)

_CREDENTIAL_DESCRIPTOR = closed(
    {"id": _B64URL, "type": {"const": "public-key"}, "transports": {"type": "array"}},
    optional=("transports",),
)
CREATION_OPTIONS = closed(
    {
        "rp": closed({"name": {"type": "string"}, "id": {"type": "string"}}),
        "user": closed(
            {"id": _B64URL, "name": {"type": "string"}, "displayName": {"type": "string"}}
        ),
        "challenge": _B64URL,
        "pubKeyCredParams": {
            "type": "array",
            "items": closed({"type": {"const": "public-key"}, "alg": {"type": "integer"}}),
        },
        "timeout": _int("Milliseconds the ceremony may take."),
        "excludeCredentials": {"type": "array", "items": _CREDENTIAL_DESCRIPTOR},
        "authenticatorSelection": closed(
            {
                "residentKey": {"type": "string"},
                "requireResidentKey": {"type": "boolean"},
                "userVerification": {"type": "string"},
                "authenticatorAttachment": {"type": "string"},
            },
            optional=("authenticatorAttachment", "requireResidentKey"),
        ),
        "attestation": {"type": "string"},
    },
    description="PublicKeyCredentialCreationOptionsJSON (WebAuthn Level 3) for "
    "navigator.credentials.create, after PublicKeyCredential.parseCreationOptionsFromJSON.",
)
REQUEST_OPTIONS = closed(
    {
        "challenge": _B64URL,
        "timeout": _int("Milliseconds the ceremony may take."),
        "rpId": {"type": "string"},
        "allowCredentials": {"type": "array", "items": _CREDENTIAL_DESCRIPTOR},
        "userVerification": {"type": "string"},
    },
    description="PublicKeyCredentialRequestOptionsJSON (WebAuthn Level 3) for "
    "navigator.credentials.get; its challenge is the hash of `linked_data`.",
)
LINKED_DATA = closed(
    {
        "session_id": _SESSION_ID,
        "amount": {"type": ["integer", "null"], "minimum": 0, "description": "Minor units."},
        "currency": {"type": ["string", "null"]},
        "payee": {"type": ["string", "null"]},
        "attempt": _int("The attempt (1-based) the signature is good for.", 1),
    },
    description="What the passkey signs: the payment, for one attempt (dynamic linking).",
)
PASSKEY_REQUEST = closed(
    {"options": REQUEST_OPTIONS, "linked_data": LINKED_DATA},
    description="Present when the session challenges a passkey.",
)
PSP_SESSION = closed(
    {
        "psp_session_id": _text("The provider's checkout id.", pattern="^psp_"),
        "provider": {"type": "string"},
        "status": {"type": "string"},
        "checkout_url": {"type": "string", "format": "uri"},
        "amount": {"type": ["integer", "null"], "minimum": 0, "description": "Minor units."},
        "currency": {"type": ["string", "null"]},
        "merchant_id": {"type": ["string", "null"]},
        "verification_session_id": {"type": ["string", "null"]},
    },
    description="A payment provider's checkout session.",
)
RECEIPT = closed(
    {
        "session_id": _SESSION_ID,
        "user_uuid": schemas.USER_UUID,
        "amount": {"type": ["integer", "null"], "minimum": 0, "description": "Minor units."},
        "currency": {"type": ["string", "null"]},
        "merchant_id": {"type": ["string", "null"]},
        "issued_at_ms": _MS,
        "sca": {
            "type": "array",
            "items": {"enum": ["knowledge", "possession"]},
            "description": "The categories of element the verification proved (PSD2).",
        },
        "linked_challenge": {**_B64URL, "description": "The challenge the passkey signed."},
        "key_id": _text("The `kid` of the key in /v1/keys that signed it."),
        "alg": {"const": "EdDSA"},
        "signature": {
            **_B64URL,
            "description": "Ed25519 over `zeropay-receipt/v1\\n` and the receipt's fields as "
            "key-sorted, whitespace-free ASCII JSON (prefer `receipt_jws`).",
        },
    },
    optional=("linked_challenge",),
)
_ENROLLED_FACTORS = {"type": "array", "items": {"enum": [f.value for f in CATALOGUE]}}
_PASSKEY = closed(
    {
        "credential_id": _B64URL,
        "sign_count": _int("The authenticator's signature counter, as last seen."),
        "created_at_ms": _MS,
    }
)
_STATUS = {"enum": ["pending", "verified", "failed", "expired"]}

_GRANT_EXAMPLE = "zpg_C299LlfBT36aWS8djwxqEQAAAAAADb-IZWVlZWVlZWVlZWVlZWVlZUcnc02mKT_xWsp1VNVJ7eI"

ANSWERS: dict[str, dict[str, Any]] = {
    "issue_grant": closed(
        {
            "success": _SUCCESS,
            "user_uuid": schemas.USER_UUID,
            "grant": {"type": "string", "description": "The grant (`zpg_...`), single-use."},
            "enroll_url": {
                "type": "string",
                "description": "Where to send the payer: the enroll page with the grant.",
            },
            "expires_in": _int("Seconds the grant stays good.", 1),
        },
        example={
            "success": True,
            "user_uuid": USER,
            "grant": _GRANT_EXAMPLE,
            "enroll_url": f"/enroll?grant={_GRANT_EXAMPLE}",
            "expires_in": 900,
        },
    ),
    "read_grant": closed(
        {
            "success": _SUCCESS,
            "user_uuid": schemas.USER_UUID,
            "expires_in": _int("Seconds the grant stays good.", 1),
        },
        example={"success": True, "user_uuid": USER, "expires_in": 840},
    ),
    "enroll": closed(
        {
            "success": _SUCCESS,
            "user_uuid": schemas.USER_UUID,
            "factor_count": _int("How many factors were enrolled.", 3),
            "enrolled_at_ms": _MS,
            "passkey_options": _nullable(CREATION_OPTIONS),
        },
        optional=("passkey_options",),
        example={
            "success": True,
            "user_uuid": USER,
            "factor_count": 3,
            "enrolled_at_ms": 1_780_000_000_000,
        },
    ),
    "update_enrollment": closed(
        {
            "success": _SUCCESS,
            "user_uuid": schemas.USER_UUID,
            "factor_count": _int("How many factors are enrolled now.", 3),
        }
    ),
    "delete_enrollment": closed(
        {"success": _SUCCESS, "user_uuid": schemas.USER_UUID, "deleted": {"const": True}}
    ),
    "export_enrollment": closed(
        {
            "success": _SUCCESS,
            "user_uuid": schemas.USER_UUID,
            "enrollment": closed(
                {
                    "device_id": {"type": "string"},
                    "factors": _ENROLLED_FACTORS,
                    "factor_count": _int("How many factors are enrolled.", 3),
                    "key_version": _int("The master key that seals the record.", 1),
                    "kdf": closed(
                        {"algorithm": {"const": "PBKDF2-HMAC-SHA256"}, "iterations": _int("", 1)}
                    ),
                    "created_at_ms": _MS,
                    "updated_at_ms": _MS,
                }
            ),
            "audit_trail": {
                "type": "array",
                "items": closed(
                    {
                        "event_id": {"type": "string"},
                        "action": {"type": "string"},
                        "at_ms": _MS,
                        "client": {"type": "string"},
                        "details": {
                            "type": "object",
                            "additionalProperties": {
                                "type": ["string", "integer", "boolean", "null"]
                            },
                        },
                    }
                ),
            },
        },
        description="What the service holds of the user: never digests or verifiers.",
    ),
    "passkey_options": closed({"success": _SUCCESS, "options": CREATION_OPTIONS}),
    "register_passkey": closed({"success": _SUCCESS, "passkey": _PASSKEY}),
    "list_passkeys": closed(
        {"success": _SUCCESS, "passkeys": {"type": "array", "items": _PASSKEY}}
    ),
    "delete_passkey": closed({"success": _SUCCESS, "deleted": {"const": True}}),
    "initiate": closed(
        {
            "success": _SUCCESS,
            "session_id": _SESSION_ID,
            "required_factors": {
                "type": "array",
                "items": _FACTOR_NAMES,
                "description": "The factors to answer, `PASSKEY` last if one is challenged.",
            },
            "expires_in": _int("Seconds the session lives.", 1),
            "passkey": PASSKEY_REQUEST,
            "psp_session": {
                **PSP_SESSION,
                "description": "The checkout, when `psp_config` asked for one and the "
                "provider answered in time.",
            },
        },
        optional=("passkey", "psp_session"),
        example={
            "success": True,
            "session_id": SESSION,
            "required_factors": ["PIN", "COLOUR", "EMOJI"],
            "expires_in": 300,
        },
    ),
    "verify": closed(
        {
            "success": _SUCCESS,
            "auth_token": _text("A bearer token for this user.", pattern="^[A-Za-z0-9_-]{64}$"),
            "token_type": {"const": "Bearer"},
            "expires_in": _int("Seconds the token lives.", 1),
            "receipt": RECEIPT,
            "receipt_jws": _text(
                "The receipt as a compact JWS (EdDSA, `kid` in /v1/keys): check it with any "
                "JOSE library.",
                pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
            ),
        }
    ),
    "status": closed(
        {
            "success": _SUCCESS,
            "session_id": _SESSION_ID,
            "status": _STATUS,
            "attempts_used": _int("Attempts made."),
            "attempts_remaining": _int("Attempts left (0 once the session is decided)."),
            "expires_in": _int("Seconds until the session expires."),
            "required_factors": {"type": "array", "items": _FACTOR_NAMES},
            "payment": closed(
                {
                    "amount": {"type": ["integer", "null"], "minimum": 0},
                    "currency": {"type": ["string", "null"]},
                    "exponent": {
                        "type": ["integer", "null"],
                        "description": "The currency's minor-unit exponent (EUR 2).",
                    },
                    "payee": {"type": ["string", "null"], "description": "The merchant's id."},
                    "payee_name": {
                        "type": ["string", "null"],
                        "description": "The merchant's display name (`merchants name`), "
                        "what the payer is shown; null if it has none.",
                    },
                }
            ),
            "return_url": {"type": ["string", "null"], "format": "uri"},
            "cancel_url": {"type": ["string", "null"], "format": "uri"},
            "passkey": PASSKEY_REQUEST,
        },
        optional=("passkey",),
    ),
    "validate": closed(
        {
            "success": _SUCCESS,
            "valid": {"const": True},
            "user_uuid": schemas.USER_UUID,
            "session_id": {"type": "string"},
            "expires_in": _int("Seconds the token has left."),
        }
    ),
    "revoke": closed({"success": _SUCCESS, "revoked": {"const": True}}),
    "psp_create": closed(
        {"success": _SUCCESS, "psp_session": PSP_SESSION, "expires_in": _int("Seconds.", 1)}
    ),
    "psp_get": closed({"success": _SUCCESS, "psp_session": PSP_SESSION}),
    "keys": closed(
        {
            "keys": {
                "type": "array",
                "items": closed(
                    {
                        "kty": {"const": "OKP"},
                        "crv": {"const": "Ed25519"},
                        "x": _B64URL,
                        "kid": {"type": "string"},
                        "use": {"const": "sig"},
                        "alg": {"const": "EdDSA"},
                    }
                ),
            }
        },
        description="A JWK Set: the receipt-signing key, then each retired key for a while.",
    ),
    "live": closed({"status": {"const": "ok"}}),
    "ready": closed(
        {
            "status": {"enum": ["ready", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        }
    ),
    "health": closed(
        {
            "status": {"enum": ["ok", "degraded"]},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "storage": {"enum": ["memory", "redis+postgresql"]},
            "crypto_queue_depth": _int("Key derivations waiting for a worker."),
        }
    ),
    "openapi": {"type": "object", "description": "This document."},
    "problem_type": closed(
        {
            "type": {"type": "string"},
            "code": {"type": "string"},
            "status": {"type": "integer"},
            "title": {"type": "string"},
            "description": {"type": "string"},
        }
    ),
}

_JWS = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6InJrLTIwMjYtMTIiLCJ0eXAiOiJ6ZXJvcGF5LXJlY2VpcHQranNvbiJ9"
    ".eyJhbW91bnQiOjQyNTB9.c2lnbmF0dXJl"
)
_RECEIPT_EXAMPLE = {
    "session_id": SESSION,
    "user_uuid": USER,
    "amount": 4250,
    "currency": "EUR",
    "merchant_id": "shop-1",
    "issued_at_ms": 1_780_000_000_000,
    "sca": ["knowledge"],
    "key_id": "rk-2026-12",
    "alg": "EdDSA",
    "signature": "c2lnbmF0dXJl",
}
_PSP_EXAMPLE = {
    "psp_session_id": "psp_3q2-7wAAAAAAAAAAAAAAAA",
    "provider": "sandbox",
    "status": "created",
    "checkout_url": "https://sandbox.psp.invalid/checkout/psp_3q2-7wAAAAAAAAAAAAAAAA",
    "amount": 4250,
    "currency": "EUR",
    "merchant_id": "shop-1",
    "verification_session_id": SESSION,
}
_PASSKEY_EXAMPLE = {
    "credential_id": "Y3JlZC0x",
    "sign_count": 3,
    "created_at_ms": 1_780_000_000_000,
}
#: One answer of each operation, as the service sends it (``tests/server/test_contract.py``
#: checks each against its schema).
EXAMPLES: dict[str, dict[str, Any]] = {
    "update_enrollment": {"success": True, "user_uuid": USER, "factor_count": 4},
    "delete_enrollment": {"success": True, "user_uuid": USER, "deleted": True},
    "export_enrollment": {
        "success": True,
        "user_uuid": USER,
        "enrollment": {
            "device_id": "phone-1",
            "factors": ["PIN", "COLOUR", "WORDS"],
            "factor_count": 3,
            "key_version": 1,
            "kdf": {"algorithm": "PBKDF2-HMAC-SHA256", "iterations": 100_000},
            "created_at_ms": 1_780_000_000_000,
            "updated_at_ms": 1_780_000_000_000,
        },
        "audit_trail": [
            {
                "event_id": "01HZX3",
                "action": "ENROLLED",
                "at_ms": 1_780_000_000_000,
                "client": "192.0.2.10",
                "details": {"factor_count": 3},
            }
        ],
    },
    "passkey_options": {
        "success": True,
        "options": {
            "rp": {"name": "ZeroPay", "id": "pay.example"},
            "user": {"id": "MTIz", "name": USER, "displayName": USER},
            "challenge": "eHh4eHh4",
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
            "timeout": 120_000,
            "excludeCredentials": [],
            "authenticatorSelection": {
                "residentKey": "preferred",
                "requireResidentKey": False,
                "userVerification": "required",
            },
            "attestation": "none",
        },
    },
    "register_passkey": {"success": True, "passkey": _PASSKEY_EXAMPLE},
    "list_passkeys": {"success": True, "passkeys": [_PASSKEY_EXAMPLE]},
    "delete_passkey": {"success": True, "deleted": True},
    "verify": {
        "success": True,
        "auth_token": "EjRWeJq8TvCNq83vASNFZ3Rva2VuLXNlY3JldC1ieXRlcy0wMTIzNDU2Nzg5YWJj",
        "token_type": "Bearer",
        "expires_in": 300,
        "receipt": _RECEIPT_EXAMPLE,
        "receipt_jws": _JWS,
    },
    "status": {
        "success": True,
        "session_id": SESSION,
        "status": "verified",
        "attempts_used": 1,
        "attempts_remaining": 0,
        "expires_in": 241,
        "required_factors": ["PIN", "COLOUR", "EMOJI"],
        "payment": {
            "amount": 4250,
            "currency": "EUR",
            "exponent": 2,
            "payee": "shop-1",
            "payee_name": "Shop One",
        },
        "return_url": "https://shop.example/orders/7/back",
        "cancel_url": None,
    },
    "validate": {
        "success": True,
        "valid": True,
        "user_uuid": USER,
        "session_id": SESSION,
        "expires_in": 287,
    },
    "revoke": {"success": True, "revoked": True},
    "psp_create": {"success": True, "psp_session": _PSP_EXAMPLE, "expires_in": 1800},
    "psp_get": {"success": True, "psp_session": _PSP_EXAMPLE},
    "keys": {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "rk-2026-12",
                "use": "sig",
                "alg": "EdDSA",
            }
        ]
    },
    "live": {"status": "ok"},
    "ready": {"status": "ready", "checks": {"redis": True, "postgresql": True}},
    "health": {
        "status": "ok",
        "checks": {"redis": True, "postgresql": True},
        "storage": "redis+postgresql",
        "crypto_queue_depth": 0,
    },
    "problem_type": PROBLEMS["VERIFICATION_FAILED"].as_dict(),
}
for _handler, _example in EXAMPLES.items():
    ANSWERS[_handler]["examples"] = [_example]
