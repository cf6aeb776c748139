"""Enrollment planning: verifiers, the sealed record and the key wrap."""

from __future__ import annotations

import pytest

from tests.helpers import ENROLLED, KEYRING, PEPPER, T0, USER, digest_for, enroll
from zeropay_proto import (
    EnrollmentRequest,
    LocalProtocolError,
    derive_and_unwrap,
    open_record,
    plan_enrollment,
)
from zeropay_proto.crypto import compute_verifier


def test_plan_stores_verifiers_never_digests() -> None:
    plan, _wrapped = enroll()
    record = open_record(KEYRING, user_id=USER, envelope=plan.sealed_record)
    assert record == plan.record
    assert record.enrolled_at_s == int(T0)
    for factor in ENROLLED:
        assert record.verifiers[factor] == compute_verifier(
            PEPPER, USER, factor, digest_for(factor)
        )
        assert digest_for(factor) not in plan.sealed_record
        assert digest_for(factor) not in record.kek_material()


def test_wrapped_key_row_unwraps_with_the_record_material() -> None:
    plan, wrapped = enroll()
    row = plan.wrapped_key(wrapped)
    assert (row.user_id, row.key_version, row.factor_count, row.iterations) == (USER, 1, 5, 10)
    assert len(row.salt) == 16
    assert derive_and_unwrap(
        plan.record.kek_material(), row.salt, row.iterations, row.wrapped, USER
    )
    assert plan.device_id == "device-1"


def test_plan_needs_exactly_72_bytes_of_entropy() -> None:
    request = EnrollmentRequest(user_id=USER, factors={}, device_id="d")
    with pytest.raises(LocalProtocolError):
        plan_enrollment(request, keyring=KEYRING, pepper=PEPPER, now=T0, entropy=b"x" * 71)
