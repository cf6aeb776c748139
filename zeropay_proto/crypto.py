"""Pure cryptographic functions of the "double encryption" scheme (SPEC section 5).

Layer 1, in Redis: a user's :class:`EnrollmentRecord` (one verifier per enrolled factor) is
sealed with AES-256-GCM under a versioned master key. The envelope names the key version, and
the AAD binds a purpose string, the user and that version, so a record cannot be replayed under
another user or purpose and old versions keep opening after a rotation.

Layer 2, in PostgreSQL: a random per-user data key is wrapped with AES-256-GCM under a KEK
derived with PBKDF2-HMAC-SHA256 from *all* of the user's verifiers and a random per-user salt.
A verification that matched the challenged verifiers then derives the KEK and unwraps the data
key ("double decryption"): the unwrap only succeeds when the Redis record and the PostgreSQL row
belong together, so neither store alone can be altered to admit a guess.

A verifier is ``HMAC-SHA256(pepper, user ‖ factor ‖ digest)``: the raw client digests are never
stored anywhere.

Nothing here reads a clock or draws randomness: nonces, salts and keys are arguments. The
PBKDF2 functions are deliberately slow (about 10 ms at 100,000 iterations, docs/stack.md);
the server runs :func:`derive_and_wrap` and :func:`derive_and_unwrap` in its process pool.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ._errors import IntegrityError, LocalProtocolError
from .factors import CATALOGUE, DIGEST_BYTES, Factor

#: AES-256 key length and the GCM nonce length recommended by NIST SP 800-38D section 8.2.
KEY_BYTES = 32
NONCE_BYTES = 12
#: A 128-bit salt, the minimum NIST SP 800-132 section 5.1 asks for.
SALT_BYTES = 16
#: PBKDF2-HMAC-SHA256 iterations: the original service's 100,000 (SPEC section 5). OWASP's 2023
#: guidance is higher; the value is configurable and stored per user, so it can be raised.
DEFAULT_PBKDF2_ITERATIONS = 100_000
#: Lower bound accepted for a stored or configured iteration count; tests use small counts.
MIN_PBKDF2_ITERATIONS = 1
VERIFIER_BYTES = 32

PURPOSE_ENROLLMENT = "enrollment-record"

_ENVELOPE_FORMAT = 1
_ENVELOPE_HEADER = struct.Struct(">BH")  # format, key version
_RECORD_FORMAT = 1
_RECORD_HEADER = struct.Struct(">BQB")  # format, enrolled_at_s (epoch s), factor count
_RECORD_ENTRY = struct.Struct(f">B{VERIFIER_BYTES}s")  # factor index, verifier


def compute_verifier(pepper: bytes, user_id: str, factor: Factor, digest: bytes) -> bytes:
    """``HMAC-SHA256(pepper, user ‖ factor ‖ digest)``, with unambiguous separators."""
    if len(digest) != DIGEST_BYTES:
        raise LocalProtocolError("a digest is 32 bytes")
    message = b"zeropay/verifier/v1\x00%s\x00%s\x00%s" % (
        user_id.encode(),
        factor.value.encode(),
        digest,
    )
    return hmac.new(pepper, message, hashlib.sha256).digest()


def verifiers_equal(expected: bytes, presented: bytes) -> bool:
    """Constant-time equality (``hmac.compare_digest``)."""
    return hmac.compare_digest(expected, presented)


@dataclass(frozen=True, kw_only=True)
class MasterKeyring:
    """Versioned AES-256 master keys. New seals use ``current``; every version still opens.

    Rotation is: add a version, make it current, keep the old ones until every envelope has
    been re-sealed (:func:`envelope_key_version` tells which ones are old).
    """

    keys: Mapping[int, bytes]
    current: int

    def __post_init__(self) -> None:
        if not self.keys:
            raise LocalProtocolError("a keyring needs at least one key")
        for version, key in self.keys.items():
            if not 1 <= version <= 0xFFFF:
                raise LocalProtocolError("key versions are 1-65535")
            if len(key) != KEY_BYTES:
                raise LocalProtocolError("master keys are 32 bytes")
        if self.current not in self.keys:
            raise LocalProtocolError("the current key version is not in the keyring")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))


def _seal_aad(purpose: str, user_id: str, version: int) -> bytes:
    return b"zeropay/seal/v1\x00%s\x00%s\x00%d" % (purpose.encode(), user_id.encode(), version)


def seal(
    keyring: MasterKeyring, *, purpose: str, user_id: str, plaintext: bytes, nonce: bytes
) -> bytes:
    """Encrypt and authenticate ``plaintext`` for ``(purpose, user_id)``.

    Envelope: ``format (1) ‖ key version (2, big-endian) ‖ nonce (12) ‖ ciphertext ‖ tag (16)``.
    ``nonce`` must be fresh random bytes (drawn by the driver from a CSPRNG).
    """
    if len(nonce) != NONCE_BYTES:
        raise LocalProtocolError("an AES-GCM nonce is 12 bytes")
    version = keyring.current
    aead = AESGCM(keyring.keys[version])
    body = aead.encrypt(nonce, plaintext, _seal_aad(purpose, user_id, version))
    return _ENVELOPE_HEADER.pack(_ENVELOPE_FORMAT, version) + nonce + body


def envelope_key_version(envelope: bytes) -> int:
    """The master key version an envelope was sealed with (no decryption)."""
    if len(envelope) < _ENVELOPE_HEADER.size:
        raise IntegrityError("envelope too short")
    fmt, version = _ENVELOPE_HEADER.unpack_from(envelope)
    if fmt != _ENVELOPE_FORMAT:
        raise IntegrityError("unknown envelope format")
    return int(version)


def open_sealed(keyring: MasterKeyring, *, purpose: str, user_id: str, envelope: bytes) -> bytes:
    """Authenticate and decrypt an envelope made by :func:`seal`, or raise IntegrityError."""
    version = envelope_key_version(envelope)
    key = keyring.keys.get(version)
    if key is None:
        raise IntegrityError("envelope sealed under a key version that is not configured")
    start = _ENVELOPE_HEADER.size
    nonce = envelope[start : start + NONCE_BYTES]
    body = envelope[start + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, _seal_aad(purpose, user_id, version))
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError("envelope failed authentication") from exc


@dataclass(frozen=True, kw_only=True)
class EnrollmentRecord:
    """What Redis holds for an enrolled user, once opened: one verifier per factor."""

    user_id: str
    verifiers: Mapping[Factor, bytes]
    enrolled_at_s: int

    def __post_init__(self) -> None:
        if not self.verifiers:
            raise LocalProtocolError("a record holds at least one verifier")
        if any(len(v) != VERIFIER_BYTES for v in self.verifiers.values()):
            raise LocalProtocolError("verifiers are 32 bytes")
        if self.enrolled_at_s < 0:
            raise LocalProtocolError("enrolled_at_s is epoch seconds")
        ordered = {f: self.verifiers[f] for f in CATALOGUE if f in self.verifiers}
        object.__setattr__(self, "verifiers", MappingProxyType(ordered))

    @property
    def factors(self) -> frozenset[Factor]:
        """The enrolled factors."""
        return frozenset(self.verifiers)

    def kek_material(self) -> bytes:
        """The PBKDF2 password: every verifier, tagged with its factor, in catalogue order."""
        return b"".join(_RECORD_ENTRY.pack(f.index, v) for f, v in self.verifiers.items())

    def encode(self) -> bytes:
        """Compact binary plaintext (sealed before it is stored)."""
        header = _RECORD_HEADER.pack(_RECORD_FORMAT, self.enrolled_at_s, len(self.verifiers))
        return header + self.kek_material()

    @classmethod
    def decode(cls, user_id: str, data: bytes) -> EnrollmentRecord:
        """Inverse of :meth:`encode`; raises IntegrityError on a malformed plaintext."""
        if len(data) < _RECORD_HEADER.size:
            raise IntegrityError("record too short")
        fmt, enrolled_at_s, count = _RECORD_HEADER.unpack_from(data)
        if fmt != _RECORD_FORMAT or len(data) != _RECORD_HEADER.size + count * _RECORD_ENTRY.size:
            raise IntegrityError("malformed record")
        verifiers: dict[Factor, bytes] = {}
        for i in range(count):
            index, verifier = _RECORD_ENTRY.unpack_from(
                data, _RECORD_HEADER.size + i * _RECORD_ENTRY.size
            )
            if index >= len(CATALOGUE) or CATALOGUE[index] in verifiers:
                raise IntegrityError("malformed record")
            verifiers[CATALOGUE[index]] = verifier
        if not verifiers:
            raise IntegrityError("malformed record")
        return cls(user_id=user_id, verifiers=verifiers, enrolled_at_s=enrolled_at_s)


def seal_record(keyring: MasterKeyring, record: EnrollmentRecord, *, nonce: bytes) -> bytes:
    """Seal an enrollment record for storage in Redis."""
    return seal(
        keyring,
        purpose=PURPOSE_ENROLLMENT,
        user_id=record.user_id,
        plaintext=record.encode(),
        nonce=nonce,
    )


def open_record(keyring: MasterKeyring, *, user_id: str, envelope: bytes) -> EnrollmentRecord:
    """Open a sealed record; raises IntegrityError if it was altered or is not this user's."""
    plaintext = open_sealed(keyring, purpose=PURPOSE_ENROLLMENT, user_id=user_id, envelope=envelope)
    return EnrollmentRecord.decode(user_id, plaintext)


