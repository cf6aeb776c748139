"""Redis adapter behaviour under concurrency, at scale and under faults (real servers)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
import trio_asyncio

from adapters.bridge import aio
from adapters.errors import DependencyUnavailable
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from tests.adapters.conftest import open_state_store
from tests.adapters.helpers import event, new_session, new_user
from tests.services import REDIS_URL, _stop, delete_prefix, free_port, running_private_redis
from zeropay_proto import (
    DEFAULT_POLICY,
    AccountLocked,
    AttemptReserved,
    NonceAccepted,
    NonceClaim,
    NonceReused,
    SessionClosed,
    make_session_id,
)
from zeropay_proto.admission import AdmissionRequest, Limits

redis_and_cluster = pytest.mark.parametrize("state_backend", ["redis", "cluster"], indirect=True)

#: The design target: at most 300 bytes of Redis memory per verification session.
SESSION_BUDGET_BYTES = 300


@redis_and_cluster
async def test_fifty_concurrent_uses_of_one_nonce_accept_exactly_one(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        request = AdmissionRequest(
            now=time.time(),
            client_ip="192.0.2.7",
            user_id=user,
            nonce=NonceClaim(nonce="5f0c7a52-7d3e-4b8a-9c1d-2e3f4a5b6c7d", ttl_ms=330_000),
            limits=Limits(global_limit=0, per_ip=0, per_user=1000, window_ms=60_000),
        )
        outcomes: list[object] = []

        async def claim() -> None:
            outcomes.append((await store.admit(request)).nonce)

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(claim)
        assert len(outcomes) == 50
        assert outcomes.count(NonceAccepted()) == 1
        assert outcomes.count(NonceReused()) == 49


@redis_and_cluster
async def test_hundred_concurrent_wrong_verifications_evaluate_at_most_five(
    state_backend: dict[str, Any],
) -> None:
    async with open_state_store(state_backend) as store:
        user = new_user()
        now = time.time()
        sessions = []
        for _ in range(34):  # 34 sessions x 3 attempts >= 100 attempts
            issued = new_session(user, now=now)
            await store.store_session(issued, 0, event(user), 60_000)
            sessions.append(issued.session.session_id)
        outcomes: list[object] = []

        async def guess(i: int) -> None:
            outcomes.append(
                await store.reserve_attempt(
                    sessions[i % len(sessions)], user, now, DEFAULT_POLICY, event(user)
                )
            )

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(guess, i)
        reserved = [o for o in outcomes if isinstance(o, AttemptReserved)]
        assert len(outcomes) == 100
        assert len(reserved) == 5  # evaluated: only reserved attempts reach a comparison
        assert all(
            isinstance(o, AccountLocked | SessionClosed) for o in outcomes if o not in reserved
        )
        assert sorted(r.lockout.failures for r in reserved) == [1, 2, 3, 4, 5]


async def test_session_memory_stays_within_budget_at_ten_thousand_sessions() -> None:
    """The figure the design asks for: MEMORY USAGE of every session key, averaged."""
    prefix = f"m{secrets.token_hex(4)}"
    sessions = 10_000
    async with trio_asyncio.open_loop():
        store = await aio(RedisStore.connect)(url=REDIS_URL, keys=KeySpace(prefix))
        on_trio = from_trio(store, timeout=30)
        try:
            keys = []
            limiter = trio.Semaphore(64)
            now = time.time()

            async def one() -> None:
                async with limiter:
                    user = new_user()
                    issued = new_session(user, now=now)
                    await on_trio.store_session(issued, 0, event(user), 60_000)
                    keys.append(store.keys.session(issued.session.session_id, user))

            async with trio.open_nursery() as nursery:
                for _ in range(sessions):
                    nursery.start_soon(one)

            async def usage() -> list[int]:
                pipe = store._client.pipeline(transaction=False)
                for key in keys:
                    pipe.memory_usage(key, samples=0)
                return [int(v) for v in await pipe.execute()]

            sizes = await aio(usage)()
        finally:
            await aio(store.aclose)()
            delete_prefix(REDIS_URL, prefix)
    average = sum(sizes) / len(sizes)
    print(
        f"\nRedis MEMORY USAGE per session key over {sessions}: avg {average:.1f} B, "
        f"min {min(sizes)} B, max {max(sizes)} B"
    )
    assert len(sizes) == sessions
    assert max(sizes) <= SESSION_BUDGET_BYTES


async def test_scripts_are_reloaded_after_a_script_flush() -> None:
    async with open_state_store({"kind": "redis", "cluster": None}) as store:
        redis.Redis.from_url(REDIS_URL).script_flush()
        user = new_user()
        issued = new_session(user)
        await store.store_session(issued, 0, event(user), 60_000)
        assert await store.load_session(issued.session.session_id, user) == issued.session


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_private_redis(tmp_path) as server:
        yield server


async def test_a_dead_redis_fails_closed_with_dependency_unavailable(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = private_redis
    async with trio_asyncio.open_loop():
        store = await aio(RedisStore.connect)(url=url)
        on_trio = from_trio(store, timeout=5)
        user = new_user()
        request = AdmissionRequest(
            now=time.time(),
            client_ip="192.0.2.1",
            user_id=user,
            nonce=None,
            limits=Limits(global_limit=10, per_ip=10, per_user=10, window_ms=60_000),
        )
        assert not (await on_trio.admit(request)).rate_limited
        _stop(process)
        with pytest.raises(DependencyUnavailable):
            await on_trio.admit(request)
        with pytest.raises(DependencyUnavailable):
            await on_trio.reserve_attempt(
                make_session_id(user, secrets.token_bytes(16)),
                user,
                time.time(),
                DEFAULT_POLICY,
                event(user),
            )
        with pytest.raises(DependencyUnavailable):
            await on_trio.ping()
        await aio(store.aclose)()


async def test_connecting_to_nothing_is_dependency_unavailable() -> None:
    async with trio_asyncio.open_loop():
        with pytest.raises(DependencyUnavailable):
            await aio(RedisStore.connect)(url=f"redis://127.0.0.1:{free_port()}/0")
