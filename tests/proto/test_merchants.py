"""Merchant API keys: issued once, stored as a hash, matched in constant time."""

from __future__ import annotations

import pytest

from tests.helpers import entropy
from zeropay_proto import LocalProtocolError, RemoteProtocolError
from zeropay_proto.merchants import (
    API_KEY_ENTROPY_BYTES,
    MerchantCredential,
    issue_api_key,
    key_matches,
    parse_api_key,
    parse_display_name,
)


def issued(label: str = "k") -> tuple[str, MerchantCredential]:
    return issue_api_key("shop-1", entropy=entropy(API_KEY_ENTROPY_BYTES, label), now_ms=1)


def test_an_issued_key_matches_its_credential_and_nothing_else() -> None:
    key, credential = issued()
    other_key, other = issued("other")
    assert key.startswith("zpk_")
    assert key_matches(credential, parse_api_key(key))
    assert not key_matches(credential, parse_api_key(other_key))
    assert not key_matches(other, parse_api_key(key))
    assert key not in repr(credential)
    assert credential.key_hash.hex() not in repr(credential)


def test_a_revoked_key_never_matches() -> None:
    key, credential = issued()
    revoked = MerchantCredential(
        merchant_id=credential.merchant_id,
        key_id=credential.key_id,
        key_hash=credential.key_hash,
        created_at_ms=1,
        revoked_at_ms=2,
    )
    assert not key_matches(revoked, parse_api_key(key))


def test_a_key_with_the_right_hash_under_another_id_does_not_match() -> None:
    key, credential = issued()
    moved = MerchantCredential(
        merchant_id="shop-1", key_id="ffffffffffff", key_hash=credential.key_hash, created_at_ms=1
    )
    assert not key_matches(moved, parse_api_key(key))


@pytest.mark.parametrize("header", [None, "", "zpk_short", "Bearer x", "zpk_0123456789ab_!"])
def test_a_missing_or_malformed_key_is_the_clients_401(header: str | None) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        parse_api_key(header)
    assert raised.value.error_status_hint == 401
    assert (raised.value.code, raised.value.field) == ("MERCHANT_UNAUTHENTICATED", "X-API-Key")


def test_issuing_needs_the_full_entropy_and_a_valid_merchant_id() -> None:
    with pytest.raises(LocalProtocolError):
        issue_api_key("shop-1", entropy=b"short", now_ms=1)
    with pytest.raises(LocalProtocolError):
        issue_api_key("no spaces", entropy=entropy(API_KEY_ENTROPY_BYTES), now_ms=1)
    with pytest.raises(LocalProtocolError):
        MerchantCredential(merchant_id="shop", key_id="k", key_hash=b"x", created_at_ms=1)


def test_a_display_name_is_short_printable_text() -> None:
    assert parse_display_name("  Café   Zürich ") == "Café Zürich"
    for bad in ("", "   ", "x" * 101, "Shop\u0000", "Shop\u202e"):
        with pytest.raises(RemoteProtocolError):
            parse_display_name(bad)
