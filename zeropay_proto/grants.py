"""Enrollment grants: the link a merchant sends a payer to enroll one user.

A merchant asks for a grant for a user it knows (``POST /v1/enrollment/grants``) and sends
the payer ``/enroll?grant=<token>``: the page learns the user from the grant, so the payer
never types an id. A grant is short-lived (:data:`GRANT_TTL_MS`), single-use (its id is spent
in the store when an enrollment uses it), and only *creates* an enrollment: it never
replaces one (that needs the user's step-up proof), so no merchant can overwrite a user's
factors with a grant.

The token carries the user, its expiry and a random id, under a MAC with a key derived from
the service's pepper (:func:`grant_key`): it is checked without a lookup, and forged or
altered ones are refused in constant time.

    token = "zpg_" + b64url(user (16) || expires_at_ms (8, big-endian) || id (16) || mac (16))
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from ._encoding import b64url, b64url_decode
from ._errors import LocalProtocolError, RemoteProtocolError

GRANT_PREFIX = "zpg_"
#: How long a grant may be used after it is issued.
GRANT_TTL_MS = 15 * 60 * 1000
GRANT_ID_BYTES = 16
_MAC_BYTES = 16
_DOMAIN = b"zeropay/enrollment-grant/v1"
_KEY_DOMAIN = b"zeropay/enrollment-grant-key/v1"
_TOKEN_BYTES = 16 + 8 + GRANT_ID_BYTES + _MAC_BYTES


@dataclass(frozen=True, kw_only=True)
class EnrollmentGrant:
    """A valid grant: whom it enrolls, its id (spent once), and until when it may be used."""

    user_id: str
    grant_id: str
    expires_at_ms: int

    def expires_in_ms(self, now_ms: int) -> int:
        return max(0, self.expires_at_ms - now_ms)


def grant_key(pepper: bytes) -> bytes:
    """The grants' MAC key, derived from the service's pepper (one secret fewer to hold)."""
    return hmac.new(pepper, _KEY_DOMAIN, hashlib.sha256).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()[:_MAC_BYTES]


def issue_grant(
    user_id: str, *, now_ms: int, entropy: bytes, key: bytes, ttl_ms: int = GRANT_TTL_MS
) -> tuple[str, EnrollmentGrant]:
    """A new grant for ``user_id`` (a UUID): its token, and what it says."""
    if len(entropy) != GRANT_ID_BYTES:
        raise LocalProtocolError(f"a grant needs {GRANT_ID_BYTES} bytes of entropy")
    if ttl_ms < 1:
        raise LocalProtocolError("a grant lives at least a millisecond")
    expires_at_ms = now_ms + ttl_ms
    body = uuid.UUID(user_id).bytes + expires_at_ms.to_bytes(8, "big") + entropy
    token = GRANT_PREFIX + b64url(body + _mac(key, body))
    grant = EnrollmentGrant(user_id=user_id, grant_id=entropy.hex(), expires_at_ms=expires_at_ms)
    return token, grant


def _refused(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, field="grant", code="GRANT_INVALID", error_status_hint=400)


def open_grant(token: str, *, now_ms: int, key: bytes) -> EnrollmentGrant:
    """The grant ``token`` carries, if it is one of ours and not expired; raises
    ``RemoteProtocolError`` (``GRANT_INVALID``) otherwise. Spending it is the store's."""
    if not isinstance(token, str) or not token.startswith(GRANT_PREFIX) or len(token) > 200:
        raise _refused("not an enrollment grant")
    try:
        raw = b64url_decode(token.removeprefix(GRANT_PREFIX))
    except ValueError:
        raise _refused("not an enrollment grant") from None
    if len(raw) != _TOKEN_BYTES:
        raise _refused("not an enrollment grant")
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise _refused("not an enrollment grant")
    expires_at_ms = int.from_bytes(body[16:24], "big")
    if now_ms >= expires_at_ms:
        raise _refused("the enrollment grant has expired")
    return EnrollmentGrant(
        user_id=str(uuid.UUID(bytes=body[:16])),
        grant_id=body[24:].hex(),
        expires_at_ms=expires_at_ms,
    )
