"""Unpadded base64url, the one text form of every binary value the service hands out
(session ids, auth tokens, merchant keys, JWK members, receipt signatures, PSP ids)."""

from __future__ import annotations

import base64


def b64url(data: bytes) -> str:
    """``data`` as unpadded base64url (RFC 4648 section 5, no ``=``)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
