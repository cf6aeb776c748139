"""The Lua scripts against the core's reference decisions, step by step (real Redis).

Hypothesis generates request sequences and clock steps; at every step the script's decision
must equal the core's, and so must the state the script left in Redis (read back raw). Each
example gets a fresh key prefix. Virtual time starts a day ahead of the real clock, so no TTL
the scripts set (from virtual time) can fire during the test; the core's rules never depend on
a key having expired (an expired key and a stale one decide alike).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import redis_scripts as scripts
from adapters.redis_keys import KeySpace, decode_lockout, decode_session
from adapters.redis_scripts import ScriptDisagreement
from adapters.redis_store import RedisStore
from tests.adapters.helpers import conclude, event, lock_event, new_session
from tests.services import REDIS_URL, delete_prefix
from zeropay_proto import (
    DEFAULT_POLICY,
    AttemptReserved,
    FixedWindowState,
    Lockout,
    NonceAccepted,
    NonceClaim,
    NonceReused,
    RequestAdmitted,
    Session,
    SessionState,
    SlidingWindowState,
    TokenBucketState,
    VerificationFailed,
    VerificationSucceeded,
    conclude_attempt,
    decide_fixed_window,
    decide_sliding_window,
    decide_token_bucket,
    epoch_ms,
    reserve_attempt,
)
from zeropay_proto.admission import AdmissionRequest, Limits

W = 60_000
EXAMPLES = 60
USER = "7d4c8f0e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"


@dataclass
class Lua:
    loop: asyncio.AbstractEventLoop
    base: RedisStore
    prefixes: list[str]

    def store(self) -> RedisStore:
        prefix = f"d{secrets.token_hex(5)}"
        self.prefixes.append(prefix)
        return RedisStore(self.base._client, KeySpace(prefix))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def lua() -> Iterator[Lua]:
    loop = asyncio.new_event_loop()
    base = loop.run_until_complete(RedisStore.connect(url=REDIS_URL, keys=KeySpace("dbase")))
    harness = Lua(loop, base, ["dbase"])
    try:
        yield harness
    finally:
        loop.run_until_complete(base.aclose())
        loop.close()
        for prefix in harness.prefixes:
            delete_prefix(REDIS_URL, prefix)


def start_ms() -> int:
    return epoch_ms(time.time()) + 86_400_000


gaps = st.lists(
    st.one_of(st.just(0), st.integers(1, 999), st.integers(1_000, 3 * W)), min_size=1, max_size=40
)


def limits(**kw: int) -> Limits:
    return Limits(
        global_limit=kw.get("g", 0),
        per_ip=kw.get("ip", 0),
        per_user=kw.get("user", 0),
        window_ms=W,
        shards=1,
        global_reserve=kw.get("reserve", 0),
        merchant_failures=kw.get("failures", 0),
        auth_failures=kw.get("auth", 0),
    )


def limiter_key(store: RedisStore, request: AdmissionRequest, which: int) -> str:
    """One of the request's limiter keys: 0 address, 1 global, 2 merchant, 3 failures, 4 user."""
    return store.keys.limiters(request)[which]


def hash_ints(lua: Lua, key: str, *fields: str) -> list[int]:
    values = lua.run(lua.base._client.hmget(key, *fields))
    return [int(v) for v in values]


@settings(max_examples=EXAMPLES)
@given(limit=st.integers(1, 8), steps=gaps)
def test_fixed_window_script_equals_the_core(lua: Lua, limit: int, steps: list[int]) -> None:
    store = lua.store()
    model: FixedWindowState | None = None
    now_ms = start_ms()
    for gap in steps:
        now_ms += gap
        now = now_ms / 1000
        request = AdmissionRequest(
            now=now, client_ip="-", user_id=None, nonce=None, limits=limits(g=limit)
        )
        got = lua.run(store.admit(request)).global_decision
        want = decide_fixed_window(model, now=now, limit=limit, window_ms=W)
        assert got == want
        if isinstance(want, RequestAdmitted):
            model = want.state
        if model is not None:
            stored = hash_ints(lua, limiter_key(store, request, 1), "s", "c")
            assert FixedWindowState(window_start_ms=stored[0], count=stored[1]) == model


