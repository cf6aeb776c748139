"""The Redis adapter: admission, sessions, tokens and the audit stream, standalone or Cluster.

asyncio code on redis-py's asyncio clients; the server reaches it from Trio through
:mod:`adapters.bridge`. Each port method is one pipeline of ``EVALSHA``/commands: one round trip
per hash slot it touches (admission: the ``{rl}`` slot and the user's slot, concurrently in
Cluster mode; every session step: the user's slot only).

The scripts (``adapters/lua``) decide atomically inside Redis. Each returns the snapshot it
read; the adapter replays the core's decision on that snapshot and raises
:class:`ScriptDisagreement` if it differs from what the script persisted, so the core stays the
reference at run time, not only in the differential tests.

Clients are created with ``socket_timeout=None`` (NOTES-stack.md pitfall 1: trio-asyncio keeps
every cancelled asyncio timer alive); deadlines are set on the Trio side by the bridge.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from zeropay_proto import (
    AccountLocked,
    AttemptReleased,
    AttemptReserved,
    BearerToken,
    ChallengeIssued,
    Policy,
    Session,
    SessionClosed,
    VerificationFailed,
    VerificationSucceeded,
    conclude_attempt,
    epoch_ms,
    issue_token,
    release_attempt,
    reserve_attempt,
    session_names_user,
)
from zeropay_proto.admission import Admission, AdmissionRequest
from zeropay_proto.audit import AuditAction, AuditEvent

from . import redis_scripts as scripts
from . import resp
from .audit_journal import AuditJournal
from .errors import DependencyUnavailable
from .ports import (
    CachedEnrollment,
    ConcludeOutcome,
    InitiateSnapshot,
    RecordCache,
    ReserveOutcome,
    StateStore,
    StreamEntry,
    TokenInfo,
)
from .redis_admission import admission_calls, decode_admission, nonce_until_ms
from .redis_errors import is_missing_group, is_unavailable
from .redis_keys import (
    KeySpace,
    decode_cached,
    decode_lockout,
    decode_session,
    decode_window,
    encode_cached,
    encode_session,
    encode_window,
)
from .redis_scripts import (
    APPLIED,
    CLOSED,
    LOCKED,
    NO_SESSION,
    NOT_ADMITTED,
    RESERVED,
    Call,
    ScriptDisagreement,
)

CONSUMER_GROUP = "flushers"
#: The stream name of events replayed from the journal after Redis lost data.
REPLAYED = "replayed-from-journal"
#: How often the flusher's reads look for lost data (one SET NX GET per slot group).
EPOCH_CHECK_SECONDS = 1.0
#: The most script calls one port method sends at once (admission: limits, bucket, nonce).
CALLS_PER_OPERATION = 3
#: What reserve.lua answers for each of the core's decisions.
_RESERVE_CODES = {SessionClosed: CLOSED, AccountLocked: LOCKED, AttemptReserved: RESERVED}
#: Readiness writes this key (in every slot group a request may write) with a short TTL.
HEALTH_KEY_TTL_MS = 10_000

P = ParamSpec("P")
R = TypeVar("R")
StoreT = TypeVar("StoreT", bound="RedisStore")


def _redis_call(
    method: Callable[Concatenate[StoreT, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[StoreT, P], Coroutine[Any, Any, R]]:
    """Queue behind the store's gate, and turn "Redis cannot serve us now" (unreachable, or an
    error reply such as OOM or READONLY: :func:`adapters.redis_errors.is_unavailable`) into
    DependencyUnavailable.

    The gate bounds in-flight operations to the connection budget: redis-py's cluster client
    raises instead of waiting when a node's connections are all in use, and a burst of
    requests must queue, not fail.
    """

    async def wrapper(self: StoreT, /, *args: P.args, **kwargs: P.kwargs) -> R:
        async with self._gate:
            try:
                return await method(self, *args, **kwargs)
            except (rexc.RedisError, rexc.RedisClusterException, OSError) as exc:
                if is_unavailable(exc):
                    raise DependencyUnavailable("redis") from exc
                raise

    functools.update_wrapper(wrapper, method)
    return wrapper


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError("expected bytes from Redis")
    return value


def _pairs(event: AuditEvent, *, without_action: bool = False) -> list[str]:
    """The event's field/value pairs, as the scripts append them to the stream."""
    fields = event.to_fields()
    if without_action:  # the script names the action it took
        del fields["action"]
    return [item for pair in fields.items() for item in pair]


