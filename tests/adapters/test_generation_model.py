"""The generation rule against a model, on every store: reservations, enrollment changes,
conclusions and token checks interleaved at random.

The model knows only how many changes were made: an attempt proves something only if no
change came between its reservation and its conclusion, and a token is valid only while no
change came after it. Each store (memory, Redis, a 3-master Cluster) must agree, step by step.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.adapters.conftest import STATE_BACKENDS, open_state_store
from tests.adapters.helpers import conclude, event, new_session, new_user
from zeropay_proto import (
    DEFAULT_POLICY,
    AccountLocked,
    AttemptReserved,
    NonceClaim,
    VerificationFailed,
    VerificationSucceeded,
    parse_bearer,
)
from zeropay_proto.admission import AdmissionRequest, Limits
from zeropay_proto.audit import AuditAction


@dataclass
class Pending:
    session_id: str
    generation: int
    changes: int  # the model's count of changes when it was reserved


steps = st.lists(
    st.sampled_from(["reserve", "reserve", "update", "passkey", "conclude", "conclude", "check"]),
    min_size=1,
    max_size=20,
)


@pytest.mark.parametrize("state_backend", STATE_BACKENDS, indirect=True)
# The fixture only names the backend; each example opens its own store in the test body (a
# store opened by a fixture would be bound to the first example's loop).
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=steps)
@example(ops=["reserve", "conclude", "reserve", "update", "conclude", "check"])
@example(ops=["reserve", "reserve", "passkey", "conclude", "reserve", "conclude", "check"])
async def test_no_store_lets_a_proof_or_a_token_outlive_a_change(
    state_backend: dict[str, Any], ops: list[str]
) -> None:
    async with open_state_store(state_backend) as store:
        user, now = new_user(), time.time()
        changes = 0
        # Reservations since the last success: the lockout counts each until it succeeds.
        streak = 0
        pending: list[Pending] = []
        tokens: list[tuple[str, int]] = []
        for op in ops:
            if op == "reserve":
                issued = new_session(user, now=now)
                sid = issued.session.session_id
                await store.store_session(issued, 0, event(user), 60_000)
                request = AdmissionRequest(
                    now=now,
                    client_ip="192.0.2.1",
                    user_id=user,
                    nonce=NonceClaim(nonce=secrets.token_hex(8), ttl_ms=60_000),
                    limits=Limits(global_limit=0, per_ip=0, per_user=0, window_ms=60_000),
                )
                _, reserved, _, generation = await store.admit_and_reserve(
                    request, sid, DEFAULT_POLICY, event(user)
                )
                if streak >= DEFAULT_POLICY.lockout_threshold:
                    assert isinstance(reserved, AccountLocked)
                    continue
                assert isinstance(reserved, AttemptReserved)
                streak += 1
                pending.append(Pending(sid, generation, changes))
            elif op == "update":  # an enrollment update: invalidate, then revoke
                await store.invalidate_record(user, 1_000)
                await store.revoke_user_tokens(user, event(user, AuditAction.ENROLLMENT_UPDATED))
                changes += 1
            elif op == "passkey":  # a passkey change caught between its two steps
                await store.invalidate_record(user, 1_000)
                changes += 1
            elif op == "conclude" and pending:
                attempt = pending.pop(0)
                done = await conclude(
                    store,
                    attempt.session_id,
                    user,
                    attempt=1,
                    unwrapped=True,
                    now=now,
                    generation=attempt.generation,
                )
                if attempt.changes == changes:
                    assert isinstance(done, VerificationSucceeded)
                    tokens.append((done.auth_token, changes))
                    streak = 0
                else:
                    assert isinstance(done, VerificationFailed)
            elif op == "check":
                for token, issued_at in tokens:
                    live = await store.token_info(parse_bearer(f"Bearer {token}")) is not None
                    assert live is (issued_at == changes)
