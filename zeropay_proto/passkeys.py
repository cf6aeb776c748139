"""Passkeys (WebAuthn): the possession factor, with dynamic linking.

PSD2's strong customer authentication needs two independent categories of element, and its
dynamic linking rule (RTS 2018/389, article 5) needs the authentication code to depend on the
amount and the payee. A passkey assertion does both here: its challenge is not random but the
hash of the session's **linked data** (:class:`LinkedData`: session id, amount, currency,
payee), so the authenticator's signature covers the transaction itself. A signature made for
42.50 EUR to ``shop-1`` cannot verify a session for another amount or another payee, and the
session id makes it good for one session only.

The WebAuthn structures (CBOR, COSE keys, attestation, authenticator data) are parsed and
verified by py_webauthn, never by hand. Its verification calls are pure computation over bytes,
so the decisions stay here with the caller's entropy (registration challenges) as an argument;
WebAuthn carries no time, so no ``now`` is needed.

Decisions:

- :func:`check_registration` makes a :class:`Passkey` of a registration response, or refuses it.
- :func:`requires_possession` decides whether a session challenges the passkey, and
  :func:`decoy_credential_ids` gives an unknown user passkeys as common as real ones.
- :func:`check_assertion` decides an assertion. It is :class:`PossessionProven` with the sign
  count to store, or :class:`PossessionRefused` (counted as a failed attempt, like a wrong
  answer), or :class:`CloneSuspected`. The last is a signature that verifies but whose sign
  count did not rise, which is how a cloned authenticator shows; it is refused and audited.

The linked data names the attempt too: each of a session's attempts signs its own challenge,
so an assertion made for one attempt (proving possession, with a wrong answer beside it) is
refused at the next, whether or not the authenticator keeps a sign count.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import decode_credential_public_key
from webauthn.helpers.cose import COSECRV, COSEAlgorithmIdentifier
from webauthn.helpers.decode_credential_public_key import (
    DecodedEC2PublicKey,
    DecodedOKPPublicKey,
    DecodedRSAPublicKey,
)
from webauthn.helpers.decoded_public_key_to_cryptography import (
    decoded_public_key_to_cryptography,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ._encoding import b64url
from ._errors import LocalProtocolError, RemoteProtocolError

LINKING_DOMAIN = b"zeropay/dynamic-linking/v1"
#: Registration challenges are this many bytes of the caller's entropy.
REGISTRATION_CHALLENGE_BYTES = 32
#: The most passkeys one user may register.
MAX_PASSKEYS_PER_USER = 10
#: How long the browser waits for the user (milliseconds).
CEREMONY_TIMEOUT_MS = 120_000


@dataclass(frozen=True, kw_only=True)
class RelyingParty:
    """Who the passkeys are for: the RP id (a registrable domain, ``WEBAUTHN_RP_ID``) and the
    origins allowed to use them (``WEBAUTHN_ORIGINS``)."""

    rp_id: str
    name: str
    origins: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.rp_id or not self.origins:
            raise LocalProtocolError("a relying party needs an id and at least one origin")


@dataclass(frozen=True, kw_only=True)
class LinkedData:
    """What a payment's passkey signature covers: shown to the payer before they sign.
    ``attempt`` is the session's attempt (1-based) the signature is good for."""

    session_id: str
    #: In minor units of ``currency`` (:mod:`zeropay_proto.money`).
    amount: int | None
    currency: str | None
    payee: str | None
    attempt: int

    def canonical(self) -> bytes:
        """The length-prefixed fields the challenge hashes (the amount as decimal digits of
        minor units: one text per amount)."""
        amount = "" if self.amount is None else str(self.amount)
        fields = (
            LINKING_DOMAIN,
            self.session_id,
            amount,
            self.currency or "",
            self.payee or "",
            str(self.attempt),
        )
        return b"".join(_field(f if isinstance(f, bytes) else f.encode()) for f in fields)

    def challenge(self) -> bytes:
        """The WebAuthn challenge of this payment: SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical()).digest()

    def as_dict(self) -> dict[str, Any]:
        """The linked data as the client shows it."""
        return {
            "session_id": self.session_id,
            "amount": self.amount,
            "currency": self.currency,
            "payee": self.payee,
            "attempt": self.attempt,
        }


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


@dataclass(frozen=True, kw_only=True)
class Passkey:
    """A registered credential: what is stored with the enrollment."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    created_at_ms: int


@dataclass(frozen=True, kw_only=True)
class PossessionProven:
    """The assertion verified: store ``sign_count`` for ``credential_id``."""

    credential_id: bytes
    sign_count: int


