"""The audit streams on Redis: one per slot group, read by the flushers' consumer group.

An event is appended by the script that makes the change it records (same slot, same atomic
step) and journalled in this instance's memory (:class:`adapters.audit_journal.AuditJournal`):
if Redis loses data before a flusher read it (restart empty, flush, failover to a replica that
missed it), the loss shows in the slot groups' epoch keys, and the journal replays it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from zeropay_proto.audit import AuditEvent

from .ports import (
    StreamEntry,
)
from .redis_errors import is_missing_group
from .redis_keys import (
    KeySpace,
)
from .redis_scripts import (
    Call,
    ScriptRunner,
    as_bytes,
    event_pairs,
    redis_call,
)

CONSUMER_GROUP = "flushers"
#: The stream name of events replayed from the journal after Redis lost data.
REPLAYED = "replayed-from-journal"
#: How often the flusher's reads look for lost data (one SET NX GET per slot group).
EPOCH_CHECK_SECONDS = 1.0


class RedisAuditStream(ScriptRunner):
    """AuditStreamPort on Redis."""

    def __init__(
        self, client: aioredis.Redis | RedisCluster, keys: KeySpace, max_connections: int = 64
    ) -> None:
        super().__init__(client, keys, max_connections)
        self._epochs_seen: dict[str, bytes] = {}
        self._next_epoch_check = 0.0
        self._replay: list[StreamEntry] = []

    async def _create_groups(self) -> None:
        """Create every audit stream's consumer group (and the stream) where it is missing:
        at start-up, and again whenever a restarted or flushed Redis lost them."""
        pipe = self._client.pipeline(transaction=False)
        for stream in self.keys.all_streams():
            pipe.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    @redis_call
    async def append(self, event: AuditEvent) -> None:
        await self._run(
            [("XADD", [self.keys.stream_of(event.user_id)], ["*", *event_pairs(event)])]
        )
        self.journal.record(event)

    @redis_call
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
            current = fresh if found is None else as_bytes(found)
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

    @redis_call
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

    @redis_call
    async def backlog(self) -> int:
        pipe = self._client.pipeline(transaction=False)
        for stream in self.keys.all_streams():
            pipe.xlen(stream)
        return sum(await pipe.execute())
