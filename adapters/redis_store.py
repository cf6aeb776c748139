"""The Redis adapter: admission, sessions, tokens and the audit stream, standalone or Cluster.

One class per concern, each in its own module, joined here with the connection's lifecycle:
:mod:`.redis_scripts` (the scripts and the runner every call goes through),
:mod:`.redis_admission`, :mod:`.redis_sessions`, :mod:`.redis_tokens` and
:mod:`.redis_audit_stream`. The memory adapter mirrors the same names (``memory_*``).

asyncio code on redis-py's asyncio clients, which the server reaches from Trio through
:mod:`adapters.bridge`; on a standalone Redis, the methods a request makes
(:data:`RedisStore.TRIO_NATIVE`, whose only I/O is the scripted round trip) run on Trio
directly instead, on :mod:`adapters.redis_trio`'s pool (:meth:`RedisStore.trio_face`). Each
port method is one pipeline of ``EVALSHA``/commands: one round trip per hash slot it touches
(admission: its limiters' slot, the address's shard or the merchant's, and the nonce's,
concurrently in Cluster mode; every session step: the user's slot only).

The scripts (``adapters/lua``) decide atomically inside Redis. Each returns the snapshot it
read; the adapter replays the core's decision on that snapshot and raises
:class:`ScriptDisagreement` if it differs from what the script persisted, so the core stays the
reference at run time, not only in the differential tests.

Clients are created with ``socket_timeout=None`` (docs/stack.md, "trio-asyncio": trio-asyncio keeps
every cancelled asyncio timer alive); deadlines are set on the Trio side by the bridge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .bridge import bridged
from .ports import StateStore
from .redis_audit_stream import RedisAuditStream
from .redis_cluster import cluster_client
from .redis_keys import KeySpace
from .redis_scripts import redis_call
from .redis_sessions import RedisSessions
from .redis_tokens import RedisTokens
from .redis_trio import TrioRedisPool

#: The most script calls one port method sends at once (admission: limits, bucket, nonce).
CALLS_PER_OPERATION = 3
#: Readiness writes this key (in every slot group a request may write) with a short TTL.
HEALTH_KEY_TTL_MS = 10_000


class RedisStore(RedisSessions, RedisTokens, RedisAuditStream):
    """Implements AdmissionPort, SessionPort, PspSessionPort and AuditStreamPort on Redis."""

    #: The port methods whose only I/O is the scripted round trip (``_send``), which the
    #: Trio face runs natively: every step a request makes. The audit stream's reading side
    #: (the flusher), readiness and statistics stay on redis-py behind the bridge.
    TRIO_NATIVE: ClassVar[frozenset[str]] = frozenset(
        {
            "admit",
            "admit_and_load",
            "admit_and_reserve",
            "append",
            "cache_record",
            "conclude_attempt",
            "count_auth_failure",
            "forget_user",
            "invalidate_record",
            "load_for_initiate",
            "load_passkey_challenge",
            "load_psp_session",
            "load_session",
            "publish_merchant_key_revoked",
            "release_attempt",
            "refund_merchant_failure",
            "reserve_attempt",
            "reserve_merchant_failure",
            "revoke_token",
            "revoke_user_tokens",
            "revoked_merchant_keys",
            "store_passkey_challenge",
            "store_psp_session",
            "store_session",
            "take_passkey_challenge",
            "token_info",
        }
    )

    def __init__(
        self, client: aioredis.Redis | RedisCluster, keys: KeySpace, max_connections: int = 64
    ) -> None:
        super().__init__(client, keys, max_connections)
        self._trio_pool: TrioRedisPool | None = None
        self._face: RedisStore | None = None

    @classmethod
    async def connect(
        cls,
        *,
        url: str | None = None,
        cluster_nodes: Sequence[tuple[str, int]] = (),
        keys: KeySpace | None = None,
        max_connections: int = 64,
    ) -> RedisStore:
        """Connect to a standalone server (``url``) or a Cluster (``cluster_nodes``), load the
        scripts and create the audit consumer groups."""
        client: aioredis.Redis | RedisCluster
        # The gate admits ``max_connections`` operations at once. One operation holds at most
        # CALLS_PER_OPERATION connections in a cluster (admission touches up to three slots,
        # maybe all on one node) and one standalone; the pools are sized so that gated work
        # never meets a full pool, with slack for the ungated readiness ping.
        if cluster_nodes:
            client = cluster_client(
                cluster_nodes,
                max_connections=CALLS_PER_OPERATION * max_connections + 4,
                socket_timeout=None,
                socket_connect_timeout=5,
            )
        elif url:
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=None,
                socket_connect_timeout=5,
                max_connections=max_connections + 4,
                health_check_interval=0,
            )
        else:
            raise ValueError("a Redis URL or cluster nodes are required")
        store = cls(client, keys or KeySpace(), max_connections)
        try:
            await store._prepare()
        except BaseException:
            await client.aclose()
            raise
        return store

    @redis_call
    async def _prepare(self) -> None:
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()
        await self._load_scripts()
        await self._create_groups()

    def trio_face(self) -> RedisStore | None:
        """This store as Trio calls it directly, for :data:`TRIO_NATIVE` (the bridge's
        ``native``): on a standalone Redis the client reaches over plain TCP or a Unix socket,
        its round trips on a :class:`~.redis_trio.TrioRedisPool`; ``None`` on a cluster or
        TLS, whose every call crosses the bridge. One face per store, closed with it."""
        if self._trio_pool is None and not isinstance(self._client, RedisCluster):
            self._trio_pool = TrioRedisPool.for_client(self._client)
            if self._trio_pool is not None:
                self._face = self.on_trio(self._trio_pool)
        return self._face

    async def aclose(self) -> None:
        """Close the client's connections, and the Trio face's."""
        if self._trio_pool is not None:
            self._trio_pool.close()
        await self._client.aclose()

    @redis_call
    async def ping(self) -> bool:
        """Readiness: a write succeeds in each slot group (spread over every master, as the
        limiters' slots are), so a full (OOM), demoted (READONLY) or loading Redis is not
        ready although it answers PING. Raises DependencyUnavailable when it is not."""
        pipe = self._client.pipeline(transaction=False)
        for tag in self.keys.all_streams():
            pipe.set(f"{tag}:health", b"1", px=HEALTH_KEY_TTL_MS)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, BaseException):
                raise result
        return True

    @redis_call
    async def server_stats(self) -> tuple[int, int, float]:
        """``(used_memory, maxmemory, cpu seconds)`` summed over a cluster's nodes
        (maxmemory 0: no limit), for the dashboard's Redis memory and CPU panels."""
        memories = _per_node(await self._client.info("memory"))
        cpus = _per_node(await self._client.info("cpu"))
        used = sum(int(node["used_memory"]) for node in memories)
        maximum = sum(int(node.get("maxmemory", 0)) for node in memories)
        seconds = sum(float(n["used_cpu_sys"]) + float(n["used_cpu_user"]) for n in cpus)
        return used, maximum, seconds


def _per_node(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """INFO's sections per node: a Cluster client answers them by node name, unless only one
    node answered (a master down), when it answers that node's alone, as a standalone does."""
    if reply and all(isinstance(section, dict) for section in reply.values()):
        return list(reply.values())
    return [reply]


def from_trio(
    store: RedisStore, *, timeout: float, observe: Callable[[float], None] | None = None
) -> RedisStore:
    """``store`` as the server calls it from Trio: behind the bridge with Redis's deadline,
    its request path (:data:`RedisStore.TRIO_NATIVE`) on the Trio face where there is one."""
    return bridged(
        store,
        dependency="redis",
        timeout=timeout,
        observe=observe,
        native=store.trio_face(),
        native_methods=RedisStore.TRIO_NATIVE,
    )


if TYPE_CHECKING:  # mypy --strict proves the adapter satisfies its port(s)

    def _is_state_store(store: RedisStore) -> StateStore:
        return store