@dataclass(frozen=True, kw_only=True)
class PossessionRefused:
    """The assertion did not verify (wrong challenge, origin, key, flags, or malformed): one
    more failed attempt. ``reason`` is for the operator's log, never for the client."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class CloneSuspected:
    """The signature verified but the sign count did not rise: refused, and audited.
    ``stored_count`` ``None``: the durable store refused the count (:func:`count_refused`)."""

    credential_id: bytes
    stored_count: int | None
    presented_count: int


#: What :func:`check_assertion` decides.
Possession = PossessionProven | PossessionRefused | CloneSuspected


def count_refused(proven: PossessionProven) -> CloneSuspected:
    """The decision when the durable store, the source of truth for sign counts, did not take
    a proven assertion's count: it had risen there meanwhile (a cache held an older count), so
    the assertion was replayed or made by a clone."""
    return CloneSuspected(
        credential_id=proven.credential_id, stored_count=None, presented_count=proven.sign_count
    )


#: A fixed P-256 public key (COSE; its private scalar is 0x5eed, no secret): what an assertion
#: for a credential the user does not have is checked against, and refused even if it verifies.
STAND_IN_KEY = bytes.fromhex(
    "a50102032620012158205cd4cecc42489e98ed3ff71498051f780f36486d4d44d867d998185784e7da5722"
    "5820eef71a40d6a6ad113d47bbf3110bf1185c3ae463317ab00673043abcbcd4054b"
)
#: What a response the library cannot parse or verify raises: anything. py_webauthn raises
#: its own errors for what it checks, but a hostile attestation reaches code it does not
#: guard (an ``android-safetynet`` payload that is a JSON list raised ``AttributeError``), and
#: every one of those is the client's bad input (a 400, or a refused assertion), never a 500.
#: The fuzz tests (``tests/fuzz``) drive every attestation format through it.
_MALFORMED = (Exception,)

#: The credential keys a passkey may have (COSE, RFC 9053): ES256 on P-256, EdDSA on Ed25519
#: and RS256, the three every platform authenticator offers (WebAuthn Level 3, 5.8.3: "-7,
#: -8 and -257 ... for maximum compatibility"). Options ask for these alone.
SUPPORTED_KEY_ALGORITHMS = (
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)
#: The smallest RSA modulus accepted (NIST SP 800-57 part 1: 2048 bits to 2030).
MIN_RSA_BITS = 2048


def supported_credential_key(cose_key: bytes) -> bool:
    """Whether a registered credential's public key is one this service checks assertions
    with: an algorithm of :data:`SUPPORTED_KEY_ALGORITHMS` on its own curve, a point on that
    curve (an off-curve P-256 point is refused: invalid-curve attacks), an RSA modulus of at
    least :data:`MIN_RSA_BITS`."""
    try:
        decoded = decode_credential_public_key(cose_key)
        match decoded:
            case DecodedEC2PublicKey(alg=COSEAlgorithmIdentifier.ECDSA_SHA_256, crv=COSECRV.P256):
                pass
            case DecodedOKPPublicKey(alg=COSEAlgorithmIdentifier.EDDSA, crv=COSECRV.ED25519):
                pass
            case DecodedRSAPublicKey(alg=COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256):
                if int.from_bytes(decoded.n, "big").bit_length() < MIN_RSA_BITS:
                    return False
            case _:
                return False
        # Builds the key, which checks that an elliptic-curve point lies on its curve.
        decoded_public_key_to_cryptography(decoded)
    except _MALFORMED:
        return False
    return True


#: A WebAuthn credential id is at most 1023 bytes.
MAX_CREDENTIAL_ID_BYTES = 1023


def parse_credential_id(value: str, *, field: str = "credential_id") -> bytes:
    """A credential id from its unpadded base64url text, or a 400 naming ``field``."""
    raw = b""
    if value.isascii() and 0 < len(value) <= 1364:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raw = b""
    if not raw or len(raw) > MAX_CREDENTIAL_ID_BYTES or b64url(raw) != value:
        raise RemoteProtocolError(
            "malformed credential id", code="INVALID_CREDENTIAL_ID", field=field
        )
    return raw


#: Payments from this amount need the possession factor (PSD2 exempts remote payments under
#: 30 EUR, RTS 2018/389 article 16; the currency is the merchant's business here).
DEFAULT_POSSESSION_THRESHOLD = Decimal(30)
#: Decoys: of 100 unknown users, this many "have" passkeys (the share real users have, as the
#: deployment measures it; the default assumes a third), each with one or two.
DEFAULT_DECOY_PASSKEY_PERCENT = 33


@dataclass(frozen=True, kw_only=True)
class PossessionPolicy:
    """When sessions challenge passkeys (a deployment with a relying party has one)."""

    threshold: Decimal = DEFAULT_POSSESSION_THRESHOLD
    decoy_percent: int = DEFAULT_DECOY_PASSKEY_PERCENT

    def __post_init__(self) -> None:
        if self.threshold < 0 or not 0 <= self.decoy_percent <= 100:
            raise LocalProtocolError("a threshold is not negative, a share is a percentage")


def requires_possession(
    *,
    has_passkey: bool,
    amount: Decimal | None,
    high_risk: bool,
    merchant_asks: bool,
    threshold: Decimal = DEFAULT_POSSESSION_THRESHOLD,
) -> bool:
    """Whether a session also challenges the user's passkey: only if they have one, and the
    merchant asks, the payment is high risk, or its amount reaches ``threshold``."""
    big = amount is not None and amount >= threshold
    return has_passkey and (merchant_asks or high_risk or big)


def decoy_credential_ids(decoy_key: bytes, user_id: str, *, percent: int) -> tuple[bytes, ...]:
    """An unknown user's passkeys, as their decoy session shows them: stable for the user,
    unpredictable without the server's key, as common as real ones, and shaped like real
    credential ids (32 bytes). So whether a session asks for a passkey, and which ids it
    allows, do not tell an enrolled user from an unknown one."""
    seed = hmac.new(
        decoy_key, b"zeropay/decoy-passkeys/v1\x00" + user_id.encode(), hashlib.sha256
    ).digest()
    if seed[0] * 100 >= percent * 256:
        return ()
    count = 1 + seed[1] % 2
    return tuple(
        hmac.new(seed, b"credential-%d" % i, hashlib.sha256).digest() for i in range(count)
    )


def rises(stored: int, presented: int) -> bool:
    """Whether a presented sign count is acceptable after the stored one: higher, or both 0
    (an authenticator that keeps no counter)."""
    return presented > stored or presented == stored == 0


def registration_options(
    rp: RelyingParty,
    *,
    user_id: str,
    user_name: str,
    challenge: bytes,
    registered: Sequence[Passkey],
) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptions`` as JSON for ``navigator.credentials.create``:
    a discoverable credential with user verification, not one already registered."""
    if len(challenge) != REGISTRATION_CHALLENGE_BYTES:
        raise LocalProtocolError("a registration challenge is 32 bytes of entropy")
    if len(registered) >= MAX_PASSKEYS_PER_USER:
        raise RemoteProtocolError(
            f"at most {MAX_PASSKEYS_PER_USER} passkeys per user",
            code="TOO_MANY_PASSKEYS",
            error_status_hint=409,
        )
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_id=user_id.encode("ascii"),
        user_name=user_name,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in registered],
        supported_pub_key_algs=list(SUPPORTED_KEY_ALGORITHMS),
    )
    parsed: dict[str, Any] = json.loads(options_to_json(options))
    return parsed