class RedisStore:
    """Implements AdmissionPort, SessionPort and AuditStreamPort on Redis."""

    def __init__(
        self, client: aioredis.Redis | RedisCluster, keys: KeySpace, max_connections: int = 64
    ) -> None:
        self._client = client
        self._gate = asyncio.Semaphore(max_connections)
        self.keys = keys
        self.clustered = isinstance(client, RedisCluster)
        self._sources = {name: scripts.source(name) for name in scripts.NAMES}
        self._shas = {name: scripts.sha(source) for name, source in self._sources.items()}
        self.journal = AuditJournal()
        self._epochs_seen: dict[str, bytes] = {}
        self._next_epoch_check = 0.0
        self._replay: list[StreamEntry] = []

    # ---------------------------------------------------------------- lifecycle

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
            client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes],
                socket_timeout=None,
                socket_connect_timeout=5,
                max_connections=CALLS_PER_OPERATION * max_connections + 4,
                # At most once, as standalone: a command whose connection broke may have run
                # (and reached the replica before its master died), and redis-py's default
                # resend after re-reading the topology would count a request twice or
                # refuse a fresh nonce as reused. The error is a 503; the next request
                # meets the re-read topology.
                retry=Retry(NoBackoff(), retries=0),
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

    @_redis_call
    async def _prepare(self) -> None:
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()
        await self._load_scripts()
        await self._create_groups()

    async def _create_groups(self) -> None:
        """Create every audit stream's consumer group (and the stream) where it is missing:
        at start-up, and again whenever a restarted or flushed Redis lost them."""
        pipe = self._client.pipeline(transaction=False)
        for stream in self.keys.all_streams():
            pipe.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    async def _load_scripts(self) -> None:
        for name, source in self._sources.items():
            sha = await self._client.script_load(source)
            if sha != self._shas[name]:
                raise RuntimeError("Redis reported an unexpected script SHA")

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    @_redis_call
    async def ping(self) -> bool:
        """Readiness: a write succeeds in every slot a request writes to (the limiter slot
        and each slot group), so a full (OOM), demoted (READONLY) or loading Redis is not
        ready although it answers PING. Raises DependencyUnavailable when it is not."""
        pipe = self._client.pipeline(transaction=False)
        tags = [self.keys.global_limit(), *self.keys.all_streams()]
        for tag in tags:
            pipe.set(f"{tag}:health", b"1", px=HEALTH_KEY_TTL_MS)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, BaseException):
                raise result
        return True

    @_redis_call
    async def server_stats(self) -> tuple[int, int, float]:
        """``(used_memory, maxmemory, cpu seconds)`` summed over a cluster's nodes
        (maxmemory 0: no limit), for the dashboard's Redis memory and CPU panels."""
        memory = await self._client.info("memory")
        cpu = await self._client.info("cpu")
        memories = list(memory.values()) if self.clustered else [memory]
        cpus = list(cpu.values()) if self.clustered else [cpu]
        used = sum(int(node["used_memory"]) for node in memories)
        maximum = sum(int(node.get("maxmemory", 0)) for node in memories)
        seconds = sum(float(n["used_cpu_sys"]) + float(n["used_cpu_user"]) for n in cpus)
        return used, maximum, seconds

    # ---------------------------------------------------------------- script calls

    def _command(self, call: Call) -> tuple[Any, ...]:
        """The command line of one call: a script by name (EVALSHA), or an upper-case plain
        command such as ``GET``."""
        name, keys, args = call
        if name.isupper():
            return (name, *keys, *args)
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    async def _send(self, calls: Sequence[Call]) -> list[Any]:
        """Send each call once and return its raw reply or its error, in order.

        Standalone, the calls are written at once on one pooled connection and their replies
        read back: one round trip, without redis-py's ``Pipeline`` object (its reset, retry
        and shield machinery cost 0.08 ms per round trip here, a third of the call; measured
        in BENCHMARKS.md), and encoded by :func:`adapters.resp.pack`. A connection
        interrupted midway (cancelled, or broken) may hold unread replies, so it is closed,
        never handed to the next caller with them. On a cluster, EVALSHA cannot be
        pipelined: each call goes concurrently to its slot's node (redis-py follows
        MOVED/ASK).
        """
        client = self._client
        if isinstance(client, RedisCluster):
            return list(
                await asyncio.gather(
                    *(client.execute_command(*self._command(c)) for c in calls),
                    return_exceptions=True,
                )
            )
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(
                resp.pack([self._command(c) for c in calls]), check_health=False
            )
            replies: list[Any] = []
            for _ in calls:
                try:
                    replies.append(await connection.read_response())
                except rexc.ResponseError as exc:  # an error reply; the next ones follow
                    replies.append(exc)
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        return replies

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        """EVALSHA each call: one round trip per slot, all slots at once.

        A restarted or promoted server has no scripts (``SCRIPT LOAD`` is not replicated): the
        calls it answered NOSCRIPT are sent again, alone, once the scripts are reloaded. A
        call that succeeded is never sent twice: it may have claimed a nonce or counted a
        request, and a second send would turn a fresh nonce into "reused".
        """
        results = await self._send(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, rexc.NoScriptError)]
        if missing:
            await self._load_scripts()
            retried = await self._send([calls[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    # ---------------------------------------------------------------- AdmissionPort

    @_redis_call
    async def admit(self, request: AdmissionRequest) -> Admission:
        return await self._admit(request)

    async def _admit(self, request: AdmissionRequest) -> Admission:
        """Admission's calls, run and decoded (ungated: for use inside a gated method)."""
        calls = admission_calls(self.keys, request, clustered=self.clustered)
        results = await self._run(calls) if calls else []
        return decode_admission(request, [(c[0], r) for c, r in zip(calls, results, strict=True)])

    # ---------------------------------------------------------------- SessionPort

    @_redis_call
    async def load_for_initiate(self, user_id: str) -> InitiateSnapshot:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self.keys.user(user_id, "rec"))
        pipe.get(self.keys.user(user_id, "win"))
        cached, window = await pipe.execute()
        return self._snapshot(user_id, cached, window)

    @_redis_call
    async def admit_and_load(self, request: AdmissionRequest) -> tuple[Admission, InitiateSnapshot]:
        user_id = request.user_id or ""
        reads: list[Call] = [
            ("GET", [self.keys.user(user_id, "rec")], []),
            ("GET", [self.keys.user(user_id, "win")], []),
        ]
        calls = admission_calls(self.keys, request, clustered=self.clustered)
        results = await self._run([*calls, *reads])
        admission = decode_admission(
            request, [(c[0], r) for c, r in zip(calls, results, strict=False)]
        )
        cached, window = results[len(calls) :]
        return admission, self._snapshot(user_id, cached, window)

    @staticmethod
    def _snapshot(user_id: str, cached: bytes | None, window: bytes | None) -> InitiateSnapshot:
        return InitiateSnapshot(
            cached=None if cached is None else decode_cached(user_id, cached),
            window=decode_window(window) if window else None,
        )

    @_redis_call
    async def admit_and_reserve(
        self,
        request: AdmissionRequest,
        session_id: str,
        policy: Policy,
        lock_audit: AuditEvent,
    ) -> tuple[Admission, ReserveOutcome | None, CachedEnrollment | None]:
        user_id = request.user_id
        if user_id is None:
            return await self._admit(request), None, None
        read_cache: Call = ("GET", [self.keys.user(user_id, "rec")], [])
        if self.clustered:
            # The keys span slots: admit first, then reserve and read the cache (two trips).
            admission = await self._admit(request)
            if admission.refused or not session_names_user(session_id, user_id):
                return admission, None, None
            reply, cached = await self._run(
                [
                    self._reserve_call(session_id, user_id, request.now, policy, lock_audit),
                    read_cache,
                ]
            )
            reserved = self._reserve_outcome(
                session_id, user_id, request.now, policy, lock_audit, reply
            )
            return admission, reserved, self._decode_cached(user_id, reserved, cached)
        limits = request.limits
        nonce = request.nonce.nonce if request.nonce is not None else "-"
        (rl, user, reply), cached = await self._run(
            [
                (
                    "admit_and_reserve",
                    [
                        self.keys.global_limit(),
                        self.keys.ip_limit(request.client_ip),
                        self.keys.nonce(nonce),
                        self.keys.user(user_id, "tb"),
                        self.keys.session(session_id, user_id),
                        self.keys.user(user_id, "lock"),
                        self.keys.stream_of(user_id),
                    ],
                    [
                        epoch_ms(request.now),
                        limits.window_ms,
                        limits.global_limit,
                        limits.per_ip,
                        limits.per_user,
                        nonce_until_ms(request),
                        *self._lock_args(policy),
                        *_pairs(lock_audit),
                    ],
                ),
                read_cache,
            ]
        )
        admission = decode_admission(request, [("admit_rl", rl), ("admit_user", user)])
        if reply[0] == NOT_ADMITTED or not session_names_user(session_id, user_id):
            return admission, None, None
        reserved = self._reserve_outcome(
            session_id, user_id, request.now, policy, lock_audit, reply
        )
        return admission, reserved, self._decode_cached(user_id, reserved, cached)

    @staticmethod
    def _decode_cached(
        user_id: str, reserved: ReserveOutcome | None, cached: bytes | None
    ) -> CachedEnrollment | None:
        """The record cache entry read beside a reservation; none without a session."""
        return None if cached is None or reserved is None else decode_cached(user_id, cached)

    @_redis_call
    async def cache_record(self, user_id: str, entry: CachedEnrollment, ttl_ms: int) -> None:
        await self._run(
            [
                (
                    "cache_record",
                    [self.keys.user(user_id, "rec"), self.keys.user(user_id, "hold")],
                    [encode_cached(entry), ttl_ms],
                )
            ]
        )

    @_redis_call
    async def invalidate_record(self, user_id: str, hold_ms: int) -> None:
        await self._run(
            [
                (
                    "invalidate_record",
                    [self.keys.user(user_id, "rec"), self.keys.user(user_id, "hold")],
                    [hold_ms],
                )
            ]
        )

    @_redis_call
    async def store_session(
        self,
        issued: ChallengeIssued,
        now_ms: int,
        audit: AuditEvent,
        grace_ms: int,
        *,
        record_cache: RecordCache | None = None,
    ) -> None:
        session = issued.session
        window = issued.window if issued.window_opened else None
        await self._run(
            [
                (
                    "store_session",
                    [
                        self.keys.session(session.session_id, session.user_id),
                        self.keys.user(session.user_id, "win"),
                        self.keys.stream_of(session.user_id),
                        self.keys.user(session.user_id, "rec"),
                        self.keys.user(session.user_id, "hold"),
                    ],
                    [
                        encode_session(session),
                        session.expires_at_ms + grace_ms,
                        encode_window(window) if window else b"",
                        window.ends_at * 1000 if window else 0,
                        b"" if record_cache is None else encode_cached(record_cache.entry),
                        0 if record_cache is None else record_cache.ttl_ms,
                        *_pairs(audit),
                    ],
                )
            ]
        )
        self.journal.record(audit)

    @_redis_call
    async def load_session(self, session_id: str, user_id: str) -> Session | None:
        if not session_names_user(session_id, user_id):
            return None
        blob = await self._client.get(self.keys.session(session_id, user_id))
        return decode_session(session_id, user_id, _bytes(blob)) if blob else None

    @_redis_call
    async def reserve_attempt(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> ReserveOutcome | None:
        return await self._reserve(session_id, user_id, now, policy, lock_audit)

    @staticmethod
    def _lock_args(policy: Policy) -> list[Any]:
        """The lockout policy as reserve's arguments: threshold, memory, durations (ms)."""
        return [
            policy.lockout_threshold,
            1000 * policy.lockout_memory_seconds,
            ",".join(str(1000 * d) for d in policy.lockout_durations_seconds),
        ]

    async def _reserve(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> ReserveOutcome | None:
        if not session_names_user(session_id, user_id):
            return None
        (reply,) = await self._run(
            [self._reserve_call(session_id, user_id, now, policy, lock_audit)]
        )
        return self._reserve_outcome(session_id, user_id, now, policy, lock_audit, reply)

    def _reserve_call(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> Call:
        return (
            "reserve",
            [
                self.keys.session(session_id, user_id),
                self.keys.user(user_id, "lock"),
                self.keys.stream_of(user_id),
            ],
            [epoch_ms(now), *self._lock_args(policy), *_pairs(lock_audit)],
        )

    def _reserve_outcome(
        self,
        session_id: str,
        user_id: str,
        now: float,
        policy: Policy,
        lock_audit: AuditEvent,
        reply: Sequence[Any],
    ) -> ReserveOutcome | None:
        code, before, *written = reply
        reserved = self._reserved(session_id, user_id, now, policy, code, before, written)
        self._journal_lock(reserved, lock_audit)
        return reserved

    def _journal_lock(self, reserved: ReserveOutcome | None, lock_audit: AuditEvent) -> None:
        """The lock event is appended only by the reservation that locked the account."""
        if isinstance(reserved, AttemptReserved) and reserved.locked_account:
            self.journal.record(lock_audit)

    @staticmethod
    def _reserved(
        session_id: str,
        user_id: str,
        now: float,
        policy: Policy,
        code: int,
        before: Any,
        written: Sequence[Any],
    ) -> ReserveOutcome | None:
        """Replay the core's decision on the snapshot the script read, and check that the
        script decided, and wrote, the same."""
        if code == NO_SESSION:
            return None
        blob, *lockout_values = before
        session = decode_session(session_id, user_id, blob)
        out = reserve_attempt(session, decode_lockout(lockout_values), now=now, policy=policy)
        expected = {SessionClosed: CLOSED, AccountLocked: LOCKED, AttemptReserved: RESERVED}[
            type(out)
        ]
        if code != expected:
            raise ScriptDisagreement(f"reserve.lua returned {code}, the core decided {expected}")
        if isinstance(out, AttemptReserved):
            lockout, locked = written
            if decode_lockout(list(lockout)) != out.lockout:
                raise ScriptDisagreement("reserve.lua wrote a lockout other than the core's")
            if bool(locked) != out.locked_account:
                raise ScriptDisagreement("reserve.lua audited a lock unlike the core")
        return out

    @_redis_call
    async def release_attempt(
        self, session_id: str, user_id: str, *, attempt: int, now: float, policy: Policy
    ) -> AttemptReleased | None:
        if not session_names_user(session_id, user_id):
            return None
        ((blob, before, returned, after),) = await self._run(
            [
                (
                    "release",
                    [self.keys.session(session_id, user_id), self.keys.user(user_id, "lock")],
                    [
                        attempt,
                        epoch_ms(now),
                        policy.lockout_threshold,
                        1000 * policy.lockout_memory_seconds,
                    ],
                )
            ]
        )
        session = decode_session(session_id, user_id, blob) if blob else None
        out = release_attempt(
            session, decode_lockout(list(before)), attempt=attempt, now=now, policy=policy
        )
        if bool(returned) != (out.session is not None):
            raise ScriptDisagreement("release.lua gave the session attempt back unlike the core")
        if decode_lockout(list(after)) != out.lockout:
            raise ScriptDisagreement("release.lua left a lockout other than the core's")
        return out

    @_redis_call
    async def conclude_attempt(
        self,
        session_id: str,
        user_id: str,
        *,
        attempt: int,
        key_unwrapped: bool,
        now: float,
        token_entropy: bytes,
        policy: Policy,
        audit: AuditEvent,
    ) -> ConcludeOutcome | None:
        if not session_names_user(session_id, user_id):
            return None
        token = issue_token(user_id, token_entropy, now=now, policy=policy)
        ((code, blob),) = await self._run(
            [
                (
                    "conclude",
                    [
                        self.keys.session(session_id, user_id),
                        self.keys.user(user_id, "lock"),
                        self.keys.token(user_id, token.digest),
                        self.keys.user(user_id, "tokidx"),
                        self.keys.stream_of(user_id),
                    ],
                    [
                        attempt,
                        "1" if key_unwrapped else "0",
                        f"{session_id}:{token.expires_at_ms}:{token.issued_at_ms}",
                        token.expires_at_ms,
                        token.digest.hex(),
                        AuditAction.VERIFICATION_SUCCEEDED.value,
                        AuditAction.VERIFICATION_FAILED.value,
                        *_pairs(audit, without_action=True),
                    ],
                )
            ]
        )
        if code == NO_SESSION:
            return None
        # An attempt that was never reserved (NEVER_RESERVED) makes the core raise
        # LocalProtocolError.
        out = conclude_attempt(
            decode_session(session_id, user_id, blob),
            attempt=attempt,
            key_unwrapped=key_unwrapped,
            now=now,
            token_entropy=token_entropy,
            policy=policy,
        )
        applied = isinstance(out, VerificationSucceeded | VerificationFailed)
        if code != (APPLIED if applied else CLOSED):
            raise ScriptDisagreement(f"conclude.lua returned {code}, the core decided {out}")
        if applied:
            succeeded = isinstance(out, VerificationSucceeded)
            action = (
                AuditAction.VERIFICATION_SUCCEEDED if succeeded else AuditAction.VERIFICATION_FAILED
            )
            self.journal.record(replace(audit, action=action))
        return out

    @_redis_call
    async def token_info(self, token: BearerToken) -> TokenInfo | None:
        value = await self._client.get(self.keys.token(token.user_id, token.digest))
        if not value:
            return None
        session_id, expires, issued, factors = _bytes(value).decode().rsplit(":", 3)
        return TokenInfo(
            user_id=token.user_id,
            session_id=session_id,
            expires_at_ms=int(expires),
            issued_at_ms=int(issued),
            factors_proven=int(factors),
        )

    @_redis_call
    async def revoke_token(self, token: BearerToken, audit: AuditEvent) -> bool:
        (revoked,) = await self._run(
            [
                (
                    "revoke",
                    [
                        self.keys.token(token.user_id, token.digest),
                        self.keys.user(token.user_id, "tokidx"),
                        self.keys.stream_of(token.user_id),
                    ],
                    [token.digest.hex(), *_pairs(audit)],
                )
            ]
        )
        if revoked:
            self.journal.record(audit)
        return bool(revoked)

    @_redis_call
    async def revoke_user_tokens(self, user_id: str, audit: AuditEvent) -> int:
        (revoked,) = await self._run(
            [
                (
                    "revoke_user",
                    [self.keys.user(user_id, "tokidx"), self.keys.stream_of(user_id)],
                    [self.keys.token(user_id, b""), *_pairs(audit)],
                )
            ]
        )
        self.journal.record(audit)
        return int(revoked)

    @_redis_call
    async def forget_user(self, user_id: str, audit: AuditEvent) -> None:
        token_prefix = self.keys.token(user_id, b"")
        await self._run(
            [
                (
                    "forget_user",
                    [
                        self.keys.user(user_id, "rec"),
                        self.keys.user(user_id, "win"),
                        self.keys.user(user_id, "lock"),
                        self.keys.user(user_id, "tokidx"),
                        self.keys.stream_of(user_id),
                    ],
                    [token_prefix, *_pairs(audit)],
                )
            ]
        )
        self.journal.record(audit)

    @_redis_call
    async def count_merchant_lock(self, merchant_id: str, now: float, window_ms: int) -> int:
        (count,) = await self._run(
            [("count_lock", [self.keys.merchant_locks(merchant_id)], [epoch_ms(now), window_ms])]
        )
        return int(count)

    # ---------------------------------------------------------------- PspSessionPort

    @_redis_call
    async def store_psp_session(
        self, psp_session_id: str, data: Mapping[str, Any], ttl_ms: int
    ) -> None:
        await self._client.set(self.keys.psp(psp_session_id), json.dumps(dict(data)), px=ttl_ms)

    @_redis_call
    async def load_psp_session(self, psp_session_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(self.keys.psp(psp_session_id))
        if not raw:
            return None
        data: dict[str, Any] = json.loads(_bytes(raw))
        return data

    # ---------------------------------------------------------------- AuditStreamPort

    @_redis_call
    async def append(self, event: AuditEvent) -> None:
        await self._client.xadd(self.keys.stream_of(event.user_id), event.to_fields())  # type: ignore[arg-type]
        self.journal.record(event)

    @_redis_call
    async def read_batch(
        self, consumer: str, count: int, reclaim_idle_ms: int, *, reclaim: bool = True
    ) -> list[StreamEntry]:
        if time.monotonic() >= self._next_epoch_check:
            self._next_epoch_check = time.monotonic() + EPOCH_CHECK_SECONDS
            if await self._redis_lost_data():
                self._replay += [
                    StreamEntry(stream=REPLAYED, entry_id=str(i), event=event)
                    for i, event in enumerate(self.journal.recent())
                ]
        if self._replay:  # first what Redis lost, from this instance's journal
            replayed, self._replay = self._replay[:count], self._replay[count:]
            return replayed
        streams = self.keys.all_streams()
        pipe = self._client.pipeline(transaction=False)
        if reclaim:
            for stream in streams:
                pipe.xautoclaim(stream, CONSUMER_GROUP, consumer, reclaim_idle_ms, count=count)
        if self.clustered:  # a multi-stream read must stay within one slot
            for stream in streams:
                pipe.xreadgroup(CONSUMER_GROUP, consumer, {stream: ">"}, count=count)
        else:  # one command reads every stream
            pipe.xreadgroup(CONSUMER_GROUP, consumer, dict.fromkeys(streams, ">"), count=count)
        results = await self._without_lost_groups(await pipe.execute(raise_on_error=False))
        claimed = results[: len(streams)] if reclaim else []
        entries: list[StreamEntry] = []
        for stream, reply in zip(streams, claimed, strict=False):
            if reply is not None:
                entries += self._entries(stream, reply[1])
        for read in results[len(claimed) :]:
            for stream, messages in read or ():
                entries += self._entries(stream.decode(), messages)
        return entries

    async def _redis_lost_data(self) -> bool:
        """Whether any slot group lost its data since the last look: each holds an epoch
        key, set once (``SET NX GET``); one missing or changed means that its node restarted
        empty, was flushed, or failed over to a replica that missed it."""
        fresh = secrets.token_hex(8).encode()  # never a value set before a loss
        pipe = self._client.pipeline(transaction=False)
        keys = [self.keys.epoch(group) for group in range(self.keys.groups)]
        for key in keys:
            pipe.set(key, fresh, nx=True, get=True)
        lost = False
        for key, found in zip(keys, await pipe.execute(), strict=True):
            seen = self._epochs_seen.get(key)
            current = fresh if found is None else _bytes(found)
            lost = lost or (seen is not None and seen != current)
            self._epochs_seen[key] = current
        return lost

    async def _without_lost_groups(self, results: list[Any]) -> list[Any]:
        """Replies of a stream pipeline, with ``NOGROUP`` replies as ``None`` once the groups
        are recreated (a restarted or flushed Redis lost them, and the events they held)."""
        if any(is_missing_group(r) for r in results):
            await self._create_groups()
        for result in results:
            if isinstance(result, BaseException) and not is_missing_group(result):
                raise result
        return [None if is_missing_group(r) else r for r in results]

    @staticmethod
    def _entries(stream: str, messages: Sequence[Any]) -> list[StreamEntry]:
        out = []
        for entry_id, fields in messages:
            if fields is None:  # deleted while pending
                continue
            decoded = {k.decode(): v.decode() for k, v in fields.items()}
            out.append(
                StreamEntry(
                    stream=stream, entry_id=entry_id.decode(), event=AuditEvent.from_fields(decoded)
                )
            )
        return out

    @_redis_call
    async def acknowledge(self, entries: Sequence[StreamEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            if entry.stream != REPLAYED:  # replayed from the journal: nothing to acknowledge
                by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        if not by_stream:
            return
        if not self.clustered:  # one write of every stream's XACK and XDEL (see _send)
            calls: list[Call] = []
            for stream, ids in by_stream.items():
                calls += [("XACK", [stream], [CONSUMER_GROUP, *ids]), ("XDEL", [stream], ids)]
            await self._without_lost_groups(await self._send(calls))
            return
        pipe = self._client.pipeline(transaction=False)  # grouped by node
        for stream, ids in by_stream.items():
            pipe.xack(stream, CONSUMER_GROUP, *ids)
            pipe.xdel(stream, *ids)
        await self._without_lost_groups(await pipe.execute(raise_on_error=False))

    @_redis_call
    async def backlog(self) -> int:
        pipe = self._client.pipeline(transaction=False)
        for stream in self.keys.all_streams():
            pipe.xlen(stream)
        return sum(await pipe.execute())


if TYPE_CHECKING:  # mypy --strict proves the adapter satisfies its port(s)

    def _is_state_store(store: RedisStore) -> StateStore:
        return store