@settings(max_examples=EXAMPLES)
@given(limit=st.integers(1, 8), steps=gaps)
def test_sliding_window_script_equals_the_core(lua: Lua, limit: int, steps: list[int]) -> None:
    store = lua.store()
    model: SlidingWindowState | None = None
    now_ms = start_ms()
    for gap in steps:
        now_ms += gap
        now = now_ms / 1000
        request = AdmissionRequest(
            now=now, client_ip="203.0.113.5", user_id=None, nonce=None, limits=limits(ip=limit)
        )
        got = lua.run(store.admit(request)).ip_decision
        want = decide_sliding_window(model, now=now, limit=limit, window_ms=W)
        assert got == want
        if isinstance(want, RequestAdmitted):
            model = want.state
        if model is not None:
            s, c, p = hash_ints(lua, limiter_key(store, request, 0), "s", "c", "p")
            assert SlidingWindowState(window_start_ms=s, current=c, previous=p) == model


@settings(max_examples=EXAMPLES)
@given(limit=st.integers(1, 8), steps=gaps)
def test_token_bucket_script_equals_the_core(lua: Lua, limit: int, steps: list[int]) -> None:
    store = lua.store()
    model: TokenBucketState | None = None
    now_ms = start_ms()
    for gap in steps:
        now_ms += gap
        now = now_ms / 1000
        request = AdmissionRequest(
            now=now,
            client_ip="-",
            user_id=USER,
            nonce=None,
            limits=limits(user=limit),
            charged_user=True,
        )
        got = lua.run(store.admit(request)).user_decision
        want = decide_token_bucket(model, now=now, limit=limit, window_ms=W)
        assert got == want
        if isinstance(want, RequestAdmitted):  # a refused request spends nothing
            model = want.state
        if model is not None:
            level, updated = hash_ints(lua, limiter_key(store, request, 4), "l", "u")
            assert TokenBucketState(level=level, updated_ms=updated) == model


@settings(max_examples=EXAMPLES)
@given(
    reserve=st.integers(0, 4),
    limit=st.integers(1, 6),
    sent=st.lists(st.sampled_from(["198.51.100.1", "198.51.100.2", "198.51.100.3"]), max_size=40),
)
def test_the_global_reserve_in_the_script_equals_the_core(
    lua: Lua, reserve: int, limit: int, sent: list[str]
) -> None:
    """Addresses sharing one shard: each is counted by the global limit only beyond its
    reserve, and a refusal by either limiter spends nothing."""
    store = lua.store()
    now = start_ms() / 1000
    for address in sent:
        request = AdmissionRequest(
            now=now,
            client_ip=address,
            user_id=None,
            nonce=None,
            limits=limits(g=limit, ip=5, reserve=reserve),
        )
        lua.run(store.admit(request))  # checked against the core at run time


@settings(max_examples=EXAMPLES)
@given(
    budget=st.integers(1, 5),
    steps=st.lists(
        st.tuples(st.sampled_from(["reserve", "refund", "advance"]), st.integers(1, 40 * W)),
        min_size=1,
        max_size=30,
    ),
)
def test_the_failure_budget_scripts_equal_the_core(
    lua: Lua, budget: int, steps: list[tuple[str, int]]
) -> None:
    store = lua.store()
    now_ms = start_ms()
    reserved: list[int] = []
    bound = limits(failures=budget)
    for action, gap in steps:
        if action == "advance":
            now_ms += gap
        elif action == "reserve":
            decided = lua.run(store.reserve_merchant_failure("shop", now_ms / 1000, bound))
            if isinstance(decided, RequestAdmitted):
                reserved.append(decided.state.window_start_ms)
        elif reserved:
            lua.run(store.refund_merchant_failure("shop", reserved.pop(), bound))