def check_registration(
    rp: RelyingParty, response: Mapping[str, Any], *, challenge: bytes, now_ms: int
) -> Passkey:
    """The passkey a registration response creates, or a 400 if it does not verify or its key
    is not one this service checks assertions with (:func:`supported_credential_key`)."""
    refused = RemoteProtocolError(
        "the passkey registration did not verify", code="PASSKEY_INVALID", field="credential"
    )
    try:
        verified = verify_registration_response(
            credential=dict(response),
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            require_user_verification=True,
            supported_pub_key_algs=list(SUPPORTED_KEY_ALGORITHMS),
        )
    except _MALFORMED as exc:
        raise refused from exc
    if not supported_credential_key(verified.credential_public_key):
        raise refused
    return Passkey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        created_at_ms=now_ms,
    )


def assertion_options(
    rp: RelyingParty, linked: LinkedData, credential_ids: Sequence[bytes]
) -> dict[str, Any]:
    """``PublicKeyCredentialRequestOptions`` as JSON for ``navigator.credentials.get``: the
    challenge is the linked data's hash, the allowed credentials the user's passkeys."""
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=linked.challenge(),
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=[PublicKeyCredentialDescriptor(id=i) for i in credential_ids],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    parsed: dict[str, Any] = json.loads(options_to_json(options))
    return parsed


def check_assertion(
    rp: RelyingParty,
    response: Mapping[str, Any],
    *,
    linked: LinkedData,
    passkeys: Sequence[Passkey],
) -> Possession:
    """Decide an assertion against the session's own linked data and the user's passkeys:
    the signature, the challenge, the origin and RP id, user presence and verification, and a
    sign count that rises (both zero: the authenticator keeps no count).

    An assertion for a credential that is not the user's (an unknown user's decoy passkey, or
    none at all) is checked against :data:`STAND_IN_KEY`: the same work, and a refusal, so the
    time taken does not tell a decoy from a real user."""
    by_id = {b64url(p.credential_id): p for p in passkeys}
    passkey = by_id.get(str(response.get("rawId") or response.get("id") or ""))
    try:
        verified = verify_authentication_response(
            credential=dict(response),
            expected_challenge=linked.challenge(),
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            credential_public_key=STAND_IN_KEY if passkey is None else passkey.public_key,
            credential_current_sign_count=0,  # the core decides on the count, below
            require_user_verification=True,
        )
    except _MALFORMED as exc:
        return PossessionRefused(reason=type(exc).__name__)
    if passkey is None:
        return PossessionRefused(reason="not one of the user's passkeys")
    count = verified.new_sign_count
    if not rises(passkey.sign_count, count):
        return CloneSuspected(
            credential_id=passkey.credential_id,
            stored_count=passkey.sign_count,
            presented_count=count,
        )
    return PossessionProven(credential_id=passkey.credential_id, sign_count=count)
