"""The Trio pool a request's Redis steps take (adapters/redis_trio.py), against real Redis.

What it must do as redis-py's pool does: answer in order with error replies in place, as
redis-py's exception classes; replace a connection the server closed instead of failing a
request on it; never reuse a connection a cancelled round trip left with unread replies; log
in with the URL's password and database; turn transport failures into redis-py's
ConnectionError. And the store's Trio face: it runs only the methods named native.
"""

from __future__ import annotations

import inspect
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as rexc
import trio
import trio_asyncio

from adapters.bridge import aio
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from adapters.redis_trio import ServerAddress, TrioRedisPool
from adapters.resp import pack
from tests.services import free_port, running_private_redis

pytestmark = pytest.mark.redis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_private_redis(tmp_path) as server:
        yield server


def _pool(url: str) -> TrioRedisPool:
    pool = TrioRedisPool.for_client(aioredis.Redis.from_url(url))
    assert pool is not None
    return pool


async def _call(pool: TrioRedisPool, *command: str | bytes | int) -> object:
    (reply,) = await pool.round_trip(pack([command]), 1)
    return reply


async def test_replies_come_in_order_with_error_replies_in_place_as_redis_py_raises_them(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    pool = _pool(private_redis[0])
    try:
        replies = await pool.round_trip(
            pack(
                [
                    ("SET", "k", "v"),
                    ("GET", "k"),
                    ("EVALSHA", "0" * 40, 0),
                    ("INCR", "k"),
                    ("GET", "missing"),
                ]
            ),
            5,
        )
    finally:
        pool.close()
    assert replies[:2] == [b"OK", b"v"]
    assert isinstance(replies[2], rexc.NoScriptError)
    assert type(replies[3]) is rexc.ResponseError
    assert "not an integer" in str(replies[3])
    assert replies[4] is None


async def test_a_connection_the_server_closed_is_replaced_before_anyone_uses_it(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """A restart or CLIENT KILL closes pooled connections while they idle: the next round
    trip opens a new one instead of failing a request on the dead one."""
    url, _ = private_redis
    admin = redis.Redis.from_url(url)
    pool = _pool(url)
    try:
        first = await _call(pool, "CLIENT", "ID")
        assert admin.client_kill_filter(_id=str(first)) == 1
        second = await _call(pool, "CLIENT", "ID")
    finally:
        pool.close()
        admin.close()
    assert isinstance(first, int)
    assert isinstance(second, int)
    assert second != first


async def test_a_cancelled_round_trip_closes_its_connection_so_no_stale_reply_is_read(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Cancelled at its deadline while Redis has not answered: the reply would arrive later on
    that connection, so it must never serve the next caller."""
    url, _ = private_redis
    admin = redis.Redis.from_url(url)
    pool = _pool(url)
    try:
        with trio.move_on_after(0.2) as scope:
            await _call(pool, "BLPOP", "queue", 30)
        assert scope.cancelled_caught
        with trio.fail_after(10):  # Redis sees the close: nobody waits on the list
            while int(admin.info("clients")["blocked_clients"]):
                await trio.sleep(0.01)
        admin.rpush("queue", "item")
        assert await _call(pool, "LLEN", "queue") == 1  # its own reply, and nobody popped
    finally:
        pool.close()
        admin.close()


async def test_it_logs_in_with_the_urls_password_and_database(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = private_redis
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    admin = redis.Redis(port=port)
    secret = secrets.token_hex(8)
    admin.config_set("requirepass", secret)
    admin = redis.Redis(port=port, password=secret, db=3)
    pool = _pool(f"redis://:{secret}@127.0.0.1:{port}/3")
    try:
        assert await _call(pool, "SET", "where", "db3") == b"OK"
    finally:
        pool.close()
    assert admin.get("where") == b"db3"
    wrong = _pool(f"redis://:wrong@127.0.0.1:{port}/3")
    try:
        with pytest.raises(rexc.AuthenticationError):
            await _call(wrong, "PING")
    finally:
        wrong.close()
        admin.close()


async def test_it_reaches_a_redis_on_a_unix_socket(tmp_path: Path) -> None:
    with running_private_redis(tmp_path, unix_socket=True) as (url, _):
        pool = _pool(url)
        try:
            assert pool.address.path == str(tmp_path / "redis.sock")
            assert await _call(pool, "ECHO", "over the socket") == b"over the socket"
        finally:
            pool.close()
        async with trio_asyncio.open_loop():  # the store as the server wires it
            store = await aio(RedisStore.connect)(url=url, keys=KeySpace("unix"))
            try:
                assert store.trio_face() is not None
                user = str(uuid.uuid4())
                assert (await from_trio(store, timeout=5).load_for_initiate(user)).cached is None
            finally:
                await aio(store.aclose)()


async def test_an_unreachable_or_closed_pool_is_a_redis_connection_error() -> None:
    unreachable = TrioRedisPool(ServerAddress(port=free_port()))
    with pytest.raises(rexc.ConnectionError):
        await _call(unreachable, "PING")
    unreachable.close()
    with pytest.raises(rexc.ConnectionError):
        await _call(unreachable, "PING")


def test_it_speaks_only_as_the_client_would_plain_tcp_or_a_unix_socket_in_resp2() -> None:
    secret = secrets.token_hex(8)
    tcp = TrioRedisPool.for_client(
        aioredis.Redis.from_url(f"redis://user:{secret}@db.internal:7000/2")
    )
    assert tcp is not None
    assert tcp.address == ServerAddress(
        host="db.internal", port=7000, db=2, username="user", password=secret
    )
    unix = TrioRedisPool.for_client(aioredis.Redis.from_url("unix:///run/redis.sock?db=1"))
    assert unix is not None
    assert (unix.address.path, unix.address.db) == ("/run/redis.sock", 1)
    assert TrioRedisPool.for_client(aioredis.Redis.from_url("rediss://db.internal:7000")) is None
    assert TrioRedisPool.for_client(aioredis.Redis(protocol=3)) is None


def test_every_native_method_is_a_gated_port_method_of_the_store() -> None:
    for name in RedisStore.TRIO_NATIVE:
        method = getattr(RedisStore, name)
        assert inspect.iscoroutinefunction(method), name
        assert getattr(method, "__wrapped__", None) is not None, f"{name} is ungated"


async def test_the_trio_face_runs_native_methods_and_refuses_the_rest(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = private_redis
    async with trio_asyncio.open_loop():
        store = await aio(RedisStore.connect)(url=url, keys=KeySpace("face"))
        try:
            face = store.trio_face()
            assert face is not None
            assert face is store.trio_face()  # one per store
            assert await face.load_session("s" * 22, "u") is None  # native: runs on Trio
            with pytest.raises(RuntimeError, match="only methods whose I/O is _send"):
                await face.backlog()  # the flusher's side needs redis-py
        finally:
            await aio(store.aclose)()
