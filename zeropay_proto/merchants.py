"""Merchant credentials: who may open verification sessions.

Opening a session (and a PSP checkout) is a merchant's act, so it needs a merchant's API key:
without one, anyone who knows a user id could open sessions for that user, and with five
wrong answers lock the account. An API key is ``zpk_<key id>_<secret>``: the key id (12 hex
characters) names the stored credential, the secret is 256 bits from the CSPRNG. Only a
SHA-256 hash of the whole key is stored (like auth tokens, a key this strong needs no slow
hash); it is compared in constant time. The key itself is shown once, when it is issued.

Sessions record the authenticated merchant as their payee, so limits apply per merchant and
every failed verification in a merchant's sessions is charged to it (the server throttles a
merchant whose sessions fail too often: ``MERCHANT_FAILURES_PER_HOUR``,
:func:`zeropay_proto.admission.reserve_merchant_failure`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass

from . import _patterns as patterns
from ._encoding import b64url
from ._errors import LocalProtocolError, RemoteProtocolError

API_KEY_PREFIX = "zpk"
#: Entropy of a new key: the id (6 bytes, shown as 12 hex characters) and the secret (32).
API_KEY_ENTROPY_BYTES = 6 + 32
_MERCHANT_ID = re.compile(patterns.MERCHANT_ID)
_API_KEY = re.compile(rf"{API_KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})")
_HASH_DOMAIN = b"zeropay/merchant-key/v1\x00"


@dataclass(frozen=True, kw_only=True)
class MerchantCredential:
    """A stored merchant key: whose, its id, the hash of the key, and its lifetime."""

    merchant_id: str
    key_id: str
    key_hash: bytes
    created_at_ms: int
    revoked_at_ms: int | None = None

    def __post_init__(self) -> None:
        if not _MERCHANT_ID.fullmatch(self.merchant_id):
            raise LocalProtocolError("merchant ids are 1-64 of A-Z a-z 0-9 . _ : -")
        if len(self.key_hash) != hashlib.sha256().digest_size:
            raise LocalProtocolError("a key hash is 32 bytes")

    def __repr__(self) -> str:  # the hash is not secret, but it has no place in logs either
        return f"MerchantCredential(merchant_id={self.merchant_id!r}, key_id={self.key_id!r})"


@dataclass(frozen=True, kw_only=True)
class PresentedKey:
    """An API key as a request presented it: its id, and its hash for the comparison."""

    key_id: str
    key_hash: bytes


def _hash(key: str) -> bytes:
    return hashlib.sha256(_HASH_DOMAIN + key.encode("ascii")).digest()


def issue_api_key(
    merchant_id: str, *, entropy: bytes, now_ms: int
) -> tuple[str, MerchantCredential]:
    """A new key for ``merchant_id``: the key (to show once) and what to store."""
    if len(entropy) != API_KEY_ENTROPY_BYTES:
        raise LocalProtocolError(f"a key needs {API_KEY_ENTROPY_BYTES} bytes of entropy")
    key_id = entropy[:6].hex()
    secret = b64url(entropy[6:])
    key = f"{API_KEY_PREFIX}_{key_id}_{secret}"
    credential = MerchantCredential(
        merchant_id=merchant_id, key_id=key_id, key_hash=_hash(key), created_at_ms=now_ms
    )
    return key, credential


def parse_api_key(header: str | None) -> PresentedKey:
    """The ``X-API-Key`` header; a missing or malformed key is the client's 401."""
    if not header:
        raise _unauthenticated("an X-API-Key merchant key is required")
    match = _API_KEY.fullmatch(header.strip())
    if match is None:
        raise _unauthenticated("the merchant key is not valid")
    return PresentedKey(key_id=match.group(1), key_hash=_hash(header.strip()))


def _unauthenticated(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        message, code="MERCHANT_UNAUTHENTICATED", field="X-API-Key", error_status_hint=401
    )


def key_matches(credential: MerchantCredential, presented: PresentedKey) -> bool:
    """Whether ``presented`` is this live credential's key (constant-time comparison)."""
    same = hmac.compare_digest(credential.key_hash, presented.key_hash)
    return same and credential.key_id == presented.key_id and credential.revoked_at_ms is None


#: The longest display name a merchant may have.
MAX_DISPLAY_NAME = 100


def parse_display_name(text: str) -> str:
    """A merchant's display name as an operator gives it: trimmed, 1 to
    :data:`MAX_DISPLAY_NAME` characters, no control characters (it is shown to payers)."""
    name = " ".join(text.split())
    if not 1 <= len(name) <= MAX_DISPLAY_NAME or any(
        unicodedata.category(c).startswith("C") for c in name
    ):
        raise RemoteProtocolError(
            f"a display name is 1 to {MAX_DISPLAY_NAME} printable characters",
            field="display_name",
        )
    return name
