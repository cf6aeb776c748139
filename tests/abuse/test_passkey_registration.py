"""Nobody but the enrolling client can spend its passkey grant, and no registration answers
a 500 or stores a key that assertions cannot be checked with.

Found by attack: an anonymous ``POST /v1/passkeys`` with a junk credential consumed a new
user's one-time grant (taken before the credential was checked), so the user's own
registration got 401; an ``android-safetynet`` attestation whose payload is a JSON list
answered 500; off-curve and unknown COSE keys were accepted.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import cbor2
import pytest

from tests.authenticator import SoftAuthenticator, b64decode
from tests.helpers import answers
from tests.server.harness import FACTORS, Harness, running_app
from zeropay_proto import b64url

ORIGIN = "http://localhost:8080"


async def _enrolled_with_grant(h: Harness) -> tuple[str, bytes]:
    """A new user enrolled with a passkey grant: the registration challenge it answered."""
    user = str(uuid.uuid4())
    body = {
        "user_uuid": user,
        "factors": answers(user, list(FACTORS)),
        "device_id": "phone-1",
        "register_passkey": True,
    }
    enrolled = await h.call("POST", "/v1/enrollment/store", body)
    assert enrolled.status == 201, enrolled.text
    return user, b64decode(enrolled.body["passkey_options"]["challenge"])


async def _register(h: Harness, user: str, credential: dict[str, Any]) -> tuple[int, str]:
    done = await h.call(
        "POST",
        "/v1/passkeys",
        {"user_uuid": user, "credential": credential},
        headers={"X-API-Key": ""},  # anonymous: the grant is the only credential
    )
    return done.status, done.body.get("code", "")


async def test_a_strangers_junk_does_not_spend_the_users_grant() -> None:
    async with running_app() as h:
        user, challenge = await _enrolled_with_grant(h)
        device = SoftAuthenticator(credential_id=b"real-phone")
        junk = SoftAuthenticator(credential_id=b"junk").register("localhost", ORIGIN, bytes(32))
        assert await _register(h, user, junk) == (400, "PASSKEY_INVALID")
        assert await _register(h, user, {"type": "public-key"}) == (400, "PASSKEY_INVALID")
        status, _ = await _register(h, user, device.register("localhost", ORIGIN, challenge))
        assert status == 201  # the grant was still there
        again = SoftAuthenticator(credential_id=b"second").register("localhost", ORIGIN, challenge)
        assert (await _register(h, user, again))[0] == 401  # and it is spent once


def _safetynet_list_payload(device: SoftAuthenticator, challenge: bytes) -> dict[str, Any]:
    """A registration whose ``android-safetynet`` JWS payload is a JSON list, not an object."""
    credential = device.register("localhost", ORIGIN, challenge)
    attestation = cbor2.loads(b64decode(credential["response"]["attestationObject"]))
    jws = ".".join(b64url(part) for part in (b'{"alg":"RS256"}', b"[]", b"sig"))
    attestation["fmt"] = "android-safetynet"
    attestation["attStmt"] = {"ver": "1", "response": jws.encode()}
    credential["response"]["attestationObject"] = b64url(cbor2.dumps(attestation))
    return credential


@dataclasses.dataclass
class OddKey(SoftAuthenticator):
    """An authenticator announcing a COSE key of its choosing."""

    cose: bytes = b""

    def cose_key(self) -> bytes:
        return self.cose


#: (x, y) = (1, 1) is not a point of P-256.
OFF_CURVE = cbor2.dumps(
    {1: 2, 3: -7, -1: 1, -2: (1).to_bytes(32, "big"), -3: (1).to_bytes(32, "big")}
)
#: ES512 on P-521: a valid key of an algorithm this service does not check assertions with.
UNSUPPORTED = cbor2.dumps({1: 2, 3: -36, -1: 3, -2: bytes(66), -3: bytes(66)})


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_safetynet_list_payload, id="safetynet-list-payload"),
        pytest.param(
            lambda d, c: OddKey(credential_id=b"k", cose=OFF_CURVE).register(
                "localhost", ORIGIN, c
            ),
            id="off-curve-key",
        ),
        pytest.param(
            lambda d, c: OddKey(credential_id=b"k", cose=UNSUPPORTED).register(
                "localhost", ORIGIN, c
            ),
            id="unsupported-key",
        ),
    ],
)
async def test_a_hostile_registration_is_a_400_and_stores_nothing(make: Any) -> None:
    async with running_app() as h:
        user, challenge = await _enrolled_with_grant(h)
        device = SoftAuthenticator(credential_id=b"phone")
        assert await _register(h, user, make(device, challenge)) == (400, "PASSKEY_INVALID")
        assert await h.runtime.durable.passkeys(user) == []
        status, _ = await _register(h, user, device.register("localhost", ORIGIN, challenge))
        assert status == 201
