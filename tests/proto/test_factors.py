"""The factor catalogue and digest validation."""

from __future__ import annotations

import pytest

from zeropay_proto import CATALOGUE, Category, Factor, RemoteProtocolError
from zeropay_proto.factors import parse_digest, parse_factor_digests, parse_factor_name


def test_catalogue_has_the_original_fifteen_factors_in_four_categories() -> None:
    assert len(CATALOGUE) == 15
    assert {f.value for f in CATALOGUE} == {
        "PIN", "COLOUR", "EMOJI", "WORDS", "PATTERN_MICRO", "PATTERN_NORMAL", "MOUSE_DRAW",
        "STYLUS_DRAW", "VOICE", "IMAGE_TAP", "BALANCE", "RHYTHM_TAP", "NFC", "FINGERPRINT",
        "FACE",
    }  # fmt: skip
    assert {f.category for f in CATALOGUE} == set(Category)
    assert Factor.PIN.category is Category.KNOWLEDGE
    assert Factor.NFC.category is Category.POSSESSION
    assert Factor.FACE.category is Category.BIOMETRIC
    assert Factor.RHYTHM_TAP.category is Category.BEHAVIOUR
    assert [f.index for f in CATALOGUE] == list(range(15))


def test_digest_is_64_hex_digits_in_either_case() -> None:
    assert parse_digest("ab" * 32, field="f") == bytes([0xAB]) * 32
    assert parse_digest("AB" * 32, field="f") == bytes([0xAB]) * 32


@pytest.mark.parametrize("value", ["ab" * 31, "ab" * 33, "zz" * 32, 42, None, "é" * 64])
def test_bad_digest_names_the_field_and_not_the_value(value: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_digest(value, field="factors.PIN")
    assert info.value.field == "factors.PIN"
    assert info.value.code == "INVALID_DIGEST"
    assert str(value) not in str(info.value)


def test_unknown_factor_name_is_refused() -> None:
    assert parse_factor_name("PIN", field="factors") is Factor.PIN
    for name in ("pin", "NOPE", 3):
        with pytest.raises(RemoteProtocolError) as info:
            parse_factor_name(name, field="factors")
        assert info.value.code == "UNKNOWN_FACTOR"


def test_factor_map_bounds_and_shape() -> None:
    ok = {"PIN": "00" * 32, "FACE": "11" * 32, "NFC": "22" * 32}
    parsed = parse_factor_digests(ok, field="factors", minimum=3, maximum=15)
    assert set(parsed) == {Factor.PIN, Factor.FACE, Factor.NFC}
    with pytest.raises(RemoteProtocolError) as info:
        parse_factor_digests({"PIN": "00" * 32}, field="factors", minimum=3, maximum=15)
    assert info.value.code == "FACTOR_COUNT"
    with pytest.raises(RemoteProtocolError) as info:
        parse_factor_digests(["PIN"], field="factors", minimum=1, maximum=15)
    assert info.value.field == "factors"
    with pytest.raises(RemoteProtocolError) as info:
        parse_factor_digests({"PIN": "xx"}, field="factors", minimum=1, maximum=15)
    assert info.value.field == "factors.PIN"
