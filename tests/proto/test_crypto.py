"""Verifiers, sealed records, the keyring, and the PBKDF2 key wrap."""

from __future__ import annotations

import pytest

from tests.helpers import KEYRING, OTHER_USER, PEPPER, USER, digest_for, entropy
from zeropay_proto import (
    EnrollmentRecord,
    Factor,
    IntegrityError,
    LocalProtocolError,
    MasterKeyring,
    derive_and_unwrap,
    derive_and_wrap,
    open_record,
    seal_record,
)
from zeropay_proto.crypto import (
    compute_verifier,
    derive_kek,
    envelope_key_version,
    open_sealed,
    reseal_record,
    seal,
    unconfigured_versions,
    unwrap_data_key,
    wrap_data_key,
)

NONCE = entropy(12, "nonce")
SALT = entropy(16, "salt")
DATA_KEY = entropy(32, "data key")


def make_record(user: str = USER) -> EnrollmentRecord:
    factors = (Factor.FACE, Factor.PIN, Factor.NFC)
    return EnrollmentRecord(
        user_id=user,
        verifiers={f: compute_verifier(PEPPER, user, f, digest_for(f)) for f in factors},
        enrolled_at_s=1_800_000_000,
    )


def test_verifier_binds_pepper_user_factor_and_digest() -> None:
    base = compute_verifier(PEPPER, USER, Factor.PIN, digest_for(Factor.PIN))
    assert len(base) == 32
    assert base == compute_verifier(PEPPER, USER, Factor.PIN, digest_for(Factor.PIN))
    variants = {
        compute_verifier(b"q" * 32, USER, Factor.PIN, digest_for(Factor.PIN)),
        compute_verifier(PEPPER, OTHER_USER, Factor.PIN, digest_for(Factor.PIN)),
        compute_verifier(PEPPER, USER, Factor.COLOUR, digest_for(Factor.PIN)),
        compute_verifier(PEPPER, USER, Factor.PIN, digest_for(Factor.PIN, "other")),
    }
    assert base not in variants
    assert len(variants) == 4
    with pytest.raises(LocalProtocolError):
        compute_verifier(PEPPER, USER, Factor.PIN, b"short")


def test_record_round_trips_in_catalogue_order() -> None:
    record = make_record()
    assert list(record.verifiers) == [Factor.PIN, Factor.NFC, Factor.FACE]
    assert record.factors == frozenset({Factor.PIN, Factor.NFC, Factor.FACE})
    sealed = seal_record(KEYRING, record, nonce=NONCE)
    assert open_record(KEYRING, user_id=USER, envelope=sealed) == record
    assert envelope_key_version(sealed) == 1
    assert len(record.kek_material()) == 3 * 33


def test_record_sealed_for_one_user_does_not_open_for_another() -> None:
    sealed = seal_record(KEYRING, make_record(), nonce=NONCE)
    with pytest.raises(IntegrityError):
        open_record(KEYRING, user_id=OTHER_USER, envelope=sealed)


def test_purpose_is_bound_into_the_aad() -> None:
    sealed = seal(KEYRING, purpose="a", user_id=USER, plaintext=b"x", nonce=NONCE)
    assert open_sealed(KEYRING, purpose="a", user_id=USER, envelope=sealed) == b"x"
    with pytest.raises(IntegrityError):
        open_sealed(KEYRING, purpose="b", user_id=USER, envelope=sealed)


def test_rotation_seals_with_the_newest_and_opens_the_old() -> None:
    old = seal_record(KEYRING, make_record(), nonce=NONCE)
    rotated = MasterKeyring(keys={1: b"k" * 32, 2: b"n" * 32}, current=2)
    new = seal_record(rotated, make_record(), nonce=NONCE)
    assert envelope_key_version(new) == 2
    assert open_record(rotated, user_id=USER, envelope=old) == make_record()
    assert open_record(rotated, user_id=USER, envelope=new) == make_record()
    retired = MasterKeyring(keys={2: b"n" * 32}, current=2)
    with pytest.raises(IntegrityError):
        open_record(retired, user_id=USER, envelope=old)


def test_malformed_envelopes_are_integrity_errors() -> None:
    sealed = seal_record(KEYRING, make_record(), nonce=NONCE)
    for bad in (b"", b"\x01", b"\x02" + sealed[1:], sealed[:10]):
        with pytest.raises(IntegrityError):
            open_record(KEYRING, user_id=USER, envelope=bad)
    with pytest.raises(LocalProtocolError):
        seal(KEYRING, purpose="p", user_id=USER, plaintext=b"", nonce=b"short")


