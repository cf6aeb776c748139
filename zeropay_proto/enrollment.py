"""Enrollment: from a validated request to what Redis and PostgreSQL will hold.

:func:`plan_enrollment` computes the verifiers, seals the record (layer 1) and returns the
key-wrapping work (layer 2) as :class:`KeyWrapRequested`, which the driver runs in its process
pool with :func:`zeropay_proto.crypto.derive_and_wrap`; :meth:`EnrollmentPlanned.wrapped_key`
then builds the PostgreSQL row. No step stores anything: the driver does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import LocalProtocolError
from .crypto import (
    DEFAULT_PBKDF2_ITERATIONS,
    KEY_BYTES,
    NONCE_BYTES,
    SALT_BYTES,
    EnrollmentRecord,
    MasterKeyring,
    compute_verifier,
    seal_record,
)
from .requests import EnrollmentRequest

#: CSPRNG bytes one enrollment consumes: data key, salt, record nonce, wrap nonce.
ENROLLMENT_ENTROPY_BYTES = KEY_BYTES + SALT_BYTES + NONCE_BYTES + NONCE_BYTES


@dataclass(frozen=True, kw_only=True)
class KeyWrapRequested:
    """Arguments of :func:`~zeropay_proto.crypto.derive_and_wrap`, for the process pool."""

    material: bytes
    salt: bytes
    iterations: int
    data_key: bytes
    user_id: str
    nonce: bytes

    def arguments(self) -> tuple[bytes, bytes, int, bytes, str, bytes]:
        """Positional arguments in :func:`derive_and_wrap` order."""
        return (self.material, self.salt, self.iterations, self.data_key, self.user_id, self.nonce)


@dataclass(frozen=True, kw_only=True)
class WrappedKey:
    """One ``wrapped_keys`` row."""

    user_id: str
    wrapped: bytes
    salt: bytes
    iterations: int
    key_version: int
    factor_count: int


@dataclass(frozen=True, kw_only=True)
class EnrollmentPlanned:
    """Store ``sealed_record`` in Redis and the wrapped key (after the pool ran
    ``wrap``) in PostgreSQL."""

    record: EnrollmentRecord
    sealed_record: bytes
    key_version: int
    device_id: str
    wrap: KeyWrapRequested

    def wrapped_key(self, wrapped: bytes) -> WrappedKey:
        """The PostgreSQL row, given the pool's result."""
        return WrappedKey(
            user_id=self.record.user_id,
            wrapped=wrapped,
            salt=self.wrap.salt,
            iterations=self.wrap.iterations,
            key_version=self.key_version,
            factor_count=len(self.record.verifiers),
        )


def plan_enrollment(
    request: EnrollmentRequest,
    *,
    keyring: MasterKeyring,
    pepper: bytes,
    now: float,
    entropy: bytes,
    iterations: int = DEFAULT_PBKDF2_ITERATIONS,
) -> EnrollmentPlanned:
    """Everything an enrollment (or a proven update) must store."""
    if len(entropy) != ENROLLMENT_ENTROPY_BYTES:
        raise LocalProtocolError("an enrollment needs 72 bytes of entropy")
    data_key = entropy[:KEY_BYTES]
    salt = entropy[KEY_BYTES : KEY_BYTES + SALT_BYTES]
    record_nonce = entropy[KEY_BYTES + SALT_BYTES : KEY_BYTES + SALT_BYTES + NONCE_BYTES]
    wrap_nonce = entropy[KEY_BYTES + SALT_BYTES + NONCE_BYTES :]
    verifiers = {
        factor: compute_verifier(pepper, request.user_id, factor, digest)
        for factor, digest in request.factors.items()
    }
    record = EnrollmentRecord(user_id=request.user_id, verifiers=verifiers, enrolled_at_s=int(now))
    return EnrollmentPlanned(
        record=record,
        sealed_record=seal_record(keyring, record, nonce=record_nonce),
        key_version=keyring.current,
        device_id=request.device_id,
        wrap=KeyWrapRequested(
            material=record.kek_material(),
            salt=salt,
            iterations=iterations,
            data_key=data_key,
            user_id=request.user_id,
            nonce=wrap_nonce,
        ),
    )
