"""CPU per Redis round trip from Trio: across the bridge into redis-py, or on the Trio pool.

    python -m benchmarks.round_trips [--calls 20000] [--rounds 3]

One process, one Trio run with trio-asyncio's loop open (as in the server), one standalone
Redis (ZEROPAY_TEST_REDIS_URL, default local). Each call is the store's ``load_for_initiate``:
two GETs in one round trip, the shape of a request step. The two paths alternate, ``--rounds``
times each, sequentially (one call in flight: the figure is a call's own cost, not a
concurrency effect), and each prints this process's CPU microseconds per call (user +
system: the loopback system calls included) and the wall time per call. Keys under a prefix of
its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import trio
import trio_asyncio

from adapters.bridge import aio, bridged
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from tests.services import REDIS_URL, delete_prefix, unique_prefix


async def _measure(store: RedisStore, calls: int, user: str) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await store.load_for_initiate(user)
    return (
        1e6 * (time.process_time() - cpu) / calls,
        1e6 * (time.perf_counter() - wall) / calls,
    )


async def run(calls: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    prefix = unique_prefix()
    results: dict[str, list[tuple[float, float]]] = {"bridge": [], "trio": []}
    try:
        async with trio_asyncio.open_loop():
            adapter = await aio(RedisStore.connect)(url=REDIS_URL, keys=KeySpace(prefix))
            try:
                paths = {
                    "bridge": bridged(adapter, dependency="redis", timeout=5),
                    "trio": from_trio(adapter, timeout=5),
                }
                user = str(uuid.uuid4())
                for store in paths.values():  # connections opened, code paths warm
                    await _measure(store, 200, user)
                for _ in range(rounds):
                    for name, store in paths.items():
                        results[name].append(await _measure(store, calls, user))
            finally:
                await aio(adapter.aclose)()
    finally:
        delete_prefix(REDIS_URL, prefix)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = trio.run(run, args.calls, args.rounds)
    for name, figures in results.items():
        cpu = statistics.median(c for c, _ in figures)
        wall = statistics.median(w for _, w in figures)
        print(f"{name:>6}: {cpu:6.1f} µs CPU, {wall:6.1f} µs wall per round trip (median)")
    ratio = statistics.median(c for c, _ in results["trio"]) / statistics.median(
        c for c, _ in results["bridge"]
    )
    print(f"trio / bridge CPU: {ratio:.2f}x")


if __name__ == "__main__":
    main()
