"""Passkeys: registration, and assertions whose challenge is the payment's linked data.

A software authenticator (tests/authenticator.py) makes real responses; py_webauthn verifies
them inside the core's decisions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.authenticator import UP, UV, SoftAuthenticator
from tests.helpers import T0, entropy
from zeropay_proto import LocalProtocolError, RemoteProtocolError, b64url
from zeropay_proto.passkeys import (
    LINKING_DOMAIN,
    MAX_PASSKEYS_PER_USER,
    STAND_IN_KEY,
    CloneSuspected,
    LinkedData,
    Passkey,
    PossessionPolicy,
    PossessionProven,
    PossessionRefused,
    RelyingParty,
    assertion_options,
    check_assertion,
    check_registration,
    count_refused,
    decoy_credential_ids,
    parse_credential_id,
    registration_options,
    requires_possession,
    supported_credential_key,
)

RP = RelyingParty(rp_id="localhost", name="ZeroPay", origins=("http://localhost:8080",))
ORIGIN = RP.origins[0]
USER = "123e4567-e89b-42d3-a456-426614174000"
NOW_MS = int(T0 * 1000)
LINKED = LinkedData(
    session_id="Ej5FZ-ibQtOkVkJmFBdAALmXUaNeNiJGzfarUzmi8k8",
    amount=4250,
    currency="EUR",
    payee="shop-1",
    attempt=1,
)


def registered(device: SoftAuthenticator) -> Passkey:
    challenge = entropy(32, "registration")
    return check_registration(
        RP, device.register(RP.rp_id, ORIGIN, challenge), challenge=challenge, now_ms=NOW_MS
    )


def test_a_registration_makes_a_passkey_with_its_key_and_count() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = registered(device)
    assert passkey.credential_id == b"cred-1"
    assert passkey.sign_count == 0
    assert passkey.created_at_ms == NOW_MS
    assert passkey.public_key == device.cose_key()


def test_a_registration_for_another_challenge_or_origin_is_refused() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    challenge = entropy(32, "registration")
    for response in (
        device.register(RP.rp_id, ORIGIN, entropy(32, "another")),
        device.register(RP.rp_id, "https://evil.example", challenge),
        device.register("evil.example", ORIGIN, challenge),
        {"id": "x"},
    ):
        with pytest.raises(RemoteProtocolError) as refused:
            check_registration(RP, response, challenge=challenge, now_ms=NOW_MS)
        assert refused.value.code == "PASSKEY_INVALID"


def test_registration_options_exclude_what_is_registered_and_cap_the_count() -> None:
    passkey = registered(SoftAuthenticator(credential_id=b"cred-1"))
    options = registration_options(
        RP, user_id=USER, user_name="payer", challenge=entropy(32), registered=[passkey]
    )
    assert options["challenge"] == b64url(entropy(32))
    assert options["rp"]["id"] == "localhost"
    assert [c["id"] for c in options["excludeCredentials"]] == [b64url(b"cred-1")]
    assert options["authenticatorSelection"]["userVerification"] == "required"
    with pytest.raises(RemoteProtocolError) as full:
        registration_options(
            RP,
            user_id=USER,
            user_name="payer",
            challenge=entropy(32),
            registered=[passkey] * MAX_PASSKEYS_PER_USER,
        )
    assert (full.value.code, full.value.error_status_hint) == ("TOO_MANY_PASSKEYS", 409)
    with pytest.raises(LocalProtocolError):
        registration_options(RP, user_id=USER, user_name="p", challenge=b"short", registered=[])


def test_the_assertion_challenge_is_the_linked_datas_hash() -> None:
    passkey = registered(SoftAuthenticator(credential_id=b"cred-1"))
    options = assertion_options(RP, LINKED, [passkey.credential_id])
    assert options["challenge"] == b64url(LINKED.challenge())
    assert options["allowCredentials"] == [{"id": b64url(b"cred-1"), "type": "public-key"}]
    assert options["userVerification"] == "required"
    assert LINKED.as_dict() == {
        "session_id": LINKED.session_id,
        "amount": 4250,
        "currency": "EUR",
        "payee": "shop-1",
        "attempt": 1,
    }


def test_any_change_of_the_payment_links_otherwise() -> None:
    others = [
        replace(LINKED, amount=425),
        replace(LINKED, amount=42500),
        replace(LINKED, amount=None),
        replace(LINKED, currency="USD"),
        replace(LINKED, payee="shop-2"),
        replace(LINKED, payee=None),
        replace(LINKED, session_id=LINKED.session_id[:-1] + "A"),
        replace(LINKED, attempt=2),
    ]
    assert len({o.challenge() for o in others} | {LINKED.challenge()}) == len(others) + 1


def test_an_assertion_over_the_sessions_linked_data_proves_possession() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = registered(device)
    response = device.sign(RP.rp_id, ORIGIN, LINKED.challenge())
    decided = check_assertion(RP, response, linked=LINKED, passkeys=[passkey])
    assert decided == PossessionProven(credential_id=b"cred-1", sign_count=1)


def test_a_signature_over_another_amount_or_payee_is_refused() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = registered(device)
    for signed in (replace(LINKED, amount=4251), replace(LINKED, payee="shop-2")):
        response = device.sign(RP.rp_id, ORIGIN, signed.challenge())
        decided = check_assertion(RP, response, linked=LINKED, passkeys=[passkey])
        assert isinstance(decided, PossessionRefused)


def test_an_assertion_made_for_another_attempt_of_the_session_is_refused() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = registered(device)
    first = device.sign(RP.rp_id, ORIGIN, LINKED.challenge())
    second = replace(LINKED, attempt=2)
    decided = check_assertion(RP, first, linked=second, passkeys=[passkey])
    assert isinstance(decided, PossessionRefused)


def test_a_signature_by_the_stand_in_key_is_refused_though_it_verifies() -> None:
    # An unknown credential is checked against STAND_IN_KEY, whose private scalar is public:
    # a perfect signature by it proves nothing.
    holder = SoftAuthenticator(
        credential_id=b"decoy", key=ec.derive_private_key(0x5EED, ec.SECP256R1())
    )
    assert holder.cose_key() == STAND_IN_KEY
    response = holder.sign(RP.rp_id, ORIGIN, LINKED.challenge())
    passkey = registered(SoftAuthenticator(credential_id=b"cred-1"))
    for passkeys in ([], [passkey]):
        decided = check_assertion(RP, response, linked=LINKED, passkeys=passkeys)
        assert decided == PossessionRefused(reason="not one of the user's passkeys")


def test_wrong_origin_rp_flags_key_or_credential_are_refused() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = registered(device)
    impostor = SoftAuthenticator(credential_id=b"cred-1")  # same id, another key
    stranger = SoftAuthenticator(credential_id=b"cred-9")
    challenge = LINKED.challenge()
    for response in (
        device.sign(RP.rp_id, "https://evil.example", challenge),
        device.sign("evil.example", ORIGIN, challenge),
        device.sign(RP.rp_id, ORIGIN, challenge, flags=UP),  # not user-verified
        device.sign(RP.rp_id, ORIGIN, challenge, flags=UV),  # no user presence
        impostor.sign(RP.rp_id, ORIGIN, challenge),
        stranger.sign(RP.rp_id, ORIGIN, challenge),
        {"id": b64url(b"cred-1"), "response": {}},
    ):
        decided = check_assertion(RP, response, linked=LINKED, passkeys=[passkey])
        assert isinstance(decided, PossessionRefused), response


def test_a_count_that_does_not_rise_is_a_suspected_clone() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = replace(registered(device), sign_count=7)
    device.sign_count = 6
    response = device.sign(RP.rp_id, ORIGIN, LINKED.challenge())  # presents 7
    decided = check_assertion(RP, response, linked=LINKED, passkeys=[passkey])
    assert decided == CloneSuspected(credential_id=b"cred-1", stored_count=7, presented_count=7)


def test_a_count_the_durable_store_refused_is_a_suspected_clone_of_unknown_count() -> None:
    proven = PossessionProven(credential_id=b"cred-1", sign_count=4)
    assert count_refused(proven) == CloneSuspected(
        credential_id=b"cred-1", stored_count=None, presented_count=4
    )


def test_an_authenticator_without_a_counter_stays_at_zero() -> None:
    device = SoftAuthenticator(credential_id=b"cred-1")
    passkey = registered(device)
    response = device.sign(RP.rp_id, ORIGIN, LINKED.challenge(), count=0)
    decided = check_assertion(RP, response, linked=LINKED, passkeys=[passkey])
    assert decided == PossessionProven(credential_id=b"cred-1", sign_count=0)


def test_a_relying_party_needs_an_id_and_an_origin() -> None:
    with pytest.raises(LocalProtocolError):
        RelyingParty(rp_id="", name="x", origins=(ORIGIN,))
    with pytest.raises(LocalProtocolError):
        RelyingParty(rp_id="localhost", name="x", origins=())


def test_a_credential_id_is_canonical_unpadded_base64url() -> None:
    assert parse_credential_id(b64url(b"cred-1")) == b"cred-1"
    for bad in ("", "Y3JlZC0x=", "Y3JlZC0y"[:-1] + "!", "Y", "é", "A" * 1366, b64url(bytes(1024))):
        with pytest.raises(RemoteProtocolError) as refused:
            parse_credential_id(bad)
        assert refused.value.code == "INVALID_CREDENTIAL_ID"


def test_possession_is_asked_only_of_users_with_a_passkey_when_the_payment_needs_it() -> None:
    def asks(has: bool, amount: str | None, high: bool = False, merchant: bool = False) -> bool:
        value = None if amount is None else Decimal(amount)
        return requires_possession(
            has_passkey=has, amount=value, high_risk=high, merchant_asks=merchant
        )

    assert asks(True, "30")
    assert not asks(True, "29.99")
    assert not asks(True, None)
    assert asks(True, "5", high=True)
    assert asks(True, None, merchant=True)
    assert not asks(False, "1000", high=True, merchant=True)


def test_decoy_passkeys_are_stable_shaped_like_real_ones_and_as_common() -> None:
    key = entropy(32, "decoy")
    users = [f"00000000-0000-4000-8000-{n:012d}" for n in range(3000)]
    third = PossessionPolicy().decoy_percent
    drawn = [decoy_credential_ids(key, u, percent=third) for u in users]
    assert drawn == [decoy_credential_ids(key, u, percent=third) for u in users]  # stable
    having = [ids for ids in drawn if ids]
    assert 0.28 < len(having) / len(users) < 0.38  # the default third, give or take
    assert {len(ids) for ids in having} == {1, 2}
    assert all(len(i) == 32 for ids in having for i in ids)
    holder = next(u for u, ids in zip(users, drawn, strict=True) if ids)
    other = entropy(32, "other")
    assert decoy_credential_ids(other, holder, percent=third) != drawn[users.index(holder)]
    assert all(decoy_credential_ids(key, u, percent=0) == () for u in users[:50])
    assert all(decoy_credential_ids(key, u, percent=100) for u in users[:50])
    for bad in ({"decoy_percent": 101}, {"decoy_percent": -1}, {"threshold": Decimal(-1)}):
        with pytest.raises(LocalProtocolError):
            PossessionPolicy(**bad)


# ------------------------------------------------------------------ which keys are accepted


#: (1, 1) is not a point of P-256; ES512 on P-521 is not an algorithm assertions are checked in.
OFF_CURVE = {
    "kty": 2,
    "alg": -7,
    "crv": 1,
    "x": (1).to_bytes(32, "big"),
    "y": (1).to_bytes(32, "big"),
}
ES512 = {"kty": 2, "alg": -36, "crv": 3, "x": bytes(66), "y": bytes(66)}


def _cose(**fields: object) -> bytes:
    labels = {"kty": 1, "alg": 3, "crv": -1, "x": -2, "y": -3, "n": -1, "e": -2}
    return bytes(cbor2.dumps({labels[k]: v for k, v in fields.items()}))


def _rsa_cose(bits: int) -> bytes:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return _cose(kty=3, alg=-257, n=numbers.n.to_bytes(bits // 8, "big"), e=b"\x01\x00\x01")


def _ed25519_cose() -> bytes:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _cose(kty=1, alg=-8, crv=6, x=raw)


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        pytest.param(lambda: SoftAuthenticator(credential_id=b"p").cose_key(), True, id="es256"),
        pytest.param(_ed25519_cose, True, id="eddsa"),
        pytest.param(lambda: _rsa_cose(2048), True, id="rs256-2048"),
        pytest.param(lambda: _rsa_cose(1024), False, id="rs256-1024"),
        pytest.param(
            lambda: _cose(
                kty=2, alg=-7, crv=1, x=(1).to_bytes(32, "big"), y=(1).to_bytes(32, "big")
            ),
            False,
            id="off-curve",
        ),
        pytest.param(lambda: _cose(**ES512), False, id="es512"),
        pytest.param(lambda: b"\xa0", False, id="empty-map"),
        pytest.param(lambda: b"junk", False, id="not-cbor"),
    ],
)
def test_only_keys_assertions_are_checked_with_are_accepted(
    key: Callable[[], bytes], accepted: bool
) -> None:
    assert supported_credential_key(key()) is accepted


def test_a_registration_whose_key_is_too_weak_is_refused() -> None:
    """A 1024-bit RS256 key: the library's checks pass (its algorithm is allowed), the key's
    strength does not."""

    @dataclass
    class WeakRsa(SoftAuthenticator):
        def cose_key(self) -> bytes:
            return _rsa_cose(1024)

    challenge = entropy(32, "weak")
    response = WeakRsa(credential_id=b"weak").register(RP.rp_id, ORIGIN, challenge)
    with pytest.raises(RemoteProtocolError) as refused:
        check_registration(RP, response, challenge=challenge, now_ms=0)
    assert refused.value.code == "PASSKEY_INVALID"


def test_the_linked_data_reproduces_the_published_vectors() -> None:
    path = Path(__file__).parent.parent / "vectors" / "linked_data.json"
    published = json.loads(path.read_text(encoding="utf-8"))
    assert published["protocol"] == LINKING_DOMAIN.decode()
    for vector in published["vectors"]:
        fields = {k: vector[k] for k in ("session_id", "amount", "currency", "payee", "attempt")}
        linked = LinkedData(**fields)
        assert linked.canonical().hex() == vector["canonical_hex"], vector["note"]
        assert linked.challenge().hex() == vector["challenge_hex"], vector["note"]
