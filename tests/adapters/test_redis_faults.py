"""The Redis adapter under the faults of an ordinary week.

Every error reply that means "Redis cannot serve us now" becomes DependencyUnavailable (a 503),
never an unexpected exception (a 500): each reply is driven through redis-py's real parser by
a minimal RESP peer, and OOM, READONLY, FLUSHALL and SCRIPT FLUSH also on a real Redis.
"""

from __future__ import annotations

import functools
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import trio
import trio_asyncio
from redis.asyncio.connection import AbstractConnection

from adapters import redis_trio
from adapters.bridge import aio, bridged
from adapters.errors import DependencyUnavailable
from adapters.redis_errors import is_unavailable
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from tests.adapters.conftest import open_state_store
from tests.adapters.helpers import event, new_user
from tests.services import REDIS_URL, running_private_redis
from zeropay_proto import NonceAccepted, NonceClaim, NonceReused, RequestAdmitted
from zeropay_proto.admission import AdmissionRequest, Limits

#: Error replies of a Redis that is full, demoted, loading, re-forming or busy.
UNAVAILABLE_REPLIES = [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "CLUSTERDOWN The cluster is down",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "MOVED 3999 127.0.0.1:6381",
    "BUSY Redis is busy running a script.",
]


def _command(buffer: bytearray) -> list[bytes] | None:
    """Take one complete RESP command (an array of bulk strings) off ``buffer``, if there."""
    try:
        end = buffer.index(b"\r\n")
        position, args = end + 2, []
        for _ in range(int(buffer[1:end])):
            line_end = buffer.index(b"\r\n", position)
            start = line_end + 2
            stop = start + int(buffer[position + 1 : line_end])
            if len(buffer) < stop + 2:
                return None
            args.append(bytes(buffer[start:stop]))
            position = stop + 2
    except ValueError:  # no complete line yet
        return None
    del buffer[:position]
    return args


def _commands(buffer: bytearray) -> list[list[bytes]]:
    """Take every complete command off ``buffer``."""
    commands = []
    while (command := _command(buffer)) is not None:
        commands.append(command)
    return commands


async def _answer_with(reply: str, stream: trio.SocketStream) -> None:
    """Answer every command with the error ``reply`` (CLIENT, the handshake, with +OK)."""
    buffer = bytearray()
    async with stream:
        while data := await stream.receive_some(65536):
            buffer += data
            out = b"".join(
                b"+OK\r\n" if cmd[0].upper() == b"CLIENT" else f"-{reply}\r\n".encode()
                for cmd in _commands(buffer)
            )
            if out:
                await stream.send_all(out)


async def _erring_redis(reply: str, nursery: trio.Nursery) -> str:
    def handler(stream: trio.SocketStream) -> Any:
        return _answer_with(reply, stream)

    serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    port = listeners[0].socket.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


#: Ten requests an hour per user: a token comes back only after six minutes, so within a
#: test the bucket's remaining count is exactly ten minus the requests it counted.
SLOW_LIMITS = Limits(global_limit=1000, per_ip=1000, per_user=10, window_ms=3_600_000)


def _request(user: str | None, nonce: str | None = None) -> AdmissionRequest:
    return AdmissionRequest(
        now=time.time(),
        client_ip="192.0.2.9",
        user_id=user,
        nonce=None if nonce is None else NonceClaim(nonce=nonce, ttl_ms=330_000),
        limits=SLOW_LIMITS,
        charged_user=True,
    )


@pytest.mark.parametrize("path", ["trio", "bridge"])
@pytest.mark.parametrize("reply", UNAVAILABLE_REPLIES, ids=lambda r: r.split()[0])
async def test_every_unavailable_reply_is_dependency_unavailable(reply: str, path: str) -> None:
    """On the Trio pool (a request's steps) and across the bridge (the rest) alike."""
    async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
        url = await _erring_redis(reply, nursery)
        client = aioredis.Redis.from_url(url, socket_timeout=None)
        adapter = RedisStore(client, KeySpace())
        store = (
            from_trio(adapter, timeout=5)
            if path == "trio"
            else bridged(adapter, dependency="redis", timeout=5)
        )
        user = new_user()
        with pytest.raises(DependencyUnavailable):
            await store.admit(_request(user))  # a pipeline of scripts
        with pytest.raises(DependencyUnavailable):
            await store.ping()
        with pytest.raises(DependencyUnavailable):
            await store.load_for_initiate(user)  # plain commands
        with pytest.raises(DependencyUnavailable):
            await store.append(event(user))
        await aio(adapter.aclose)()
        nursery.cancel_scope.cancel()


def test_a_wrong_command_is_not_mistaken_for_an_outage() -> None:
    assert not is_unavailable(redis.ResponseError("WRONGTYPE Operation against a key"))
    assert not is_unavailable(redis.ResponseError("ERR syntax error"))
    assert not is_unavailable(ValueError("not redis"))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_private_redis(tmp_path) as server:
        yield server


async def _store(url: str) -> AsyncIterator[Any]:
    store = await aio(RedisStore.connect)(url=url, keys=KeySpace("faults"))
    try:
        yield from_trio(store, timeout=5)
    finally:
        await aio(store.aclose)()


