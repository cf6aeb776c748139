"""A software WebAuthn authenticator for tests: a P-256 key that makes registration and
assertion responses as a browser hands them to the page (JSON, base64url fields).

It encodes what an authenticator would (CBOR via cbor2, the library py_webauthn parses with);
the server side parses and verifies with py_webauthn only. Flags and counts can be set wrong on
purpose, to test each refusal.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from zeropay_proto import b64url

#: Authenticator data flags.
UP, UV, AT = 0x01, 0x04, 0x40


@dataclass
class SoftAuthenticator:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    sign_count: int = 0

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    @staticmethod
    def _client_data(kind: str, challenge: bytes, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": b64url(challenge), "origin": origin, "crossOrigin": False}
        ).encode()

    def register(self, rp_id: str, origin: str, challenge: bytes) -> dict[str, Any]:
        attested = (
            bytes(16) + len(self.credential_id).to_bytes(2, "big") + self.credential_id
        ) + self.cose_key()
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([UP | UV | AT])
            + self.sign_count.to_bytes(4, "big")
            + attested
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", challenge, origin)
        return self._credential(
            clientDataJSON=b64url(client_data), attestationObject=b64url(attestation)
        )

    def sign(
        self, rp_id: str, origin: str, challenge: bytes, *, flags: int = UP | UV, count: int = 1
    ) -> dict[str, Any]:
        """An assertion; the count rises by ``count`` (0: it stays)."""
        self.sign_count += count
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + self.sign_count.to_bytes(4, "big")
        )
        client_data = self._client_data("webauthn.get", challenge, origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return self._credential(
            clientDataJSON=b64url(client_data),
            authenticatorData=b64url(auth_data),
            signature=b64url(signature),
            userHandle=None,
        )

    def answer(self, origin: str, request: dict[str, Any]) -> dict[str, Any]:
        """What ``navigator.credentials.get`` returns for a session's passkey request (the
        ``passkey`` of an initiate or status answer)."""
        options = request["options"]
        return self.sign(options["rpId"], origin, b64decode(options["challenge"]))

    def _credential(self, **response: str | None) -> dict[str, Any]:
        """A PublicKeyCredential as the page hands it to the server (JSON)."""
        credential_id = b64url(self.credential_id)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "response": response,
        }


def b64decode(text: str) -> bytes:
    """Unpadded base64url, as WebAuthn's JSON carries binary fields."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