def test_wrong_keys_from_an_address_are_refused_past_the_bound(lua: Lua) -> None:
    store = lua.store()
    now = start_ms() / 1000
    bound = limits(auth=3)
    counted = [lua.run(store.count_auth_failure("192.0.2.9", now, bound)) for _ in range(4)]
    assert [isinstance(c, RequestAdmitted) for c in counted] == [True, True, True, False]
    other = lua.run(store.count_auth_failure("192.0.2.10", now, bound))
    assert isinstance(other, RequestAdmitted)


@settings(max_examples=EXAMPLES)
@given(
    claims=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from([None, USER])),
        min_size=1,
        max_size=30,
    )
)
def test_nonce_claims_equal_the_reference(lua: Lua, claims: list[tuple[str, str | None]]) -> None:
    store = lua.store()
    seen: set[tuple[str, str | None]] = set()  # single-use for the user a request names
    for nonce, user in claims:
        request = AdmissionRequest(
            now=time.time(),
            client_ip="-",
            user_id=user,
            nonce=NonceClaim(nonce=nonce, ttl_ms=600_000),
            limits=limits(),
        )
        got = lua.run(store.admit(request)).nonce
        assert got == (NonceReused() if (nonce, user) in seen else NonceAccepted())
        seen.add((nonce, user))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("open")),
        st.tuples(st.just("reserve"), st.integers(0, 3)),
        st.tuples(st.just("reserve"), st.integers(0, 3)),
        st.tuples(st.just("reserve"), st.integers(0, 3)),
        st.tuples(st.just("conclude"), st.integers(0, 3), st.integers(0, 4), st.booleans()),
        st.tuples(
            st.just("advance"),
            st.sampled_from([0.001, 1, 60, 299, 301, 900, 3600, 14_400, 86_400, 90_000]),
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=2 * EXAMPLES)
@given(ops=operations)
def test_reserve_and_conclude_scripts_equal_the_core(lua: Lua, ops: list[tuple[Any, ...]]) -> None:
    store = lua.store()
    now = start_ms() / 1000
    sessions: list[Session] = []
    lockout = Lockout()
    for op in ops:
        if op[0] == "open":
            issued = new_session(USER, now=now)
            lua.run(store.store_session(issued, epoch_ms(now), event(USER), 60_000))
            sessions.append(issued.session)
        elif op[0] == "advance":
            now += op[1]
        elif op[0] == "reserve":
            # Like an attacker: when the chosen session accepts nothing more, open another.
            index = op[1] % len(sessions) if sessions else 0
            if (
                not sessions
                or sessions[index].attempts_remaining == 0
                or sessions[index].state_at(epoch_ms(now)) is not SessionState.PENDING
            ):
                issued = new_session(USER, now=now)
                lua.run(store.store_session(issued, epoch_ms(now), event(USER), 60_000))
                sessions.append(issued.session)
                index = len(sessions) - 1
            session = sessions[index]
            want = reserve_attempt(session, lockout, now=now, policy=DEFAULT_POLICY)
            got = lua.run(
                store.reserve_attempt(
                    session.session_id, USER, now, DEFAULT_POLICY, lock_event(USER)
                )
            )
            assert got == want
            if isinstance(want, AttemptReserved):
                sessions[index], lockout = want.session, want.lockout
        elif op[0] == "conclude" and sessions:
            index = op[1] % len(sessions)
            session, attempt, unwrapped = sessions[index], op[2], op[3]
            if not 1 <= attempt <= session.attempts_used:
                continue
            entropy = secrets.token_bytes(32)
            want_out = conclude_attempt(
                session,
                attempt=attempt,
                key_unwrapped=unwrapped,
                now=now,
                token_entropy=entropy,
                policy=DEFAULT_POLICY,
            )
            got_out = lua.run(
                store.conclude_attempt(
                    session.session_id,
                    USER,
                    attempt=attempt,
                    key_unwrapped=unwrapped,
                    now=now,
                    token_entropy=entropy,
                    policy=DEFAULT_POLICY,
                    audit=event(USER),
                )
            )
            assert got_out == want_out
            if isinstance(want_out, VerificationSucceeded):
                sessions[index], lockout = want_out.session, want_out.lockout
            elif isinstance(want_out, VerificationFailed):
                sessions[index] = want_out.session
        # The state left in Redis is the core's, byte for byte.
        for session in sessions:
            blob = lua.run(store._client.get(store.keys.session(session.session_id, USER)))
            assert decode_session(session.session_id, USER, blob) == session
        raw = lua.run(store._client.hmget(store.keys.user(USER, "lock"), "f", "l", "u", "t"))
        stored = decode_lockout([int(v or 0) for v in raw])
        assert stored == lockout


