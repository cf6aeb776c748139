"""Unpadded base64url, the one text form of every binary value the service hands out
(session ids, auth tokens, merchant keys, JWK members, receipt signatures, PSP ids)."""

from __future__ import annotations

import base64
import re


def b64url(data: bytes) -> str:
    """``data`` as unpadded base64url (RFC 4648 section 5, no ``=``)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url ``text``; ``ValueError`` for anything else."""
    if not _ALPHABET.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
