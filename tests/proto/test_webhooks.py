"""Webhooks in the core: the signature a receiver checks, the retry schedule, and where the
service may deliver."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from zeropay_proto import LocalProtocolError, RemoteProtocolError
from zeropay_proto.webhooks import (
    DELIVERY_WINDOW_MS,
    FIRST_RETRY_MS,
    MAX_RETRY_DELAY_MS,
    address_refused,
    gives_up,
    next_attempt_delay_ms,
    parse_webhook_url,
    signature_header,
    signature_valid,
)

BODY = b'{"id":"evt_1","type":"session.verified"}'
OLD, NEW = b"o" * 32, b"n" * 32


def test_the_signature_is_stripes_scheme_and_checks_with_either_secret() -> None:
    header = signature_header([NEW, OLD], 1_780_000_000, BODY)
    expected = hmac.new(NEW, b"1780000000." + BODY, hashlib.sha256).hexdigest()
    assert header.startswith(f"t=1780000000,v1={expected},v1=")
    for secret in (NEW, OLD):
        assert signature_valid(header, BODY, secret, now=1_780_000_100)
    assert not signature_valid(header, BODY, b"x" * 32, now=1_780_000_100)
    assert not signature_valid(header, BODY + b" ", NEW, now=1_780_000_100)
    assert not signature_valid(header, BODY, NEW, now=1_780_000_301)  # too old: a replay
    assert signature_valid(header, BODY, NEW, now=1_780_000_301, tolerance=400)
    for broken in ("", "v1=abc", "t=x,v1=abc", f"t=1780000000,v0={expected}"):
        assert not signature_valid(broken, BODY, NEW, now=1_780_000_000)
    with pytest.raises(LocalProtocolError):
        signature_header([], 1, BODY)


def test_retries_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    low, high = b"\x00\x00", b"\xff\xff"
    assert next_attempt_delay_ms(1, low) == FIRST_RETRY_MS // 2
    assert next_attempt_delay_ms(1, high) == FIRST_RETRY_MS
    assert next_attempt_delay_ms(3, high) == 4 * FIRST_RETRY_MS
    assert next_attempt_delay_ms(60, high) == MAX_RETRY_DELAY_MS
    for bad in ((0, low), (1, b"\x00")):
        with pytest.raises(LocalProtocolError):
            next_attempt_delay_ms(*bad)
    assert not gives_up(0, DELIVERY_WINDOW_MS)
    assert gives_up(0, DELIVERY_WINDOW_MS + 1)


def test_a_webhook_url_is_https_with_a_host_and_no_credentials() -> None:
    assert parse_webhook_url("https://shop.example/hooks", allow_loopback=False)
    assert parse_webhook_url("http://127.0.0.1:9000/hooks", allow_loopback=True)
    for bad in (
        "http://shop.example/hooks",
        "https://user:pw@shop.example/",
        "https:///nohost",
        "https://shop.example:99999/",
        "https://shop.example/" + "a" * 2048,
        "https://shop.example/\u00e9",
        "ftp://shop.example/",
    ):
        with pytest.raises(RemoteProtocolError) as refused:
            parse_webhook_url(bad, allow_loopback=False)
        assert refused.value.field == "url"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address refused, not bound
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("fc00::1", "private"),
        ("240.0.0.1", "private"),
    ],
)
def test_only_public_addresses_are_delivered_to(address: str, why: str | None) -> None:
    assert address_refused(address, allow_loopback=False) == why


def test_loopback_is_allowed_only_where_the_deployment_says_so() -> None:
    assert address_refused("127.0.0.1", allow_loopback=True) is None
    assert address_refused("10.0.0.1", allow_loopback=True) == "private"
