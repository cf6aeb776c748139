"""One contract, every backend: memory, Redis standalone, a 3-master Redis Cluster (state
ports) and memory, PostgreSQL, PostgreSQL through PgBouncer (durable ports)."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
import trio

from adapters.ports import (
    NOT_ENROLLED,
    CachedEnrollment,
    IdempotencyScope,
    RecordCache,
    StoredEnrollment,
)
from tests.adapters.conftest import (
    DURABLE_BACKENDS,
    STATE_BACKENDS,
    after,
    open_durable_store,
    open_state_store,
)
from tests.adapters.helpers import cached_entry, conclude, event, lock_event, new_session, new_user
from tests.helpers import enroll
from zeropay_proto import (
    DEFAULT_POLICY,
    AccountLocked,
    AttemptReserved,
    ChallengeWindow,
    Factor,
    Lockout,
    NonceAccepted,
    NonceClaim,
    NonceReused,
    RateLimited,
    RequestAdmitted,
    SessionClosed,
    SessionState,
    VerificationFailed,
    VerificationSucceeded,
    make_session_id,
    parse_bearer,
)
from zeropay_proto.admission import AdmissionRequest, Limits
from zeropay_proto.audit import LOCK_END_DETAIL, AuditAction
from zeropay_proto.idempotency import TOKEN_BYTES, Claim, KeptAnswer
from zeropay_proto.merchants import issue_api_key
from zeropay_proto.passkeys import Passkey
from zeropay_proto.webhooks import WebhookEndpoint

state = pytest.mark.parametrize("state_backend", STATE_BACKENDS, indirect=True)
durable = pytest.mark.parametrize("durable_backend", DURABLE_BACKENDS, indirect=True)


def admission_for(user: str, *, nonce: str, per_user: int = 0) -> AdmissionRequest:
    return admission(user=user, nonce=nonce, per_user=per_user)


def admission(
    *,
    user: str | None = None,
    ip: str = "192.0.2.1",
    nonce: str | None = None,
    merchant: str | None = None,
    **limits: int,
) -> AdmissionRequest:
    """A request; the caller is accountable for ``user`` where a per-user limit is given."""
    return AdmissionRequest(
        now=time.time(),
        client_ip=ip,
        user_id=user,
        nonce=None if nonce is None else NonceClaim(nonce=nonce, ttl_ms=60_000),
        limits=Limits(
            window_ms=60_000,
            **{
                "global_limit": 0,
                "per_ip": 0,
                "per_user": 0,
                "shards": 1,
                "global_reserve": 0,
                **limits,
            },
        ),
        merchant_id=merchant,
        charged_user="per_user" in limits,
    )


# ------------------------------------------------------------------------------ admission


@state
async def test_global_and_ip_limits_admit_up_to_the_limit(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        ip = f"192.0.2.{secrets.randbelow(250)}"
        outcomes = [
            await store.admit(admission(ip=ip, global_limit=100, per_ip=3)) for _ in range(4)
        ]
        assert [o.rate_limited for o in outcomes] == [False, False, False, True]
        assert isinstance(outcomes[-1].ip_decision, RateLimited)
        # Refused by the IP limit, the request consumed nothing from the global limit.
        assert outcomes[-1].global_decision is None
        after = await store.admit(admission(ip="203.0.113.9", global_limit=100, per_ip=3))
        assert isinstance(after.global_decision, RequestAdmitted)
        assert after.global_decision.remaining == 100 - 4


@state
async def test_limiters_spend_only_for_the_caller(state_backend: dict[str, Any]) -> None:
    """A request refused by its address's limit spends nothing from the user's bucket; a
    request that only names a user (anonymous) charges nobody's bucket; a merchant's bucket
    for a user is its own; and the global limit never refuses an address within its
    reserve, however full heavy addresses made it."""
    async with open_state_store(state_backend) as store:
        user = new_user()
        ip = f"198.51.100.{secrets.randbelow(250)}"
        for _ in range(3):
            await store.admit(admission(user=user, ip=ip, per_ip=2, per_user=5))
        same = await store.admit(admission(user=user, ip=ip, per_user=5))
        assert isinstance(same.user_decision, RequestAdmitted)
        assert same.user_decision.remaining == 5 - 1 - 2  # the refused third spent nothing
        elsewhere = await store.admit(admission(user=user, ip=f"{ip}1", per_user=5))
        assert isinstance(elsewhere.user_decision, RequestAdmitted)
        assert elsewhere.user_decision.remaining == 4  # another caller's budget is its own
        named = AdmissionRequest(
            now=time.time(),
            client_ip=ip,
            user_id=user,
            nonce=None,
            limits=Limits(global_limit=0, per_ip=0, per_user=1, window_ms=60_000),
        )
        assert (await store.admit(named)).user_decision is None  # anonymous: not charged
        shop = await store.admit(admission(user=user, merchant="shop-a", per_user=5))
        assert isinstance(shop.user_decision, RequestAdmitted)
        assert shop.user_decision.remaining == 4  # shop-a's budget for this user, not the IP's
        heavy, light = f"203.0.113.{secrets.randbelow(250)}", "192.0.2.77"

        def full(ip: str) -> AdmissionRequest:
            return admission(ip=ip, global_limit=2, per_ip=100, global_reserve=1)

        for _ in range(4):
            await store.admit(full(heavy))
        assert (await store.admit(full(heavy))).rate_limited
        assert not (await store.admit(full(light))).rate_limited


@state
async def test_a_merchants_failure_budget_is_reserved_and_refunded(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        merchant, now = f"shop-{secrets.token_hex(3)}", time.time()
        budget = Limits(global_limit=0, per_ip=0, per_user=0, window_ms=60_000, merchant_failures=2)
        first = await store.reserve_merchant_failure(merchant, now, budget)
        second = await store.reserve_merchant_failure(merchant, now, budget)
        assert isinstance(first, RequestAdmitted)
        assert isinstance(second, RequestAdmitted)
        assert isinstance(await store.reserve_merchant_failure(merchant, now, budget), RateLimited)
        opened = await store.admit(admission(merchant=merchant, merchant_failures=2))
        assert isinstance(opened.merchant_failures, RateLimited)  # no new session either
        await store.refund_merchant_failure(merchant, first.state.window_start_ms, budget)
        again = await store.reserve_merchant_failure(merchant, now, budget)
        assert isinstance(again, RequestAdmitted)
        other = await store.reserve_merchant_failure("another-shop", now, budget)
        assert isinstance(other, RequestAdmitted)  # one merchant's failures are its own


@state
async def test_wrong_keys_are_bounded_per_address(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        ip, now = f"192.0.2.{secrets.randbelow(250)}", time.time()
        bound = Limits(global_limit=0, per_ip=0, per_user=0, window_ms=60_000, auth_failures=2)
        counted = [await store.count_auth_failure(ip, now, bound) for _ in range(3)]
        assert [isinstance(c, RequestAdmitted) for c in counted] == [True, True, False]
        assert isinstance(await store.count_auth_failure(f"{ip}0", now, bound), RequestAdmitted)


@state
async def test_user_bucket_limits_per_user(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user, other = new_user(), new_user()
        results = [await store.admit(admission(user=user, per_user=2)) for _ in range(3)]
        assert [r.rate_limited for r in results] == [False, False, True]
        assert isinstance(results[-1].user_decision, RateLimited)
        assert results[-1].user_decision.retry_after_ms > 0
        assert not (await store.admit(admission(user=other, per_user=2))).rate_limited
        off = await store.admit(admission(user=user))
        assert off.user_decision is None
        assert not off.rate_limited


@state
async def test_a_nonce_is_accepted_once_for_its_user(state_backend: dict[str, Any]) -> None:
    """A replay is the same request again, naming the same user: a nonce is single-use for
    the user a request names (kept in the user's slot, beside the session it reaches), and
    across the requests that name no user."""
    async with open_state_store(state_backend) as store:
        user, other = new_user(), new_user()
        nonce = str(uuid.uuid4())
        first = await store.admit(admission(user=user, nonce=nonce, per_user=5))
        second = await store.admit(admission(user=user, nonce=nonce, per_user=5))
        assert first.nonce == NonceAccepted()
        assert second.nonce == NonceReused()
        # The bucket decides independently of the nonce.
        assert isinstance(second.user_decision, RequestAdmitted)
        assert second.user_decision.remaining == 3
        assert (await store.admit(admission(user=other, nonce=nonce))).nonce == NonceAccepted()
        anonymous = await store.admit(admission(nonce=nonce))
        assert anonymous.nonce == NonceAccepted()
        assert (await store.admit(admission(nonce=nonce))).nonce == NonceReused()


# ------------------------------------------------------------------------------ combined steps


@state
async def test_admit_and_load_equals_admit_then_load(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        issued = new_session(user)
        await store.store_session(issued, 0, event(user), 60_000)
        entry = cached_entry(user)
        await store.cache_record(user, entry, 60_000)
        admission, snapshot = await store.admit_and_load(
            admission_for(user, nonce=str(uuid.uuid4()), per_user=2)
        )
        assert not admission.refused
        assert isinstance(admission.user_decision, RequestAdmitted)
        assert (snapshot.cached, snapshot.window) == (entry, issued.window)


@state
async def test_a_refused_request_never_consumes_an_attempt(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        issued = new_session(user)
        sid = issued.session.session_id
        await store.store_session(issued, 0, event(user), 60_000)
        nonce = str(uuid.uuid4())
        first, reserved, _, _ = await store.admit_and_reserve(
            admission_for(user, nonce=nonce, per_user=1), sid, DEFAULT_POLICY, event(user)
        )
        assert not first.refused
        assert isinstance(reserved, AttemptReserved)
        replayed, none, _, _ = await store.admit_and_reserve(
            admission_for(user, nonce=nonce, per_user=100), sid, DEFAULT_POLICY, event(user)
        )
        assert (replayed.refused, none) == (True, None)
        limited, none, _, _ = await store.admit_and_reserve(
            admission_for(user, nonce=str(uuid.uuid4()), per_user=1),
            sid,
            DEFAULT_POLICY,
            event(user),
        )
        assert (limited.rate_limited, none) == (True, None)
        stored = await store.load_session(sid, user)
        assert stored is not None
        assert stored.attempts_used == 1  # only the admitted request counted
        missing, nothing, _, _ = await store.admit_and_reserve(
            admission_for(user, nonce=str(uuid.uuid4())),
            make_session_id(user, secrets.token_bytes(16)),
            DEFAULT_POLICY,
            event(user),
        )
        assert (missing.refused, nothing) == (False, None)


@state
async def test_admitted_reservations_lock_the_account(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        outcomes = []
        for _ in range(2):
            issued = new_session(user)
            await store.store_session(issued, 0, event(user), 60_000)
            for _ in range(3):
                _, reserved, _, _ = await store.admit_and_reserve(
                    admission_for(user, nonce=str(uuid.uuid4()), per_user=100),
                    issued.session.session_id,
                    DEFAULT_POLICY,
                    event(user),
                )
                outcomes.append(reserved)
        assert [type(o).__name__ for o in outcomes] == ["AttemptReserved"] * 5 + ["AccountLocked"]
        fifth = outcomes[4]
        assert isinstance(fifth, AttemptReserved)
        assert fifth.lockout.failures == 5
        assert fifth.lockout.locked_until_ms > fifth.lockout.updated_ms


# ------------------------------------------------------------------------------ sessions


@state
async def test_session_round_trips_with_its_window(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        issued = new_session(user)
        await store.store_session(issued, 0, event(user), 60_000)
        loaded = await store.load_session(issued.session.session_id, user)
        assert loaded == issued.session
        # Another user never reaches it, even one whose keys share the slot group.
        for _ in range(200):
            assert await store.load_session(issued.session.session_id, new_user()) is None
        snapshot = await store.load_for_initiate(user)
        assert snapshot.window == issued.window
        assert isinstance(snapshot.window, ChallengeWindow)
        assert snapshot.cached is None


@state
async def test_record_cache_distinguishes_absent_from_uncached(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user, unknown = new_user(), new_user()
        entry = cached_entry(user)
        await store.cache_record(user, entry, 60_000)
        await store.cache_record(unknown, NOT_ENROLLED, 60_000)
        got = await store.load_for_initiate(user)
        assert got.cached == entry
        assert got.cached is not None
        assert got.cached.usable_by_verify
        absent = await store.load_for_initiate(unknown)
        assert absent.cached == NOT_ENROLLED
        await store.invalidate_record(unknown, 60_000)  # the user enrolls: the marker must go
        gone = await store.load_for_initiate(unknown)
        assert gone.cached is None


@state
async def test_a_held_record_is_not_cached_again_until_the_hold_ends(
    state_backend: dict[str, Any],
) -> None:
    """An enrollment change holds the cache: a request that read the old row a moment
    before cannot cache it (verify trusts the cache), whichever way it tries."""
    async with open_state_store(state_backend) as store:
        user = new_user()
        await store.cache_record(user, cached_entry(user), 60_000)
        await store.invalidate_record(user, 300)
        stale = cached_entry(user)
        await store.cache_record(user, stale, 60_000)
        await store.store_session(
            new_session(user), 0, event(user), 60_000,
            record_cache=RecordCache(entry=stale, ttl_ms=60_000),
        )  # fmt: skip
        assert (await store.load_for_initiate(user)).cached is None

        async def cached_again() -> bool:
            await store.cache_record(user, stale, 60_000)
            cached: CachedEnrollment | None = (await store.load_for_initiate(user)).cached
            return cached == stale

        await after(store, 300, cached_again)  # the hold ends by itself


@state
async def test_verify_reads_the_record_cache_in_its_reservation_step(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        issued = new_session(user)
        sid = issued.session.session_id
        await store.store_session(issued, 0, event(user), 60_000)
        _, reserved, cached, _ = await store.admit_and_reserve(
            admission_for(user, nonce=str(uuid.uuid4())), sid, DEFAULT_POLICY, event(user)
        )
        assert isinstance(reserved, AttemptReserved)
        assert cached is None
        entry = cached_entry(user)
        await store.cache_record(user, entry, 60_000)
        nonce = str(uuid.uuid4())
        _, reserved, cached, _ = await store.admit_and_reserve(
            admission_for(user, nonce=nonce), sid, DEFAULT_POLICY, event(user)
        )
        assert isinstance(reserved, AttemptReserved)
        assert cached == entry
        refused, nothing, none, _ = await store.admit_and_reserve(  # a replayed nonce
            admission_for(user, nonce=nonce), sid, DEFAULT_POLICY, event(user)
        )
        assert refused.refused
        assert (nothing, none) == (None, None)


@state
async def test_reservations_persist_and_lock_the_account_across_sessions(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        reserved = []
        for _ in range(2):
            issued = new_session(user, now=now)
            await store.store_session(issued, 0, event(user), 60_000)
            sid = issued.session.session_id
            for _ in range(3):
                reserved.append(
                    await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, lock_event(user))
                )
        kinds = [type(r).__name__ for r in reserved]
        assert kinds == ["AttemptReserved"] * 3 + ["AttemptReserved"] * 2 + ["AccountLocked"]
        fifth = reserved[4]
        assert isinstance(fifth, AttemptReserved)
        assert fifth.lockout.failures == 5
        assert fifth.lockout.locked_until_ms == fifth.lockout.updated_ms + 15 * 60 * 1000
        locked = reserved[5]
        assert isinstance(locked, AccountLocked)
        stored = await store.load_session(issued.session.session_id, user)
        assert stored is not None
        assert stored.attempts_used == 2
        unknown = make_session_id(user, secrets.token_bytes(16))
        assert await store.reserve_attempt(unknown, user, now, DEFAULT_POLICY, event(user)) is None
        events = [e.event for e in await store.read_batch("c", 100, 60_000)]
        actions = [e.action for e in events]
        assert actions.count(AuditAction.ACCOUNT_LOCKED) == 1
        assert actions.count(AuditAction.SESSION_INITIATED) == 2
        # The lock event carries the lock's end, which only the reservation decided.
        (lock,) = (e for e in events if e.action is AuditAction.ACCOUNT_LOCKED)
        assert dict(lock.details) == {"test": True, LOCK_END_DETAIL: fifth.lockout.locked_until_ms}


@state
async def test_a_lock_event_without_details_gains_just_the_lock_end(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        bare = replace(lock_event(user), details={})
        steps: list[object] = []
        for _ in range(2):
            issued = new_session(user, now=now)
            await store.store_session(issued, 0, event(user), 60_000)
            for _ in range(3 if not steps else 2):
                sid = issued.session.session_id
                steps.append(await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, bare))
        last = steps[-1]
        assert isinstance(last, AttemptReserved)
        assert last.locked_account
        events = [e.event for e in await store.read_batch("c", 100, 60_000)]
        (lock,) = (e for e in events if e.action is AuditAction.ACCOUNT_LOCKED)
        assert dict(lock.details) == {LOCK_END_DETAIL: last.lockout.locked_until_ms}


@state
async def test_released_reservations_lock_nobody_and_give_the_attempt_back(
    state_backend: dict[str, Any],
) -> None:
    """An outage is never a failed attempt (the Lua script is checked against the core on
    every call: a disagreement raises)."""
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        issued = new_session(user, now=now)
        await store.store_session(issued, 0, event(user), 60_000)
        sid = issued.session.session_id
        for _ in range(6):  # far more outages than the lockout threshold
            step = await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, lock_event(user))
            assert isinstance(step, AttemptReserved)
            assert step.attempt == 1
            released = await store.release_attempt(
                sid, user, attempt=step.attempt, now=now, policy=DEFAULT_POLICY
            )
            assert released is not None
            assert released.session == issued.session
            assert released.lockout.failures == 0
        # Five reserved at once, the fifth locks; releasing one lifts the lock.
        sessions = [new_session(user, now=now) for _ in range(2)]
        steps = []
        for issued in sessions:
            await store.store_session(issued, 0, event(user), 60_000)
        for i in range(5):
            sid = sessions[i % 2].session.session_id
            steps.append(
                await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, lock_event(user))
            )
        last = steps[-1]
        assert isinstance(last, AttemptReserved)
        assert last.lockout.is_locked(int(now * 1000))
        sid = sessions[0].session.session_id
        released = await store.release_attempt(
            sid, user, attempt=last.attempt, now=now, policy=DEFAULT_POLICY
        )
        assert released is not None
        assert released.lockout == Lockout(
            failures=4, level=0, locked_until_ms=0, updated_ms=last.lockout.updated_ms
        )
        again = await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, lock_event(user))
        assert isinstance(again, AttemptReserved)
        other = make_session_id(new_user(), secrets.token_bytes(16))
        assert (
            await store.release_attempt(other, user, attempt=1, now=now, policy=DEFAULT_POLICY)
            is None
        )


@state
async def test_success_mints_a_token_clears_the_lockout_and_closes_the_session(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        issued = new_session(user, now=now)
        sid = issued.session.session_id
        await store.store_session(issued, 0, event(user), 60_000)
        first = await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, event(user))
        second = await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, event(user))
        assert isinstance(first, AttemptReserved)
        assert isinstance(second, AttemptReserved)
        done = await conclude(store, sid, user, attempt=1, unwrapped=True, now=now)
        assert isinstance(done, VerificationSucceeded)
        again = await conclude(store, sid, user, attempt=2, unwrapped=True, now=now)
        assert again == SessionClosed(state=SessionState.VERIFIED)
        stored = await store.load_session(sid, user)
        assert stored is not None
        assert stored.state is SessionState.VERIFIED
        token = parse_bearer(f"Bearer {done.auth_token}")
        info = await store.token_info(token)
        assert info is not None
        assert (info.user_id, info.session_id) == (user, sid)
        assert info.expires_at_ms == done.token_expires_at_ms
        # The lockout was cleared: a new reservation counts from one.
        fresh = new_session(user, now=now)
        await store.store_session(fresh, 0, event(user), 60_000)
        next_attempt = await store.reserve_attempt(
            fresh.session.session_id, user, now, DEFAULT_POLICY, event(user)
        )
        assert isinstance(next_attempt, AttemptReserved)
        assert next_attempt.lockout.failures == 1
        actions = [e.event.action for e in await store.read_batch("c", 100, 60_000)]
        assert actions.count(AuditAction.VERIFICATION_SUCCEEDED) == 1


@state
async def test_a_session_keeps_the_passkeys_it_allows_through_every_step(
    state_backend: dict[str, Any],
) -> None:
    """The scripts rewrite a session's head only: what follows it (the payment and the
    passkeys the session allows) survives the reservation and the conclusion."""
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        ids = (b"\x01" * 16, b"\x02" * 64)
        issued = new_session(user, now=now, passkey_ids=ids)
        assert issued.session.passkey_ids == ids
        sid = issued.session.session_id
        await store.store_session(issued, 0, event(user), 60_000)
        assert await store.load_session(sid, user) == issued.session
        reserved = await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, event(user))
        assert isinstance(reserved, AttemptReserved)
        assert reserved.session.passkey_ids == ids
        done = await conclude(store, sid, user, attempt=1, unwrapped=True, now=now)
        assert isinstance(done, VerificationSucceeded)
        assert done.receipt.sca == ("knowledge", "possession")
        stored = await store.load_session(sid, user)
        assert stored is not None
        assert (stored.state, stored.passkey_ids) == (SessionState.VERIFIED, ids)


@state
async def test_a_record_cache_entry_keeps_the_users_passkeys(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        entry = cached_entry(user, passkeys=(passkey(b"\x07" * 32, 9), passkey(b"\x08", 0)))
        await store.cache_record(user, entry, 60_000)
        assert (await store.load_for_initiate(user)).cached == entry


@state
async def test_three_failures_fail_the_session(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        issued = new_session(user, now=now, enrolled=False)
        sid = issued.session.session_id
        await store.store_session(issued, 0, event(user), 60_000)
        outcomes = []
        for attempt in (1, 2, 3):
            await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, event(user))
            outcomes.append(
                await conclude(store, sid, user, attempt=attempt, unwrapped=False, now=now)
            )
        assert [o.attempts_remaining for o in outcomes if isinstance(o, VerificationFailed)] == [
            2,
            1,
            0,
        ]
        stored = await store.load_session(sid, user)
        assert stored is not None
        assert stored.state is SessionState.FAILED
        assert stored.decoy
        closed = await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, event(user))
        assert closed == SessionClosed(state=SessionState.FAILED)


async def mint_token(store: Any, user: str, now: float) -> str:
    """A session for ``user``, verified: its auth token."""
    issued = new_session(user, now=now)
    sid = issued.session.session_id
    await store.store_session(issued, 0, event(user), 60_000)
    await store.reserve_attempt(sid, user, now, DEFAULT_POLICY, event(user))
    done = await conclude(store, sid, user, attempt=1, unwrapped=True, now=now)
    assert isinstance(done, VerificationSucceeded)
    return done.auth_token


@state
async def test_revoke_and_forget_remove_tokens(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        tokens = [parse_bearer(f"Bearer {await mint_token(store, user, now)}") for _ in range(2)]
        info = await store.token_info(tokens[0])
        assert info is not None
        assert (info.issued_at_ms, info.factors_proven) == (int(now * 1000), 3)  # what it proved
        assert await store.revoke_token(tokens[0], event(user, AuditAction.TOKEN_REVOKED))
        assert not await store.revoke_token(tokens[0], event(user, AuditAction.TOKEN_REVOKED))
        assert await store.token_info(tokens[0]) is None
        assert await store.token_info(tokens[1]) is not None
        await store.cache_record(user, cached_entry(user), 60_000)
        await store.forget_user(user, event(user, AuditAction.ENROLLMENT_DELETED))
        assert await store.token_info(tokens[1]) is None
        snapshot = await store.load_for_initiate(user)
        assert (snapshot.cached, snapshot.window) == (None, None)


@state
async def test_no_token_outlives_the_generation_it_was_issued_under(
    state_backend: dict[str, Any],
) -> None:
    """Each change of an enrollment or its passkeys moves the user's generation on (before the
    change: invalidate_record; after it: revoke_user_tokens; an erasure: forget_user). A proof
    reserved under an older generation concludes as a failure, and a token issued under one
    is no longer valid, even if nothing deleted it."""
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()

        async def reserved() -> tuple[str, int]:
            issued = new_session(user, now=now)
            sid = issued.session.session_id
            await store.store_session(issued, 0, event(user), 60_000)
            _, attempt, _, generation = await store.admit_and_reserve(
                admission_for(user, nonce=str(uuid.uuid4())), sid, DEFAULT_POLICY, event(user)
            )
            assert isinstance(attempt, AttemptReserved)
            return sid, generation

        sid, before = await reserved()
        await store.invalidate_record(user, 1_000)  # an update begins while it is in flight
        raced = await conclude(
            store, sid, user, attempt=1, unwrapped=True, now=now, generation=before
        )
        assert isinstance(raced, VerificationFailed)
        sid, during = await reserved()
        assert during > before
        done = await conclude(
            store, sid, user, attempt=1, unwrapped=True, now=now, generation=during
        )
        assert isinstance(done, VerificationSucceeded)
        token = parse_bearer(f"Bearer {done.auth_token}")
        info = await store.token_info(token)
        assert info is not None
        assert info.generation == during
        await store.revoke_user_tokens(user, event(user, AuditAction.ENROLLMENT_UPDATED))
        assert await store.token_info(token) is None
        sid, after = await reserved()
        assert after > during
        done = await conclude(
            store, sid, user, attempt=1, unwrapped=True, now=now, generation=after
        )
        assert isinstance(done, VerificationSucceeded)
        token = parse_bearer(f"Bearer {done.auth_token}")
        await store.invalidate_record(user, 1_000)  # a passkey change: no revocation yet
        assert await store.token_info(token) is None  # the generation alone refuses it
        sid, latest = await reserved()
        await store.forget_user(user, event(user, AuditAction.ENROLLMENT_DELETED))
        gone = await conclude(
            store, sid, user, attempt=1, unwrapped=True, now=now, generation=latest
        )
        assert isinstance(gone, VerificationFailed)


@state
async def test_an_enrollment_change_revokes_every_token_of_its_user(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user, other = new_user(), new_user()
        now = time.time()
        tokens = {await mint_token(store, who, now): who for who in (user, user, other)}
        updated = event(user, AuditAction.ENROLLMENT_UPDATED)
        assert await store.revoke_user_tokens(user, updated) == 2
        for token, who in tokens.items():
            live = await store.token_info(parse_bearer(f"Bearer {token}")) is not None
            assert live is (who == other)
        assert await store.revoke_user_tokens(user, updated) == 0
        actions = [e.event.action for e in await store.read_batch("c", 100, 60_000)]
        assert actions.count(AuditAction.ENROLLMENT_UPDATED) == 2


@state
async def test_a_passkey_challenge_is_taken_once_and_only_as_it_was_read(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        assert await store.load_passkey_challenge(user) is None
        assert not await store.take_passkey_challenge(user, b"first")
        await store.store_passkey_challenge(user, b"first", 60_000)
        await store.store_passkey_challenge(user, b"second", 60_000)  # replaces the first
        assert await store.load_passkey_challenge(user) == b"second"
        assert await store.load_passkey_challenge(user) == b"second"  # reading spends nothing
        assert not await store.take_passkey_challenge(user, b"first")  # replaced: not taken
        assert await store.take_passkey_challenge(user, b"second")
        assert not await store.take_passkey_challenge(user, b"second")  # once
        assert await store.load_passkey_challenge(user) is None
        await store.store_passkey_challenge(user, b"grant", 60_000, enrollment=True)
        assert await store.load_passkey_challenge(user) is None  # kept apart
        assert await store.take_passkey_challenge(user, b"grant", enrollment=True)


@state
async def test_psp_sessions_are_shared_and_expire(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        await store.store_psp_session("psp_1", {"status": "created", "amount": "12.50"}, 60_000)
        assert await store.load_psp_session("psp_1") == {"status": "created", "amount": "12.50"}
        assert await store.load_psp_session("psp_unknown") is None
        await store.store_psp_session("psp_short", {"status": "created"}, 50)

        async def expired() -> bool:
            return await store.load_psp_session("psp_short") is None

        await after(store, 50, expired)


# ------------------------------------------------------------------------------ audit stream


@state
async def test_stream_delivers_acknowledges_and_reclaims(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        users = [new_user() for _ in range(5)]
        for user in users:
            await store.append(event(user))
        assert await store.backlog() == 5
        taken = await store.read_batch("alive", 10, 60_000)
        assert sorted(e.event.user_id or "" for e in taken) == sorted(users)
        # Another consumer sees nothing new, and reclaims only once entries are idle enough.
        assert await store.read_batch("other", 10, 60_000) == []
        reclaimed = await store.read_batch("other", 10, 0)
        assert sorted(e.event.event_id for e in reclaimed) == sorted(
            e.event.event_id for e in taken
        )
        await store.acknowledge(reclaimed)
        assert await store.backlog() == 0
        assert await store.read_batch("alive", 10, 0) == []


# ------------------------------------------------------------------------------ durable


def stored_enrollment(user: str, device: str = "phone-1") -> StoredEnrollment:
    plan, wrapped = enroll(user=user, factors=(Factor.PIN, Factor.NFC, Factor.FACE))
    return StoredEnrollment(
        wrapped_key=plan.wrapped_key(wrapped),
        sealed_record=plan.sealed_record,
        device_id=device,
        created_at_ms=1_800_000_000_000,
        updated_at_ms=1_800_000_000_000,
    )


@durable
async def test_enrollment_insert_is_exclusive_and_round_trips(
    durable_backend: dict[str, Any],
) -> None:
    async with open_durable_store(durable_backend) as store:
        user = new_user()
        row = stored_enrollment(user)
        assert await store.insert_enrollment(row)
        assert not await store.insert_enrollment(stored_enrollment(user, "other"))
        assert await store.load_enrollment(user) == row
        assert await store.export_enrollment(user) == row
        assert await store.load_enrollment(new_user()) is None


@durable
async def test_enrollment_round_trips_any_device_id_the_parser_accepts(
    durable_backend: dict[str, Any],
) -> None:
    async with open_durable_store(durable_backend) as store:
        user = new_user()
        row = stored_enrollment(user, "a,\"b\\c'd;e")
        assert await store.insert_enrollment(row)
        assert await store.load_enrollment(user) == row


@durable
async def test_enrollment_replace_and_delete(durable_backend: dict[str, Any]) -> None:
    async with open_durable_store(durable_backend) as store:
        user = new_user()
        assert not await store.replace_enrollment(stored_enrollment(user))
        await store.insert_enrollment(stored_enrollment(user))
        newer = stored_enrollment(user, "phone-2")
        newer = StoredEnrollment(
            wrapped_key=newer.wrapped_key,
            sealed_record=newer.sealed_record,
            device_id="phone-2",
            created_at_ms=1_900_000_000_000,
            updated_at_ms=1_900_000_000_000,
        )
        assert await store.replace_enrollment(newer)
        loaded = await store.load_enrollment(user)
        assert loaded is not None
        assert loaded.device_id == "phone-2"
        assert loaded.created_at_ms == 1_800_000_000_000  # creation time is kept
        assert loaded.updated_at_ms == 1_900_000_000_000
        assert await store.delete_enrollment(user)
        assert not await store.delete_enrollment(user)
        assert await store.load_enrollment(user) is None


def passkey(credential: bytes, count: int = 0) -> Passkey:
    return Passkey(
        credential_id=credential,
        public_key=b"cose:" + credential,
        sign_count=count,
        created_at_ms=1_800_000_000_000 + len(credential),
    )


@durable
async def test_passkeys_belong_to_an_enrolled_user_up_to_the_limit(
    durable_backend: dict[str, Any],
) -> None:
    async with open_durable_store(durable_backend) as store:
        user, other = new_user(), new_user()
        a, bb, ccc = (uuid.uuid4().bytes + bytes(n) for n in range(3))
        assert not await store.add_passkey(user, passkey(a), 2)  # not enrolled
        await store.insert_enrollment(stored_enrollment(user))
        await store.insert_enrollment(stored_enrollment(other))
        assert await store.add_passkey(user, passkey(a), 2)
        assert not await store.add_passkey(other, passkey(a), 2)  # the credential is known
        assert await store.add_passkey(user, passkey(bb), 2)
        assert not await store.add_passkey(user, passkey(ccc), 2)  # the limit
        assert await store.passkeys(user) == [passkey(a), passkey(bb)]
        assert await store.passkeys(other) == []
        assert not await store.delete_passkey(other, a)
        loaded = await store.load_enrollment(user)  # the record cache's source
        assert loaded is not None
        assert loaded.passkeys == (passkey(a), passkey(bb))
        assert await store.delete_passkey(user, a)
        assert await store.passkeys(user) == [passkey(bb)]
        assert await store.delete_enrollment(user)  # its passkeys go with it
        assert await store.passkeys(user) == []


@durable
async def test_a_sign_count_is_stored_only_if_it_rises(durable_backend: dict[str, Any]) -> None:
    async with open_durable_store(durable_backend) as store:
        user = new_user()
        # Credential ids are unique across users (and the backends share one database).
        counted, uncounted = uuid.uuid4().bytes, uuid.uuid4().bytes
        await store.insert_enrollment(stored_enrollment(user))
        assert await store.add_passkey(user, passkey(counted, 5), 10)
        assert await store.add_passkey(user, passkey(uncounted), 10)
        assert await store.record_sign_count(user, counted, 6)
        assert not await store.record_sign_count(user, counted, 6)  # a concurrent twin
        assert not await store.record_sign_count(user, counted, 3)
        assert await store.record_sign_count(user, uncounted, 0)  # no counter: stays 0
        assert not await store.record_sign_count(user, uuid.uuid4().bytes, 9)
        counts = {p.credential_id: p.sign_count for p in await store.passkeys(user)}
        assert counts == {counted: 6, uncounted: 0}


@durable
async def test_audit_writes_are_idempotent(durable_backend: dict[str, Any]) -> None:
    async with open_durable_store(durable_backend) as store:
        user = new_user()
        events = [event(user, AuditAction.ENROLLED), event(user, AuditAction.SESSION_INITIATED)]
        assert await store.write_events(events) == 2
        assert await store.write_events(events) == 0
        assert await store.write_events([]) == 0
        trail = await store.user_trail(user, 10)
        assert sorted(e.event_id for e in trail) == sorted(e.event_id for e in events)
        assert await store.user_trail(new_user(), 10) == []


def test_lockout_default_is_never_failed() -> None:
    assert Lockout().failures == 0


@durable
async def test_merchant_keys_are_added_listed_and_revoked(durable_backend: dict[str, Any]) -> None:
    async with open_durable_store(durable_backend) as store:
        merchant = f"shop-{uuid.uuid4().hex[:8]}"
        credentials = [
            issue_api_key(merchant, entropy=secrets.token_bytes(38), now_ms=1_000 + i)[1]
            for i in range(2)
        ]
        for credential in credentials:
            await store.add_merchant_key(credential)
        live = [c for c in await store.merchant_keys() if c.merchant_id == merchant]
        assert [c.key_id for c in live] == [c.key_id for c in credentials]
        assert [c.key_hash for c in live] == [c.key_hash for c in credentials]
        assert await store.revoke_merchant_key(credentials[0].key_id, 5_000)
        assert not await store.revoke_merchant_key(credentials[0].key_id, 6_000)
        assert not await store.revoke_merchant_key("000000000000", 6_000)
        live = [c for c in await store.merchant_keys() if c.merchant_id == merchant]
        assert [c.key_id for c in live] == [credentials[1].key_id]
        every = [
            c for c in await store.merchant_keys(include_revoked=True) if c.merchant_id == merchant
        ]
        assert [c.revoked_at_ms for c in every] == [5_000, None]


@durable
async def test_a_merchant_is_named_and_renamed(durable_backend: dict[str, Any]) -> None:
    async with open_durable_store(durable_backend) as store:
        merchant = f"shop-{uuid.uuid4().hex[:8]}"
        assert merchant not in await store.merchant_names()
        await store.name_merchant(merchant, "Café Zürich")
        assert (await store.merchant_names())[merchant] == "Café Zürich"
        await store.name_merchant(merchant, "Café Zürich & Co")
        assert (await store.merchant_names())[merchant] == "Café Zürich & Co"


@state
async def test_an_enrollment_grant_is_spent_once(state_backend: dict[str, Any]) -> None:
    async with open_state_store(state_backend) as store:
        user, grant = new_user(), secrets.token_hex(16)
        until = int(time.time() * 1000) + 60_000
        assert await store.spend_enrollment_grant(user, grant, until)
        assert not await store.spend_enrollment_grant(user, grant, until)
        assert await store.spend_enrollment_grant(user, secrets.token_hex(16), until)
        assert await store.spend_enrollment_grant(new_user(), grant, until)


@durable
async def test_webhook_endpoints_are_added_listed_disabled_and_rotated(
    durable_backend: dict[str, Any],
) -> None:
    async with open_durable_store(durable_backend) as store:
        merchant = f"shop-{uuid.uuid4().hex[:8]}"
        endpoints = [
            WebhookEndpoint(
                endpoint_id=str(uuid.uuid4()),
                merchant_id=merchant,
                url=f"https://hooks.example/{n}",
                events=frozenset({"session.verified", "account.locked"}),
                created_at_ms=1_000 + n,
            )
            for n in range(2)
        ]
        for n, endpoint in enumerate(endpoints):
            await store.add_webhook_endpoint(endpoint, b"sealed-%d" % n)
        listed = await store.webhook_endpoints(merchant)
        assert [s.endpoint for s in listed] == endpoints
        assert [s.sealed_secrets for s in listed] == [(b"sealed-0",), (b"sealed-1",)]
        assert await store.rotate_webhook_secret(endpoints[0].endpoint_id, b"newer", 9_000)
        rotated = (await store.webhook_endpoints(merchant))[0]
        assert rotated.sealed_secrets == (b"newer", b"sealed-0")
        assert rotated.endpoint.previous_secret_until_ms == 9_000
        assert await store.disable_webhook_endpoint(endpoints[1].endpoint_id)
        assert not await store.disable_webhook_endpoint(endpoints[1].endpoint_id)
        assert not (await store.webhook_endpoints(merchant))[1].endpoint.enabled
        missing = str(uuid.uuid4())
        assert not await store.rotate_webhook_secret(missing, b"x", 1)
        assert not await store.disable_webhook_endpoint(missing)
        others = await store.webhook_endpoints(f"{merchant}-other")
        assert others == []


# ------------------------------------------------------------------------------ idempotency keys


def _claim(label: str, fingerprint: bytes = b"f" * 32) -> Claim:
    return Claim(token=label.encode().ljust(TOKEN_BYTES, b"."), fingerprint=fingerprint)


@state
async def test_concurrent_claims_of_one_key_grant_exactly_one(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        scope = IdempotencyScope("merchant", "shop-1")
        granted: list[str] = []

        async def claim(label: str) -> None:
            if await store.claim_idempotency(scope, "k" * 64, _claim(label), 60_000) is None:
                granted.append(label)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(claim, f"req-{n}")
        assert len(granted) == 1
        held = await store.claim_idempotency(scope, "k" * 64, _claim("late"), 60_000)
        assert held == _claim(granted[0])  # the winner's claim, for the caller to decide


@state
async def test_a_claim_is_settled_only_by_its_owner_and_its_answer_kept(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        scope, key = IdempotencyScope("user", new_user()), "a" * 64
        mine = _claim("mine")
        answer = KeptAnswer(fingerprint=mine.fingerprint, sealed=b"\x01sealed answer")
        assert await store.claim_idempotency(scope, key, mine, 60_000) is None
        assert not await store.settle_idempotency(scope, key, _claim("other"), answer, 60_000)
        assert await store.settle_idempotency(scope, key, mine, answer, 60_000)
        assert await store.claim_idempotency(scope, key, _claim("retry"), 60_000) == answer
        assert not await store.settle_idempotency(scope, key, mine, None, 60_000)  # settled
        other_scope = IdempotencyScope("merchant", "shop-2")  # scopes never share a key
        assert await store.claim_idempotency(other_scope, key, _claim("x"), 60_000) is None


@state
async def test_a_released_claim_frees_the_key_and_a_lapsed_one_expires(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        scope = IdempotencyScope("merchant", "shop-1")
        first, key = _claim("first"), new_user()
        assert await store.claim_idempotency(scope, key, first, 60_000) is None
        assert await store.settle_idempotency(scope, key, first, None, 0)  # a 503: released
        assert await store.claim_idempotency(scope, key, _claim("again"), 50) is None

        async def lapsed() -> bool:  # the instance died: the lease runs out
            return await store.claim_idempotency(scope, key, _claim("next"), 60_000) is None

        await after(store, 50, lapsed)
        kept = KeptAnswer(fingerprint=b"f" * 32, sealed=b"\x01sealed")
        assert await store.settle_idempotency(scope, key, _claim("next"), kept, 50)

        async def forgotten() -> bool:  # a kept answer lives its time, then goes
            return await store.claim_idempotency(scope, key, _claim("last"), 60_000) is None

        await after(store, 50, forgotten)
