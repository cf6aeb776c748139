"""Value formats in Redis: the record cache's (round trips, the earlier format, a later one)
and a session's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ports import NOT_ENROLLED, CachedEnrollment
from adapters.redis_keys import decode_cached, decode_session, encode_cached, encode_session
from zeropay_proto import Factor, PaymentBinding, Session, WrappedKey
from zeropay_proto.money import MAX_MINOR_UNITS
from zeropay_proto.passkeys import Passkey
from zeropay_proto.returns import ReturnUrls

USER = "123e4567-e89b-42d3-a456-426614174000"
SESSION = "Ej5FZ-ibQtOkVkJmFBdAALmXUaNeNiJGzfarUzmi8k8"

keys = st.builds(
    WrappedKey,
    user_id=st.just(USER),
    wrapped=st.binary(max_size=80),
    salt=st.binary(max_size=64),
    iterations=st.integers(1, 2**32 - 1),
    key_version=st.integers(0, 2**16 - 1),
    factor_count=st.integers(0, 2**16 - 1),
)
passkeys = st.builds(
    Passkey,
    credential_id=st.binary(min_size=1, max_size=1023),
    public_key=st.binary(min_size=1, max_size=300),
    sign_count=st.integers(0, 2**32 - 1),
    created_at_ms=st.integers(0, 2**63 - 1),
)
entries = st.one_of(
    st.just(NOT_ENROLLED),
    st.builds(CachedEnrollment, sealed_record=st.binary(max_size=400), wrapped_key=keys),
    st.builds(
        CachedEnrollment,
        sealed_record=st.binary(max_size=400),
        wrapped_key=keys,
        passkeys=st.lists(passkeys, max_size=10).map(tuple),
    ),
    st.builds(CachedEnrollment, sealed_record=st.binary(max_size=400), wrapped_key=st.none()),
)


@given(entries)
def test_every_entry_round_trips(entry: CachedEnrollment) -> None:
    assert decode_cached(USER, encode_cached(entry)) == entry


def test_the_earlier_format_is_read_but_not_trusted_by_verify() -> None:
    earlier = decode_cached(USER, b"\x01" + b"sealed")
    assert earlier == CachedEnrollment(sealed_record=b"sealed", wrapped_key=None)
    assert not earlier.usable_by_verify
    assert NOT_ENROLLED.usable_by_verify


def test_a_later_format_is_a_miss_never_not_enrolled() -> None:
    assert decode_cached(USER, b"\x07whatever") is None


@given(keys)
def test_a_user_without_passkeys_keeps_the_format_every_version_reads(key: WrappedKey) -> None:
    entry = CachedEnrollment(sealed_record=b"sealed", wrapped_key=key)
    assert encode_cached(entry)[:1] == b"\x02"


@given(
    st.lists(st.binary(min_size=1, max_size=1023), max_size=10, unique=True).map(tuple),
    st.sampled_from([1250, 0, MAX_MINOR_UNITS, None]),
    st.sampled_from([None, "https://shop.example/done?order=" + "7" * 2000]),
    st.sampled_from([None, "https://shop.example/"]),
)
def test_a_session_round_trips_with_its_passkeys_amount_and_return_urls(
    ids: tuple[bytes, ...], amount: int | None, back: str | None, cancel: str | None
) -> None:
    binding = PaymentBinding(amount=amount, currency="EUR", merchant_id="m-1")
    session = Session(
        session_id=SESSION,
        user_id=USER,
        challenged=(Factor.PIN, Factor.EMOJI),
        expires_at_ms=1_800_000_000_000,
        binding=binding,
        passkey_ids=ids,
        return_to=ReturnUrls(return_url=back, cancel_url=cancel),
    )
    data = encode_session(session)
    assert decode_session(SESSION, USER, data) == session
    # Format 4 only with passkeys: a version that knows format 3 alone refuses the session
    # rather than verify it without its passkey; both carry minor units, which a version
    # that knows only formats 1 and 2 (decimal amounts) refuses rather than misread.
    assert data[0] == (4 if ids else 3)


def test_a_session_stored_before_minor_units_reads_its_amount_in_minor_units() -> None:
    session = Session(
        session_id=SESSION,
        user_id=USER,
        challenged=(Factor.PIN,),
        expires_at_ms=1_800_000_000_000,
        binding=PaymentBinding(amount=4250, currency="EUR", merchant_id="m-1"),
    )
    current = encode_session(session)
    legacy = b"\x01" + current[1:15] + b"\x0542.50" + current[15 + 5 :].removesuffix(b"\0" * 4)
    assert decode_session(SESSION, USER, legacy) == session
    yen = legacy.replace(b"\x0542.50\x03EUR", b"\x03500\x03JPY")
    assert decode_session(SESSION, USER, yen).binding == PaymentBinding(
        amount=500, currency="JPY", merchant_id="m-1"
    )
    with pytest.raises(ValueError, match="finer"):
        decode_session(SESSION, USER, legacy.replace(b"\x0542.50", b"\x0642.505"))
