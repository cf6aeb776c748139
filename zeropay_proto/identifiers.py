"""User and session identifiers.

A session id is ``base64url(user uuid (16 bytes) ‖ 128 random bits)``: opaque to clients, yet
it names its user, so that a driver holding only the session id (the status route) finds the
session under the user's storage key, and all of one user's keys can share one Redis Cluster
hash slot. It reveals nothing the merchant did not send: the merchant chose the user.
"""

from __future__ import annotations

import base64
import binascii
import uuid

from . import _patterns as patterns
from ._encoding import b64url
from ._errors import LocalProtocolError, RemoteProtocolError
from ._patterns import matcher

SESSION_ENTROPY_BYTES = 16
_UUID_TEXT = matcher(patterns.UUID)
_SESSION_ID_CHARS = 43  # 32 bytes of unpadded base64url


def parse_user_id(value: object, *, field: str = "user_uuid") -> str:
    """A canonical (lower-case, hyphenated) UUID string, or a 400 naming ``field``."""
    if not isinstance(value, str) or not _UUID_TEXT.match(value):
        raise RemoteProtocolError(
            "must be a UUID such as 123e4567-e89b-42d3-a456-426614174000",
            code="INVALID_UUID",
            field=field,
        )
    return value.lower()


def make_session_id(user_id: str, entropy: bytes) -> str:
    """A new session id for ``user_id`` from 16 CSPRNG bytes."""
    if len(entropy) != SESSION_ENTROPY_BYTES:
        raise LocalProtocolError("a session id needs 16 bytes of entropy")
    raw = uuid.UUID(user_id).bytes + entropy
    return b64url(raw)


def parse_session_id(value: object, *, field: str = "session_id") -> tuple[str, str]:
    """``(session_id, user_id)`` from a session id, or a 400 naming ``field``."""
    raw = b""
    if isinstance(value, str) and len(value) == _SESSION_ID_CHARS and value.isascii():
        try:
            raw = base64.urlsafe_b64decode(value + "=")
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 16 + SESSION_ENTROPY_BYTES or not isinstance(value, str):
        raise RemoteProtocolError("malformed session id", code="INVALID_SESSION_ID", field=field)
    user_id = str(uuid.UUID(bytes=raw[:16]))
    if make_session_id(user_id, raw[16:]) != value:
        # Non-canonical base64 (stray low bits in the last character) names the same bytes
        # under another spelling: refuse it so that one session has one id.
        raise RemoteProtocolError("malformed session id", code="INVALID_SESSION_ID", field=field)
    return value, user_id


def session_names_user(session_id: str, user_id: str) -> bool:
    """Whether ``session_id`` is a well-formed id of one of ``user_id``'s sessions. Storage
    keys cannot tell (users of one slot group share a hash tag), so adapters ask this."""
    try:
        return parse_session_id(session_id)[1] == user_id
    except RemoteProtocolError:
        return False
