"""Checking a receipt: a compact JWS (RFC 7515) signed with EdDSA (Ed25519), whose key the
service publishes as a JWK Set at ``/v1/keys``. Written on ``cryptography`` alone, as a
merchant's language would: no JOSE library needed."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

RECEIPT_TYPE = "zeropay-receipt+json"


class InvalidReceipt(ValueError):
    """The receipt is malformed, signed by no published key, or its signature is wrong."""


def _b64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidReceipt("not base64url") from None


def verify_receipt(jws: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The receipt's fields if ``jws`` is signed by a key of ``jwks`` (``/v1/keys``), else
    :class:`InvalidReceipt`. Check the fields against your order yourself: session, amount
    (minor units), currency and merchant."""
    parts = jws.split(".")
    if len(parts) != 3:
        raise InvalidReceipt("a compact JWS has three parts")
    try:
        header = json.loads(_b64(parts[0]))
        payload = json.loads(_b64(parts[1]))
    except ValueError:
        raise InvalidReceipt("the header or payload is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise InvalidReceipt("a receipt is signed with EdDSA")
    if header.get("typ") != RECEIPT_TYPE:
        raise InvalidReceipt("not a ZeroPay receipt")
    keys = [
        k
        for k in jwks.get("keys", [])
        if k.get("kid") == header.get("kid") and k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
    ]
    if not keys:
        raise InvalidReceipt("signed by no published key")
    public = Ed25519PublicKey.from_public_bytes(_b64(keys[0]["x"]))
    try:
        public.verify(_b64(parts[2]), f"{parts[0]}.{parts[1]}".encode("ascii"))
    except InvalidSignature:
        raise InvalidReceipt("the signature does not verify") from None
    if not isinstance(payload, dict):
        raise InvalidReceipt("the payload is not an object")
    return payload