async def test_a_full_or_demoted_redis_is_unavailable_and_recovers_by_itself(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = private_redis
    admin = redis.Redis.from_url(url)
    async with trio_asyncio.open_loop():
        async for store in _store(url):
            user = new_user()
            assert await store.ping()
            for fault, heal in [
                (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0")),
                (("REPLICAOF", "127.0.0.1", "1"), ("REPLICAOF", "NO", "ONE")),
            ]:
                admin.execute_command(*fault)  # type: ignore[no-untyped-call]
                with pytest.raises(DependencyUnavailable):
                    await store.admit(_request(user, str(uuid.uuid4())))
                with pytest.raises(DependencyUnavailable):
                    await store.ping()
                admin.execute_command(*heal)  # type: ignore[no-untyped-call]
                assert await store.ping()
                admission = await store.admit(_request(user, str(uuid.uuid4())))
                assert isinstance(admission.nonce, NonceAccepted)
    admin.close()


async def test_a_flushed_redis_gets_its_consumer_groups_back(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = private_redis
    admin = redis.Redis.from_url(url)
    async with trio_asyncio.open_loop():
        async for store in _store(url):
            user = new_user()
            await store.append(event(user))
            assert len(await store.read_batch("c1", 10, 30_000)) == 1
            admin.flushall()
            assert await store.read_batch("c1", 10, 30_000) == []  # groups recreated
            await store.append(event(user))
            entries = await store.read_batch("c1", 10, 30_000)
            assert len(entries) == 1
            await store.acknowledge(entries)
            admin.flushall()
            await store.acknowledge(entries)  # nothing left to acknowledge: no error
            assert await store.backlog() == 0
    admin.close()


@pytest.mark.parametrize("state_backend", ["redis", "cluster"], indirect=True)
async def test_lost_scripts_resend_only_the_calls_that_failed(
    state_backend: dict[str, Any],
) -> None:
    """A promoted replica has no scripts (SCRIPT LOAD is not replicated; SCRIPT FLUSH gets
    the same state): each call answered NOSCRIPT is sent again, alone. A call that succeeded
    (a claimed nonce, a counted request) is never sent twice."""
    cluster = state_backend["cluster"]
    admins = (
        [redis.Redis(host=host, port=port) for host, port in cluster.nodes]
        if cluster
        else [redis.Redis.from_url(REDIS_URL)]
    )
    async with open_state_store(state_backend) as store:
        user = new_user()
        for round_ in range(1, 4):
            # Round 1 flushes every node; later rounds only one, so that some calls of one
            # admission succeed while others meet NOSCRIPT.
            for admin in admins if round_ == 1 else admins[round_ % len(admins) :][:1]:
                admin.script_flush()
            nonce = str(uuid.uuid4())
            admission = await store.admit(_request(user, nonce))
            assert isinstance(admission.nonce, NonceAccepted), f"round {round_}"
            assert isinstance(admission.user_decision, RequestAdmitted)
            counted = 2 * round_ - 1  # this admission and every earlier one, each once
            assert admission.user_decision.remaining == SLOW_LIMITS.per_user - counted
            replay = await store.admit(_request(user, nonce))
            assert isinstance(replay.nonce, NonceReused)
    for admin in admins:
        admin.close()


@pytest.mark.parametrize("state_backend", ["redis", "cluster"], indirect=True)
async def test_a_reply_lost_after_the_command_ran_is_an_outage_not_a_second_send(
    state_backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master killed after it ran (and replicated) a script but before its reply arrived:
    the connection breaks with the command done. Sending it again, as redis-py's cluster
    client does by default after reconnecting, would refuse the fresh nonce as reused (the
    cluster failover test met this). The store sends each call at most once: the lost reply
    is a 503, and the next request meets a working store."""
    armed = False
    # Where the reply is read, and how its connection breaks there: redis-py's connection on
    # a cluster, the Trio pool's socket standalone.
    owner, method, lost = (
        (AbstractConnection, "read_response", redis.exceptions.ConnectionError("closed"))
        if state_backend["cluster"]
        else (redis_trio._Connection, "round_trip", ConnectionResetError("reset by peer"))
    )
    read = getattr(owner, method)

    async def lossy(connection: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal armed
        reply = await read(connection, *args, **kwargs)
        if armed:
            armed = False
            raise lost
        return reply

    monkeypatch.setattr(owner, method, lossy)

    def claim(nonce: str) -> AdmissionRequest:
        """The nonce alone: a limiter's lost reply would fail open (for a while) instead."""
        no_limits = Limits(global_limit=0, per_ip=0, per_user=0, window_ms=60_000)
        return replace(_request(None, nonce), limits=no_limits)

    async with open_state_store(state_backend) as store:
        nonce = str(uuid.uuid4())
        armed = True
        with pytest.raises(DependencyUnavailable):
            await store.admit(claim(nonce))
        assert not armed, "the reply was read (the command ran)"
        replay = await store.admit(claim(nonce))
        assert isinstance(replay.nonce, NonceReused), "the first send claimed the nonce"
        fresh = await store.admit(claim(str(uuid.uuid4())))
        assert isinstance(fresh.nonce, NonceAccepted)


async def test_events_redis_lost_are_replayed_from_the_instances_journal(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Redis came back empty before the flusher read these events: the instance that
    appended them hands them over itself (and nothing when nothing was lost)."""
    url, _ = private_redis
    admin = redis.Redis.from_url(url)
    async with trio_asyncio.open_loop():
        store = await aio(RedisStore.connect)(url=url, keys=KeySpace("journal"))
        on_trio = from_trio(store, timeout=5)
        try:
            assert await on_trio.read_batch("c1", 100, 30_000) == []  # epochs noted
            user = new_user()
            written = [event(user) for _ in range(3)]
            for e in written:
                await on_trio.append(e)
            admin.flushall()  # lost before any flusher read them
            store._next_epoch_check = 0.0  # look now, not in a second
            replayed = await on_trio.read_batch("c1", 100, 30_000)
            assert [e.event.event_id for e in replayed] == [e.event_id for e in written]
            await on_trio.acknowledge(replayed)  # journal entries: nothing to acknowledge
            store._next_epoch_check = 0.0
            assert await on_trio.read_batch("c1", 100, 30_000) == []  # no loss: no replay
        finally:
            await aio(store.aclose)()
    admin.close()
