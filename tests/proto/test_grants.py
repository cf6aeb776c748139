"""Enrollment grants: what a merchant's link carries, checked without a lookup."""

from __future__ import annotations

import pytest

from zeropay_proto import LocalProtocolError, RemoteProtocolError, parse_enrollment_grant
from zeropay_proto._encoding import b64url, b64url_decode
from zeropay_proto.grants import GRANT_PREFIX, GRANT_TTL_MS, grant_key, issue_grant, open_grant
from zeropay_proto.requests import parse_enrollment

USER = "0b6f7d2e-57c1-4f7e-9a59-2f1d8f0c6a11"
KEY = grant_key(b"p" * 32)
NOW = 1_780_000_000_000


def test_a_grant_names_its_user_and_lives_fifteen_minutes() -> None:
    token, grant = issue_grant(USER, now_ms=NOW, entropy=b"e" * 16, key=KEY)
    assert token.startswith(GRANT_PREFIX)
    assert open_grant(token, now_ms=NOW + 1, key=KEY) == grant
    assert (grant.user_id, grant.grant_id) == (USER, "65" * 16)
    assert grant.expires_in_ms(NOW) == GRANT_TTL_MS
    assert grant.expires_in_ms(NOW + GRANT_TTL_MS + 5) == 0
    with pytest.raises(RemoteProtocolError, match="expired") as expired:
        open_grant(token, now_ms=NOW + GRANT_TTL_MS, key=KEY)
    assert (expired.value.code, expired.value.field) == ("GRANT_INVALID", "grant")


def test_a_forged_altered_or_foreign_grant_is_refused() -> None:
    token, _ = issue_grant(USER, now_ms=NOW, entropy=b"e" * 16, key=KEY)
    raw = bytearray(b64url_decode(token.removeprefix(GRANT_PREFIX)))
    raw[17] ^= 1  # a later expiry
    altered = GRANT_PREFIX + b64url(bytes(raw))
    for bad in (
        altered,
        token[:-2],
        "zpg_" + "A" * 75,
        "zpg_!" + token[5:],
        "zpg_A",
        "zpg_" + "A" * 8,  # base64url, too short
        token.removeprefix(GRANT_PREFIX),
        "zpg_" + "A" * 300,
    ):
        with pytest.raises(RemoteProtocolError):
            open_grant(bad, now_ms=NOW, key=KEY)
    with pytest.raises(RemoteProtocolError):
        open_grant(token, now_ms=NOW, key=grant_key(b"q" * 32))  # another service's


def test_issuing_needs_sixteen_bytes_and_a_lifetime() -> None:
    with pytest.raises(LocalProtocolError):
        issue_grant(USER, now_ms=NOW, entropy=b"e", key=KEY)
    with pytest.raises(LocalProtocolError):
        issue_grant(USER, now_ms=NOW, entropy=b"e" * 16, key=KEY, ttl_ms=0)


def test_requests_carry_a_grant_as_text_only() -> None:
    assert parse_enrollment_grant(b'{"user_uuid": "%s"}' % USER.encode()) == USER
    body = (
        b'{"user_uuid": "%s", "device_id": "d", "grant": 700, "factors": {"PIN": "%s", '
        b'"COLOUR": "%s", "EMOJI": "%s"}}' % (USER.encode(), b"a" * 64, b"b" * 64, b"c" * 64)
    )
    with pytest.raises(RemoteProtocolError) as refused:
        parse_enrollment(body)
    assert refused.value.field == "grant"
    assert parse_enrollment(body.replace(b"700", b'"zpg_x"')).grant == "zpg_x"
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode("a=b")
