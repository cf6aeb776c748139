"""Bounded fuzzing of the parsers in CI: raw bytes and structured near-valid JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_parsers import fuzz_one_input
from zeropay_proto.crypto import MasterKeyring
from zeropay_proto.idempotency import (
    Answer,
    Claim,
    KeptAnswer,
    decode_held,
    encode_held,
    open_answer,
    seal_answer,
)

EXAMPLES = 2_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
factor_maps = st.dictionaries(
    st.sampled_from(["PIN", "COLOUR", "EMOJI", "FACE", "NFC", "pin", ""]),
    st.one_of(st.text(alphabet="0123456789abcdefABCDEFx", min_size=60, max_size=68), json_values),
    max_size=16,
)
b64_texts = st.one_of(
    st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.sampled_from(["ZnV6eg", "", "===="]),
)
#: A PublicKeyCredential as a browser hands it over, with any field wrong.
credentials = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(b64_texts, json_values),
        "rawId": st.one_of(b64_texts, json_values),
        "type": st.one_of(st.just("public-key"), json_values),
        "response": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    key: st.one_of(b64_texts, json_values)
                    for key in (
                        "clientDataJSON",
                        "authenticatorData",
                        "signature",
                        "userHandle",
                        "attestationObject",
                    )
                },
            ),
            json_values,
        ),
    },
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "user_uuid": st.one_of(st.uuids().map(str), st.text(max_size=40), json_values),
        "session_id": st.one_of(st.text(min_size=40, max_size=46), json_values),
        "factors": st.one_of(factor_maps, json_values),
        "device_id": st.one_of(st.text(max_size=130), json_values),
        "transaction_amount": json_values,
        "amount": st.one_of(
            st.decimals(allow_nan=False, allow_infinity=False), st.integers(), json_values
        ),
        "currency": st.one_of(st.text(max_size=4), st.sampled_from(["EUR", "JPY"]), json_values),
        "return_url": st.one_of(st.text(max_size=60), st.just("https://a.example/"), json_values),
        "cancel_url": st.one_of(st.text(max_size=60), json_values),
        "merchant_id": st.one_of(st.text(max_size=70), json_values),
        "risk_level": st.one_of(st.sampled_from(["LOW", "MEDIUM", "HIGH", "low"]), json_values),
        "psp_config": json_values,
        "passkey": st.one_of(credentials, json_values),
        "credential": st.one_of(credentials, json_values),
        "require_passkey": st.one_of(st.booleans(), json_values),
    },
)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=12 * 1024))
def test_arbitrary_bytes_only_parse_or_raise_remote_protocol_error(data: bytes) -> None:
    fuzz_one_input(data)


@settings(max_examples=EXAMPLES)
@given(near_valid)
def test_near_valid_json_only_parses_or_raises_remote_protocol_error(obj: dict[str, Any]) -> None:
    fuzz_one_input(json.dumps(obj, default=str).encode())


SESSION = "Ej5FZ-ibQtOkVkJmFBdAALmXUaNeNiJGzfarUzmi8k8"
USER = "123e4567-e89b-42d3-a456-426614174000"


@settings(max_examples=EXAMPLES)
@given(st.one_of(credentials, json_values))
def test_any_assertion_in_a_valid_verify_is_decided_and_any_credential_refused(
    credential: Any,
) -> None:
    verify = {"session_id": SESSION, "user_uuid": USER, "factors": {"PIN": "0" * 64}}
    registration = {"user_uuid": USER, "credential": credential}
    fuzz_one_input(json.dumps({**verify, "passkey": credential}, default=str).encode())
    fuzz_one_input(json.dumps(registration, default=str).encode())


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=512))
def test_a_stored_idempotency_record_decodes_or_raises_value_error(data: bytes) -> None:
    try:
        held = decode_held(data)
    except ValueError:
        return
    assert isinstance(held, Claim | KeptAnswer)


@given(
    st.builds(
        Answer,
        status=st.integers(100, 599),
        headers=st.lists(st.tuples(st.text(), st.text()), max_size=4).map(tuple),
        body=st.binary(max_size=256),
    ),
    st.binary(min_size=12, max_size=12),
)
def test_a_kept_answer_round_trips_sealed(answer: Answer, nonce: bytes) -> None:
    keyring = MasterKeyring(keys={1: b"k" * 32}, current=1)
    kept = seal_answer(answer, fingerprint=b"f" * 32, keyring=keyring, scoped="s" * 64, nonce=nonce)
    stored = decode_held(encode_held(kept))
    assert isinstance(stored, KeptAnswer)
    assert open_answer(stored, keyring=keyring, scoped="s" * 64) == answer
