"""Absolute URLs that the service is given to send to: a payer's way back, a merchant's
webhook endpoint. Each caller then decides the schemes and hosts it allows."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from ._errors import RemoteProtocolError

MAX_URL_LENGTH = 2048


def split_absolute_url(value: object, *, field: str) -> tuple[str, SplitResult]:
    """``value``, and it split, if it is an absolute URL with a host and no credentials, of at most
    :data:`MAX_URL_LENGTH` printable ASCII characters and no space; else a 400 naming
    ``field``."""
    if not (
        isinstance(value, str)
        and 0 < len(value) <= MAX_URL_LENGTH
        and value.isascii()
        and value.isprintable()
        and " " not in value
    ):
        raise RemoteProtocolError(
            f"must be an absolute URL of at most {MAX_URL_LENGTH} ASCII characters", field=field
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port out of range raises here
    except ValueError:
        raise RemoteProtocolError("must be an absolute URL", field=field) from None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise RemoteProtocolError(
            "must be an absolute URL with a host, no credentials", field=field
        )
    return value, parts
