"""Registration and assertion parsing under fuzz: every attestation format the WebAuthn
library accepts, with statements, keys and fields drawn at random around a response that is
otherwise valid (its challenge, origin and RP id are right, so parsing goes all the way into
the format's own verifier). The invariant: a :class:`Passkey` (registration) or a decision
(assertion), or a ``RemoteProtocolError``; never any other exception."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.authenticator import SoftAuthenticator, b64decode
from tests.proto.test_passkeys import ORIGIN, RP
from zeropay_proto import RemoteProtocolError, b64url
from zeropay_proto.passkeys import (
    LinkedData,
    Passkey,
    PossessionProven,
    check_assertion,
    check_registration,
)

CHALLENGE = bytes(range(32))
#: Every ``fmt`` py_webauthn verifies (webauthn.helpers.structs.AttestationFormat).
FORMATS = ("none", "packed", "fido-u2f", "android-key", "android-safetynet", "tpm", "apple")

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-4, 4)), children, max_size=4)
    ),
    max_leaves=12,
)
jws_parts = st.one_of(st.binary(max_size=40), st.sampled_from([b"[]", b"{}", b"null", b"1"]))
statements = st.one_of(
    st.dictionaries(
        st.sampled_from(
            ["alg", "sig", "x5c", "ver", "response", "certInfo", "pubArea", "ecdaaKeyId"]
        ),
        cbor_values,
        max_size=6,
    ),
    st.tuples(jws_parts, jws_parts, jws_parts).map(
        lambda p: {"ver": "1", "response": ".".join(b64url(x) for x in p).encode()}
    ),
    cbor_values,
)
cose_keys = st.one_of(
    st.dictionaries(st.integers(-4, 4), cbor_values, max_size=6).map(cbor2.dumps),
    st.binary(max_size=80),
)


def _registration(fmt: str, statement: Any, cose: bytes | None) -> dict[str, Any]:
    device = SoftAuthenticator(credential_id=b"fuzzed")
    credential = device.register(RP.rp_id, ORIGIN, CHALLENGE)
    attestation = cbor2.loads(b64decode(credential["response"]["attestationObject"]))
    if cose is not None:  # the auth data's credential key, replaced
        auth = attestation["authData"]
        attestation["authData"] = auth[: 37 + 16 + 2 + len(b"fuzzed")] + cose
    attestation["fmt"] = fmt
    attestation["attStmt"] = statement
    credential["response"]["attestationObject"] = b64url(cbor2.dumps(attestation))
    return credential


@settings(max_examples=1_500)
@given(
    fmt=st.sampled_from(FORMATS) | st.text(max_size=12),
    statement=statements,
    cose=st.none() | cose_keys,
)
def test_registration_is_a_passkey_or_a_400(fmt: str, statement: Any, cose: bytes | None) -> None:
    outcome: Passkey | RemoteProtocolError
    try:
        outcome = check_registration(
            RP, _registration(fmt, statement, cose), challenge=CHALLENGE, now_ms=0
        )
    except RemoteProtocolError as exc:
        outcome = exc
    assert isinstance(outcome, Passkey) or outcome.error_status_hint == 400


LINKED = LinkedData(session_id="s", amount=4250, currency="EUR", payee="shop", attempt=1)


@settings(max_examples=1_000)
@given(
    field=st.sampled_from(["clientDataJSON", "authenticatorData", "signature", "userHandle"]),
    value=st.one_of(st.binary(max_size=120).map(b64url), st.text(max_size=40), cbor_values),
)
def test_an_assertion_is_decided_never_raised(field: str, value: Any) -> None:
    device = SoftAuthenticator(credential_id=b"phone")
    passkey = Passkey(
        credential_id=b"phone", public_key=device.cose_key(), sign_count=0, created_at_ms=0
    )
    response = device.sign(RP.rp_id, ORIGIN, LINKED.challenge())
    response["response"][field] = value
    decided = check_assertion(RP, response, linked=LINKED, passkeys=[passkey])
    assert not isinstance(decided, PossessionProven) or field == "userHandle"