def reseal_record(
    keyring: MasterKeyring, *, user_id: str, envelope: bytes, nonce: bytes
) -> bytes | None:
    """Key rotation's step: the record sealed again under the current key version, or
    ``None`` if it already is. The record's content is unchanged; IntegrityError if it does
    not open (altered, another user's, or sealed under a version no longer configured)."""
    if envelope_key_version(envelope) == keyring.current:
        return None
    record = open_record(keyring, user_id=user_id, envelope=envelope)
    return seal_record(keyring, record, nonce=nonce)


def unconfigured_versions(keyring: MasterKeyring, in_use: Iterable[int]) -> list[int]:
    """Key versions that seal stored records but are not in the keyring: rotation (and every
    request of those users) cannot open them, so it must not start."""
    return sorted(set(in_use) - set(keyring.keys))


def derive_kek(material: bytes, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA256 -> 32-byte key-encryption key. The slow step."""
    if len(salt) != SALT_BYTES:
        raise LocalProtocolError("the PBKDF2 salt is 16 bytes")
    if iterations < MIN_PBKDF2_ITERATIONS:
        raise LocalProtocolError("PBKDF2 iterations must be positive")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=iterations)
    return kdf.derive(material)


def _wrap_aad(user_id: str) -> bytes:
    return b"zeropay/wrap/v1\x00%s" % user_id.encode()


def wrap_data_key(kek: bytes, data_key: bytes, *, user_id: str, nonce: bytes) -> bytes:
    """``nonce ‖ AES-256-GCM(kek, data_key, aad=user)``."""
    if len(data_key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise LocalProtocolError("a data key is 32 bytes and a nonce 12")
    return nonce + AESGCM(kek).encrypt(nonce, data_key, _wrap_aad(user_id))


def unwrap_data_key(kek: bytes, wrapped: bytes, *, user_id: str) -> bytes:
    """Inverse of :func:`wrap_data_key`; raises IntegrityError on any mismatch."""
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(user_id))
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError("wrapped key failed authentication") from exc


def derive_and_wrap(
    material: bytes, salt: bytes, iterations: int, data_key: bytes, user_id: str, nonce: bytes
) -> bytes:
    """Enrollment's slow step, one picklable call for the process pool."""
    return wrap_data_key(
        derive_kek(material, salt, iterations), data_key, user_id=user_id, nonce=nonce
    )


def derive_and_unwrap(
    material: bytes, salt: bytes, iterations: int, wrapped: bytes, user_id: str
) -> bool:
    """Verification's slow step, one picklable call for the process pool.

    Returns whether the data key unwrapped; the key itself never leaves the worker.
    """
    try:
        unwrap_data_key(derive_kek(material, salt, iterations), wrapped, user_id=user_id)
    except IntegrityError:
        return False
    return True