def test_lockout_escalation_through_the_script_equals_the_core(lua: Lua) -> None:
    """Five lock cycles: 15 min, 1 h, 4 h, 24 h, 24 h, each compared with the core."""
    store = lua.store()
    now = start_ms() / 1000
    lockout = Lockout()
    durations = []
    for _ in range(5):
        for _ in range(5):
            issued = new_session(USER, now=now)
            lua.run(store.store_session(issued, epoch_ms(now), event(USER), 60_000))
            want = reserve_attempt(issued.session, lockout, now=now, policy=DEFAULT_POLICY)
            got = lua.run(
                store.reserve_attempt(
                    issued.session.session_id, USER, now, DEFAULT_POLICY, event(USER)
                )
            )
            assert got == want
            assert isinstance(want, AttemptReserved)
            lockout = want.lockout
        durations.append((lockout.locked_until_ms - lockout.updated_ms) // 1000)
        now = lockout.locked_until_ms / 1000
    assert durations == [900, 3600, 14_400, 86_400, 86_400]


def _reserve_twice_release_first(lua: Lua, store: RedisStore) -> None:
    now = start_ms() / 1000
    issued = new_session(USER, now=now)
    lua.run(store.store_session(issued, epoch_ms(now), event(USER), 60_000))
    session_id = issued.session.session_id
    for _ in range(2):
        lua.run(store.reserve_attempt(session_id, USER, now, DEFAULT_POLICY, lock_event(USER)))
    lua.run(store.release_attempt(session_id, USER, attempt=1, now=now, policy=DEFAULT_POLICY))


def _conclude_twice(lua: Lua, store: RedisStore) -> None:
    now = start_ms() / 1000
    issued = new_session(USER, now=now)
    lua.run(store.store_session(issued, epoch_ms(now), event(USER), 60_000))
    session_id = issued.session.session_id
    lua.run(store.reserve_attempt(session_id, USER, now, DEFAULT_POLICY, lock_event(USER)))
    for _ in range(2):  # the second meets a verified session: closed
        lua.run(conclude(store, session_id, USER, attempt=1, unwrapped=True, now=now))


def _conclude_after_a_change(lua: Lua, store: RedisStore) -> None:
    now = start_ms() / 1000
    issued = new_session(USER, now=now)
    lua.run(store.store_session(issued, epoch_ms(now), event(USER), 60_000))
    session_id = issued.session.session_id
    lua.run(store.reserve_attempt(session_id, USER, now, DEFAULT_POLICY, lock_event(USER)))
    lua.run(store.invalidate_record(USER, 1_000))  # the enrollment changes meanwhile
    lua.run(conclude(store, session_id, USER, attempt=1, unwrapped=True, now=now))


def _admit(**kw: int) -> Any:
    def scenario(lua: Lua, store: RedisStore) -> None:
        request = AdmissionRequest(
            now=start_ms() / 1000,
            client_ip="-",
            user_id=USER,
            nonce=NonceClaim(nonce=secrets.token_hex(8), ttl_ms=1000),
            limits=limits(**kw),
            charged_user=True,
        )
        for _ in range(2):
            lua.run(store.admit(request))

    return scenario


#: One rule of a script changed, and a scenario that reaches it.
MUTANTS = {
    "admit_shared: the limit admits one more": (
        "admit_shared",
        "  if count < limit then",
        "  if count <= limit then",
        _admit(g=1),
    ),
    "admit_shared: a refused request counts": (
        "admit_shared",
        "    if g[1] == 0 then counted = 0 end",
        "",
        _admit(g=1),
    ),
    "admit_shared: the IP window is kept one window": (
        "admit_shared",
        "local function sliding_kept(w, window) return w[2] + 2 * window end",
        "local function sliding_kept(w, window) return w[2] + window end",
        _admit(ip=5),
    ),
    "admit_shared: the global limit ignores the reserve": (
        "admit_shared",
        "(ip[1] == 1 and ip[3] > reserve)",
        "(ip[1] == 1)",
        _admit(g=1, ip=5, reserve=3),
    ),
    "admit_shared: the bucket is kept a millisecond longer": (
        "admit_shared",
        "limit * window) / limit) + 1",
        "limit * window) / limit) + 2",
        _admit(user=5),
    ),
    "reserve_failure: the budget holds one more": (
        "reserve_failure",
        "tonumber(ARGV[1]), tonumber(ARGV[2]), window)",
        "tonumber(ARGV[1]), tonumber(ARGV[2]) + 1, window)",
        lambda lua, store: [
            lua.run(store.reserve_merchant_failure("shop", start_ms() / 1000, limits(failures=1)))
            for _ in range(2)
        ],
    ),
    "refund_failure: an older window is refunded": (
        "refund_failure",
        "  return {0, s}\nend\nwrite_sliding",
        "  prev = prev + 0\nend\nwrite_sliding",
        lambda lua, store: [
            lua.run(store.reserve_merchant_failure("shop", start_ms() / 1000, limits(failures=3))),
            lua.run(store.refund_merchant_failure("shop", 0, limits(failures=3))),
        ],
    ),
    "reserve: the lockout is stamped late": ("reserve", "  t = now\n", "  t = now + 1\n", None),
    "reserve: every reservation audits a lock": (
        "reserve",
        "  if u > t then",
        "  if u <= t then",
        None,
    ),
    "auth_failure: one more wrong key is let through": (
        "auth_failure",
        "tonumber(ARGV[1]), tonumber(ARGV[2]), window)",
        "tonumber(ARGV[1]), tonumber(ARGV[2]) + 1, window)",
        lambda lua, store: [
            lua.run(store.count_auth_failure("192.0.2.7", start_ms() / 1000, limits(auth=1)))
            for _ in range(3)
        ],
    ),
    "release: any later attempt is given back": (
        "release",
        "and used == attempt then",
        "and used >= attempt then",
        _reserve_twice_release_first,
    ),
    "conclude: a proof of a changed enrollment mints a token": (
        "conclude",
        "if ARGV[2] == '1' and generation == tonumber(ARGV[8]) then",
        "if ARGV[2] == '1' then",
        _conclude_after_a_change,
    ),
    "conclude: a verified session concludes again": (
        "conclude",
        "if state ~= PENDING then",
        "if state == FAILED then",
        _conclude_twice,
    ),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_a_script_that_departs_from_the_core_is_caught_at_run_time(lua: Lua, mutant: str) -> None:
    """Every script the adapter checks is checked: a changed rule raises ScriptDisagreement
    on the first reply that shows it (never a silent wrong decision)."""
    name, rule, changed, scenario = MUTANTS[mutant]
    if scenario is None:  # any reservation reaches it
        scenario = _reserve_twice_release_first
    scenario(lua, lua.store())  # the scripts as shipped agree with the core
    store = lua.store()
    assert rule in store._sources[name], "the rule to change is in the script"
    store._sources[name] = store._sources[name].replace(rule, changed)
    store._shas[name] = scripts.sha(store._sources[name])
    with pytest.raises(ScriptDisagreement):
        scenario(lua, store)
