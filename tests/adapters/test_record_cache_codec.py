"""The record cache's value format in Redis: round trips, the earlier format, a later one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.ports import NOT_ENROLLED, CachedEnrollment
from adapters.redis_keys import decode_cached, encode_cached
from zeropay_proto import WrappedKey

USER = "123e4567-e89b-42d3-a456-426614174000"

keys = st.builds(
    WrappedKey,
    user_id=st.just(USER),
    wrapped=st.binary(max_size=80),
    salt=st.binary(max_size=64),
    iterations=st.integers(1, 2**32 - 1),
    key_version=st.integers(0, 2**16 - 1),
    factor_count=st.integers(0, 2**16 - 1),
)
entries = st.one_of(
    st.just(NOT_ENROLLED),
    st.builds(CachedEnrollment, sealed_record=st.binary(max_size=400), wrapped_key=keys),
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
