"""Auth tokens and payment receipts.

- An **auth token** is ``base64url(user uuid ‖ 256-bit secret)``: the secret comes from the
  driver's CSPRNG, the user lets a driver holding only the token find it under that user's
  storage key (one Redis Cluster slot per user). Only a SHA-256 digest of the whole token is
  stored, so a Redis dump yields no usable token, and it lives for
  :data:`DEFAULT_AUTH_TOKEN_TTL_SECONDS`.
- A **receipt** binds the verified session to the payment it authorised: session, user, amount,
  currency, merchant and time. It names the categories of element the verification proved
  (``sca``: knowledge, and possession when a passkey signed), and then the challenge the
  passkey signed, the hash of the linked data (PSD2's dynamic linking, RTS article 5:
  :class:`zeropay_proto.passkeys.LinkedData`). The core fixes the canonical bytes; the
  server signs them with Ed25519 and publishes the public key, so anyone can check a receipt
  offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from ._encoding import b64url
from ._errors import LocalProtocolError, RemoteProtocolError
from .money import check_amount, major_units

#: 256-bit tokens (NIST SP 800-63B section 5.1.1.2 asks for at least 112 bits; 256 is cheap).
AUTH_TOKEN_BYTES = 32
#: PSD2 RTS article 4(3)(d): an authentication code is valid for at most 5 minutes.
DEFAULT_AUTH_TOKEN_TTL_SECONDS = 300
RECEIPT_DOMAIN = b"zeropay-receipt/v1\n"


_TOKEN_CHARS = 64  # 48 bytes of unpadded base64url


@dataclass(frozen=True, kw_only=True)
class BearerToken:
    """A parsed auth token: its user and the digest under which it is stored."""

    user_id: str
    digest: bytes


def encode_token(user_id: str, secret: bytes) -> str:
    """The client's form of a token: unpadded base64url of ``user uuid ‖ secret`` (64 chars)."""
    if len(secret) != AUTH_TOKEN_BYTES:
        raise LocalProtocolError("an auth token is 32 bytes of entropy")
    raw = uuid.UUID(user_id).bytes + secret
    return b64url(raw)


def token_digest(token: str) -> bytes:
    """The stored form of a token. A plain hash suffices: the token has 256 bits of entropy."""
    return hashlib.sha256(b"zeropay/token/v1\x00" + token.encode("ascii")).digest()


def parse_bearer(header: str | None) -> BearerToken:
    """Parse ``Authorization: Bearer <token>`` or raise a 401."""
    prefix = "Bearer "
    if header is None or not header.startswith(prefix):
        raise RemoteProtocolError(
            "an Authorization: Bearer token is required",
            code="UNAUTHENTICATED",
            field="Authorization",
            error_status_hint=401,
        )
    text = header[len(prefix) :].strip()
    raw = b""
    if len(text) == _TOKEN_CHARS and text.isascii():
        try:
            raw = base64.urlsafe_b64decode(text + "==")
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 16 + AUTH_TOKEN_BYTES:
        raise RemoteProtocolError(
            "the bearer token is malformed",
            code="UNAUTHENTICATED",
            field="Authorization",
            error_status_hint=401,
        )
    user_id = str(uuid.UUID(bytes=raw[:16]))
    return BearerToken(user_id=user_id, digest=token_digest(text))


@dataclass(frozen=True, kw_only=True)
class PaymentBinding:
    """The payment a verification session authorises (all optional on initiate): ``amount``
    in ``currency``'s minor units (:mod:`zeropay_proto.money`), which an amount needs."""

    amount: int | None = None
    currency: str | None = None
    merchant_id: str | None = None

    def __post_init__(self) -> None:
        check_amount(self.amount, self.currency)

    @property
    def major_amount(self) -> Decimal | None:
        """The amount in major units, exactly (``4250`` EUR is 42.50), for policy thresholds."""
        if self.amount is None or self.currency is None:
            return None
        return major_units(self.amount, self.currency)


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """What a successful verification attests. Sign :meth:`canonical_bytes`."""

    session_id: str
    user_id: str
    binding: PaymentBinding
    issued_at_ms: int
    #: The passkey's challenge (the linked data's hash) when possession was proven.
    linked_challenge: bytes | None = None

    @property
    def sca(self) -> tuple[str, ...]:
        """The categories of element proven (PSD2 article 4(30))."""
        if self.linked_challenge is None:
            return ("knowledge",)
        return ("knowledge", "possession")

    def as_dict(self) -> dict[str, object]:
        """The receipt's fields as JSON values (the amount in minor units of its currency)."""
        fields: dict[str, object] = {
            "session_id": self.session_id,
            "user_uuid": self.user_id,
            "amount": self.binding.amount,
            "currency": self.binding.currency,
            "merchant_id": self.binding.merchant_id,
            "issued_at_ms": self.issued_at_ms,
            "sca": list(self.sca),
        }
        if self.linked_challenge is not None:
            fields["linked_challenge"] = b64url(self.linked_challenge)
        return fields

    def canonical_json(self) -> bytes:
        """Key-sorted, whitespace-free ASCII JSON of the fields: one byte string per receipt
        (the payload of its JWS)."""
        body = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return body.encode("ascii")

    def canonical_bytes(self) -> bytes:
        """What the receipt's own signature covers: the domain, then :meth:`canonical_json`."""
        return RECEIPT_DOMAIN + self.canonical_json()
