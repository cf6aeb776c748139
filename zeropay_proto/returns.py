"""Where the payer's page sends the payer back: the merchant's ``return_url`` and
``cancel_url``.

The merchant names them on initiate; the pay page goes to ``return_url`` once the session is
decided (verified, failed or expired) and to ``cancel_url`` if the payer gives up, adding
``session_id`` and ``status`` to the query. Those two parameters are a courtesy for the
merchant's page, never proof: anyone can type them, so the merchant confirms the outcome
server-side (the session's status, the receipt, or a webhook).

A URL is absolute HTTPS with a host and without credentials, at most 2048 printable ASCII
characters. Plain HTTP is allowed only to a loopback host, and only where the deployment
says so (the embedded development server), so a merchant can try the flow on its laptop.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ._errors import RemoteProtocolError
from ._urls import split_absolute_url

_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True, kw_only=True)
class ReturnUrls:
    """A session's way back to its merchant (either may be absent)."""

    return_url: str | None = None
    cancel_url: str | None = None


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_return_url(value: object, *, field: str, allow_loopback_http: bool) -> str | None:
    """``value`` as a URL the payer may be sent to, or a 400 naming ``field``."""
    if value is None:
        return None
    url, parts = split_absolute_url(value, field=field)
    host = parts.hostname or ""
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_loopback_http and _loopback(host):
        return url
    if parts.scheme == "http" and _loopback(host):
        raise RemoteProtocolError(
            "must be HTTPS (http only to loopback in development)", field=field
        )
    raise RemoteProtocolError("must be an HTTPS URL", field=field)