def test_malformed_record_plaintexts_are_integrity_errors() -> None:
    good = make_record().encode()
    bad_plaintexts = [
        b"\x01",
        b"\x02" + good[1:],
        good[:-1],
        good[:9] + b"\x00",  # zero factors
        good[:10] + b"\x63" + good[11:],  # factor index 99
        good[:10] + good[10:43] + good[10:43] + good[76:],  # a factor twice
    ]
    for plaintext in bad_plaintexts:
        with pytest.raises(IntegrityError):
            EnrollmentRecord.decode(USER, plaintext)


def test_record_validates_its_fields() -> None:
    with pytest.raises(LocalProtocolError):
        EnrollmentRecord(user_id=USER, verifiers={}, enrolled_at_s=0)
    with pytest.raises(LocalProtocolError):
        EnrollmentRecord(user_id=USER, verifiers={Factor.PIN: b"x"}, enrolled_at_s=0)
    with pytest.raises(LocalProtocolError):
        EnrollmentRecord(user_id=USER, verifiers={Factor.PIN: b"x" * 32}, enrolled_at_s=-1)


@pytest.mark.parametrize(
    ("keys", "current"),
    [({}, 1), ({0: b"k" * 32}, 0), ({1: b"short"}, 1), ({1: b"k" * 32}, 2)],
)
def test_keyring_validation(keys: dict[int, bytes], current: int) -> None:
    with pytest.raises(LocalProtocolError):
        MasterKeyring(keys=keys, current=current)


def test_data_key_wraps_under_the_verifier_kek_and_only_unwraps_with_it() -> None:
    material = make_record().kek_material()
    wrapped = derive_and_wrap(material, SALT, 10, DATA_KEY, USER, NONCE)
    assert unwrap_data_key(derive_kek(material, SALT, 10), wrapped, user_id=USER) == DATA_KEY
    assert derive_and_unwrap(material, SALT, 10, wrapped, USER)
    assert not derive_and_unwrap(material, SALT, 11, wrapped, USER)
    assert not derive_and_unwrap(make_record(OTHER_USER).kek_material(), SALT, 10, wrapped, USER)
    assert not derive_and_unwrap(material, SALT, 10, wrapped, OTHER_USER)
    assert not derive_and_unwrap(material, SALT, 10, wrapped[:5], USER)


def test_kdf_and_wrap_guard_their_parameters() -> None:
    with pytest.raises(LocalProtocolError):
        derive_kek(b"m", b"short", 10)
    with pytest.raises(LocalProtocolError):
        derive_kek(b"m", SALT, 0)
    with pytest.raises(LocalProtocolError):
        wrap_data_key(b"k" * 32, b"short", user_id=USER, nonce=NONCE)


def test_kek_is_pbkdf2_hmac_sha256() -> None:
    import hashlib

    assert derive_kek(b"material", SALT, 1000) == hashlib.pbkdf2_hmac(
        "sha256", b"material", SALT, 1000, 32
    )


def test_a_record_is_resealed_under_the_current_version_with_its_content_unchanged() -> None:
    old = MasterKeyring(keys={1: b"a" * 32}, current=1)
    rotated = MasterKeyring(keys={1: b"a" * 32, 2: b"b" * 32}, current=2)
    record = EnrollmentRecord(user_id=USER, verifiers={Factor.PIN: b"v" * 32}, enrolled_at_s=7)
    sealed = seal_record(old, record, nonce=b"n" * 12)
    resealed = reseal_record(rotated, user_id=USER, envelope=sealed, nonce=b"m" * 12)
    assert resealed is not None
    assert envelope_key_version(resealed) == 2
    only_new = MasterKeyring(keys={2: b"b" * 32}, current=2)
    assert open_record(only_new, user_id=USER, envelope=resealed) == record
    assert reseal_record(rotated, user_id=USER, envelope=resealed, nonce=b"o" * 12) is None
    with pytest.raises(IntegrityError):  # another user's record never moves to this one
        reseal_record(rotated, user_id=OTHER_USER, envelope=sealed, nonce=b"p" * 12)


def test_rotation_names_the_versions_in_use_that_are_not_configured() -> None:
    keyring = MasterKeyring(keys={2: b"b" * 32, 3: b"c" * 32}, current=3)
    assert unconfigured_versions(keyring, [1, 2, 3, 1]) == [1]
    assert unconfigured_versions(keyring, [2, 3]) == []
