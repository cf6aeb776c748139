"""One master's failover stops only the users whose keys it holds.

Found by attack: the global, per-IP and merchant limiters shared one hash slot, ``{zp:rl}``;
while the master owning it failed over, every request was 503 for about 3.5 s, including
those of users whose keys were on healthy masters.

Here a 3+3 Cluster under load (each user from an address of its own, as behind a proxy), and
each of the three masters SIGKILLed in turn, its replica promoted before the next. During
each failover, a request answered 503 must be one of a user whose slot the killed master
held: a request's limiters (its address's shard, its merchant's slot) fail open meanwhile,
its nonce lives with its session in the user's slot. The share of requests that saw 503 per
master is reported (``ZEROPAY_FAULT_REPORT``).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import redis
import trio
from redis.crc import key_slot

from adapters.redis_keys import KeySpace
from tests.faults.history import Load
from tests.faults.stack import running_stack
from tests.faults.test_cluster_failover import _masters, _promoted, _replica_of
from tests.faults.test_faults import RECOVERY_DEADLINE, _recovered_after
from tests.services import RedisCluster, wait_until


def _slots_of(cluster: RedisCluster, master_port: int, dead: set[int]) -> set[int]:
    """The hash slots ``master_port`` serves, as a surviving node reports them."""
    for _, port in cluster.nodes:
        if port == master_port or port in dead:
            continue
        try:
            ranges = redis.Redis(port=port).execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SLOTS"
            )
        except redis.ConnectionError:
            continue
        return {
            slot
            for start, end, owner, *_ in ranges
            if int(owner[1]) == master_port
            for slot in range(int(start), int(end) + 1)
        }
    raise AssertionError("no node answers")


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__':ResourceWarning"
)
async def test_each_masters_failover_stops_only_its_own_users(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    wait_until(lambda: len(_masters(cluster)) == 3, timeout=30, what="replicas in sync")
    masters = _masters(cluster)
    keys = KeySpace()  # the servers' (REDIS_PREFIX unset)
    trusted = {"TRUSTED_PROXIES": "127.0.0.0/8"}
    with running_stack(tmp_path, cluster=cluster, extra_env=trusted) as stack:
        load = Load([s.url for s in stack.servers], stack.merchant_key, honest=30, addresses=True)
        await load.enroll()
        rows = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run)
            await trio.sleep(3)  # every user's record cached, sessions flowing
            dead: set[int] = set()
            for port, pid in masters:
                held = _slots_of(cluster, port, dead)
                replica = _replica_of(cluster, port, dead)
                killed_at = trio.current_time()
                os.kill(pid, signal.SIGKILL)
                dead.add(port)
                survivors = [p for _, p in cluster.nodes if p not in dead and p != replica]
                with trio.fail_after(RECOVERY_DEADLINE):
                    while not await trio.to_thread.run_sync(
                        _promoted, replica, [replica, *survivors]
                    ):
                        await trio.sleep(0.1)
                promoted_at = trio.current_time()
                await _recovered_after(load, promoted_at)
                await trio.sleep(1)
                window = [r for r in load.history.records if r.started >= killed_at]
                unavailable = [r for r in window if r.status == 503]
                strangers = [
                    r
                    for r in unavailable
                    if key_slot(keys.user(r.user, "rec").encode()) not in held
                ]
                assert not strangers, f"503 for users on healthy masters: {strangers[:3]}"
                users = load.honest + load.mixed
                its_users = sum(key_slot(keys.user(u, "rec").encode()) in held for u in users)
                rows.append(
                    {
                        "master": port,
                        "failover_s": round(promoted_at - killed_at, 2),
                        "requests": len(window),
                        "share_503": round(len(unavailable) / max(1, len(window)), 3),
                        "its_users_share": round(its_users / len(users), 3),
                    }
                )
            load.stopped.set()
        load.history.check()
        assert all(s.process.poll() is None for s in stack.servers)
    print(json.dumps(rows))
    if path := os.environ.get("ZEROPAY_FAULT_REPORT"):
        with open(path, "a") as out:
            for row in rows:
                out.write(json.dumps({"fault": "cluster-master-killed", **row}) + "\n")
