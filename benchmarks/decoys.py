"""Can timing tell an enrolled user from an unknown one? Known-vs-unknown latency, interleaved.

    python -m benchmarks.server &                   # Redis + PostgreSQL, production mode
    python -m benchmarks.decoys --url http://127.0.0.1:8080 --pairs 2000

Each pair opens a session and sends one wrong verification for an enrolled user and for an
unknown one (a decoy), back to back on one keep-alive connection, alternating which goes
first; every user gets at most four wrong answers, so no account locks (that would change
the work done). Prints the median initiate and verify latency of each kind and their
difference: the service is meant to do the same storage and crypto work for both, so the
difference should be noise-sized. A closed loop, one request at a time: the figures are the
service's own latency, not queueing.

Plain asyncio, no trio-asyncio (docs/stack.md, "trio-asyncio"). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Mapping
from urllib.parse import urlparse

from benchmarks.load import FACTORS, Connection, api_key, digest

#: Wrong answers per user: below the lockout threshold of 5.
ATTEMPTS_PER_USER = 4


async def _timed(
    conn: Connection, method: str, path: str, body: Mapping[str, object]
) -> tuple[int, float, bytes]:
    started = time.perf_counter()
    status, payload = await conn.request(method, path, json.dumps(body).encode())
    return status, time.perf_counter() - started, payload


async def _enroll(conn: Connection, user: str) -> None:
    body = {
        "user_uuid": user,
        "device_id": "bench",
        "factors": {f: digest(user, f) for f in FACTORS},
    }
    status, _, _ = await _timed(conn, "POST", "/v1/enrollment/store", body)
    if status != 201:
        raise SystemExit(f"enrollment failed with {status}")


async def _wrong_attempt(conn: Connection, user: str) -> tuple[float, float]:
    """One session and one wrong verification: (initiate seconds, verify seconds)."""
    status, initiate, payload = await _timed(
        conn, "POST", "/v1/verification/initiate", {"user_uuid": user, "risk_level": "HIGH"}
    )
    if status != 200:
        raise SystemExit(f"initiate answered {status}")
    challenge = json.loads(payload)
    wrong = dict.fromkeys(challenge["required_factors"], "00" * 32)
    body = {"session_id": challenge["session_id"], "user_uuid": user, "factors": wrong}
    status, verify, _ = await _timed(conn, "POST", "/v1/verification/verify", body)
    if status != 401:
        raise SystemExit(f"a wrong verification answered {status}")
    return initiate, verify


def _describe(name: str, seconds: list[float]) -> str:
    q = statistics.quantiles([s * 1000 for s in seconds], n=4)
    return f"{name:>8}: median {q[1]:.3f} ms (quartiles {q[0]:.3f}-{q[2]:.3f} ms)"


async def run(url: str, pairs: int, settle: float) -> None:
    parsed = urlparse(url)
    conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80, api_key())
    users = -(-pairs // ATTEMPTS_PER_USER)
    known = [str(uuid.uuid4()) for _ in range(users)]
    unknown = [str(uuid.uuid4()) for _ in range(users)]
    print(f"enrolling {users} users ...", flush=True)
    for user in known:
        await _enroll(conn, user)
    # Users who enrolled a while ago: a fresh enrollment holds its record uncached for 8 s
    # (README, "The record cache"), during which its initiates read PostgreSQL; --settle 0
    # measures that window.
    print(f"waiting {settle:g} s for the enrollments' holds ...", flush=True)
    await asyncio.sleep(settle)
    timings: dict[str, dict[str, list[float]]] = {
        kind: {"initiate": [], "verify": []} for kind in ("known", "unknown")
    }
    for i in range(pairs):
        order = [("known", known), ("unknown", unknown)]
        for kind, group in order if i % 2 == 0 else order[::-1]:
            initiate, verify = await _wrong_attempt(conn, group[i // ATTEMPTS_PER_USER])
            timings[kind]["initiate"].append(initiate)
            timings[kind]["verify"].append(verify)
    conn.close()
    print(f"{pairs} interleaved pairs against {url} (one request at a time)")
    for step in ("initiate", "verify"):
        print(step)
        for kind in ("known", "unknown"):
            print("  " + _describe(kind, timings[kind][step]))
        difference = statistics.median(timings["known"][step]) - statistics.median(
            timings["unknown"][step]
        )
        print(f"  known - unknown median: {difference * 1e6:+.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds between enrolling and measuring (10)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.url, args.pairs, args.settle))


if __name__ == "__main__":
    main()
