"""Sealed records and wrapped keys: any change to what is stored is detected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import KEYRING, PEPPER, digest_for
from zeropay_proto import (
    CATALOGUE,
    EnrollmentRecord,
    IntegrityError,
    MasterKeyring,
    derive_and_unwrap,
    derive_and_wrap,
    open_record,
    seal_record,
)
from zeropay_proto.crypto import compute_verifier, open_sealed, seal

uuids = st.uuids(version=4).map(str)
keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=12, max_size=12)


@st.composite
def records(draw: st.DrawFn) -> EnrollmentRecord:
    user = draw(uuids)
    factors = draw(st.lists(st.sampled_from(CATALOGUE), min_size=1, max_size=15, unique=True))
    return EnrollmentRecord(
        user_id=user,
        verifiers={f: compute_verifier(PEPPER, user, f, digest_for(f)) for f in factors},
        enrolled_at_s=draw(st.integers(min_value=0, max_value=2**40)),
    )


@given(records(), nonces, st.data())
def test_any_flipped_bit_in_the_envelope_fails(
    record: EnrollmentRecord, nonce: bytes, data: st.DataObject
) -> None:
    sealed = seal_record(KEYRING, record, nonce=nonce)
    assert open_record(KEYRING, user_id=record.user_id, envelope=sealed) == record
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(sealed) - 1))
    tampered = bytearray(sealed)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        open_record(KEYRING, user_id=record.user_id, envelope=bytes(tampered))


@given(records(), nonces, uuids)
def test_a_record_sealed_for_one_user_does_not_open_for_another(
    record: EnrollmentRecord, nonce: bytes, other: str
) -> None:
    sealed = seal_record(KEYRING, record, nonce=nonce)
    if other != record.user_id:
        with pytest.raises(IntegrityError):
            open_record(KEYRING, user_id=other, envelope=sealed)


@given(st.text(max_size=20), st.text(max_size=20), uuids, st.binary(max_size=64), nonces)
def test_any_change_of_aad_fails(
    purpose: str, other_purpose: str, user: str, plaintext: bytes, nonce: bytes
) -> None:
    sealed = seal(KEYRING, purpose=purpose, user_id=user, plaintext=plaintext, nonce=nonce)
    assert open_sealed(KEYRING, purpose=purpose, user_id=user, envelope=sealed) == plaintext
    if other_purpose != purpose:
        with pytest.raises(IntegrityError):
            open_sealed(KEYRING, purpose=other_purpose, user_id=user, envelope=sealed)


@given(
    st.lists(keys, min_size=2, max_size=5, unique=True), st.lists(records(), min_size=1, max_size=3)
)
def test_old_key_versions_still_open_after_rotation(
    ring: list[bytes], batch: list[EnrollmentRecord]
) -> None:
    envelopes = []
    for version in range(1, len(ring) + 1):
        keyring = MasterKeyring(
            keys={v: ring[v - 1] for v in range(1, version + 1)}, current=version
        )
        envelopes += [(r, seal_record(keyring, r, nonce=b"n" * 12)) for r in batch]
    newest = MasterKeyring(keys=dict(enumerate(ring, start=1)), current=len(ring))
    for record, envelope in envelopes:
        assert open_record(newest, user_id=record.user_id, envelope=envelope) == record


@given(records(), st.binary(min_size=16, max_size=16), st.data())
def test_wrapped_key_with_any_flipped_bit_does_not_unwrap(
    record: EnrollmentRecord, salt: bytes, data: st.DataObject
) -> None:
    wrapped = derive_and_wrap(record.kek_material(), salt, 2, b"k" * 32, record.user_id, b"n" * 12)
    assert derive_and_unwrap(record.kek_material(), salt, 2, wrapped, record.user_id)
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(wrapped) - 1))
    tampered = bytearray(wrapped)
    tampered[bit // 8] ^= 1 << (bit % 8)
    assert not derive_and_unwrap(record.kek_material(), salt, 2, bytes(tampered), record.user_id)
