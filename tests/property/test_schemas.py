"""The request schemas (for OpenAPI) and the parsers agree."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.test_fuzz_parsers import near_valid
from zeropay_proto import (
    CATALOGUE,
    RemoteProtocolError,
    parse_enrollment,
    parse_initiate,
    parse_verify,
)
from zeropay_proto.money import CURRENCY_EXPONENTS, MAX_MINOR_UNITS
from zeropay_proto.requests import parse_passkey_options, parse_passkey_registration
from zeropay_proto.schemas import (
    ENROLLMENT,
    INITIATE,
    PASSKEY_OPTIONS,
    PASSKEY_REGISTRATION,
    VERIFY,
)

PAIRS = [
    (ENROLLMENT, parse_enrollment),
    (INITIATE, parse_initiate),
    (VERIFY, parse_verify),
    (PASSKEY_OPTIONS, parse_passkey_options),
    (PASSKEY_REGISTRATION, parse_passkey_registration),
]


@pytest.mark.parametrize(("schema", "parse"), PAIRS)
def test_schemas_are_valid_and_their_examples_parse(schema: dict[str, Any], parse: Any) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    for example in schema["examples"]:
        jsonschema.validate(example, schema)
        parse(json.dumps(example).encode())


@given(st.sampled_from(PAIRS), near_valid)
def test_whatever_a_parser_accepts_its_schema_accepts(pair: Any, body: dict[str, Any]) -> None:
    schema, parse = pair
    raw = json.dumps(body, default=str).encode()
    try:
        parse(raw)
    except RemoteProtocolError:
        return
    jsonschema.validate(json.loads(raw), schema)


hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
factor_names = st.sampled_from([f.value for f in CATALOGUE])
users = st.uuids().map(str)
currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
valid_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "user_uuid": users,
            "factors": st.dictionaries(factor_names, hex64, min_size=3, max_size=15),
            "device_id": st.text(
                alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                min_size=1,
                max_size=128,
            ),
        }
    ).map(lambda b: (ENROLLMENT, parse_enrollment, b)),
    st.tuples(
        st.fixed_dictionaries(
            {"user_uuid": users},
            optional={
                "merchant_id": st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z"),
                "risk_level": st.sampled_from(["LOW", "MEDIUM", "HIGH"]),
                "psp_config": st.none() | st.just({"provider": "sandbox"}),
                "return_url": st.just("https://shop.example/done?order=1"),
            },
        ),
        st.one_of(
            st.just({}),
            st.fixed_dictionaries({"currency": currencies}),
            st.fixed_dictionaries(
                {"amount": st.integers(0, MAX_MINOR_UNITS), "currency": currencies}
            ),
        ),
    ).map(lambda parts: (INITIATE, parse_initiate, {**parts[0], **parts[1]})),
)


@given(valid_bodies)
def test_valid_bodies_satisfy_both_parser_and_schema(case: Any) -> None:
    schema, parse, body = case
    raw = json.dumps(body).encode()
    parse(raw)
    jsonschema.validate(json.loads(raw), schema)
