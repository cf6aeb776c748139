"""Open-loop load against a running ZeroPay server: initiate, verify, enroll, a mix, or
`live` (the trivial /health/live route: the stack's own floor, for a same-run baseline).
`verify-passkey` is verify by users who registered a passkey when they enrolled: each session
(42.5 EUR) also challenges the passkey, and the generator signs each attempt's challenge as a
browser's authenticator would (ES256), so verify-passkey beside verify is the added cost of
the possession factor. The server needs WEBAUTHN_RP_ID=localhost (``benchmarks.server`` sets
it).

    python -m benchmarks.load --url http://127.0.0.1:8080 --scenario initiate --rate 1000
    python -m benchmarks.load --scenario initiate --ramp 250:2000:250 --seconds 8
    python -m benchmarks.load --scenario mix --tiers 1000,2000,5000

Requests arrive at a constant rate, whatever the server does (open loop); each latency is
measured from the request's *scheduled* time, so time spent waiting for a free connection is
counted, not hidden ("coordinated omission"). Reported per tier: achieved rate, P50/P95/P99,
errors by status, and this generator's own CPU use, so a saturated generator is visible.

This process uses plain asyncio and a small HTTP/1.1 client over keep-alive connections; it
never imports trio-asyncio (which would slow asyncio down, docs/stack.md). Loopback only.
The server's rate limits must allow the load (set RATE_LIMIT_* high): the limiters still run.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import resource
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from tests.authenticator import SoftAuthenticator, b64decode
from zeropay_proto import Factor
from zeropay_proto.answers import example_answer, factor_digest

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")


def digest(user: str, factor: str) -> str:
    """The client's digest of the example answer (:mod:`zeropay_proto.answers`)."""
    named = Factor(factor)
    return factor_digest(user, named, example_answer(named, "bench")).hex()


#: Where ``python -m benchmarks.server`` leaves the merchant key it added (``ZEROPAY_API_KEY``
#: overrides it).
API_KEY_FILE = ".run/bench-merchant-key"


def api_key() -> str:
    """The merchant key the load tools send as ``X-API-Key``."""
    if key := os.environ.get("ZEROPAY_API_KEY"):
        return key
    try:
        with open(API_KEY_FILE) as saved:
            return saved.read().strip()
    except FileNotFoundError:
        raise SystemExit(
            f"no merchant key: start python -m benchmarks.server (it writes {API_KEY_FILE}) "
            "or set ZEROPAY_API_KEY"
        ) from None


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are sequential."""

    def __init__(self, host: str, port: int, key: str | None = None) -> None:
        self.host, self.port = host, port
        self.key_header = f"X-API-Key: {key}\r\n" if key else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        headers = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"X-Nonce: {uuid.uuid4()}\r\nX-Timestamp: {int(time.time() * 1000)}\r\n"
            f"{self.key_header}"
            f"Content-Type: application/json\r\nContent-Length: {len(body or b'')}\r\n\r\n"
        )
        try:
            self.writer.write(headers.encode() + (body or b""))
            status_line = await self.reader.readline()
            length, closing = 0, False
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"connection":
                    closing = value.strip().lower() == b"close"
            payload = await self.reader.readexactly(length) if length else b""
            if closing:  # the server ends the connection (every 1,000 requests, or shutdown)
                self.close()
            return int(status_line.split()[1]), payload
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            self.close()
            return 0, b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tier:
    target: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cpu: float = 0.0
    elapsed: float = 0.0

    def report(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

        total = sum(self.statuses.values())
        succeeded = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        errors = total - succeeded
        return {
            "target_rps": self.target,
            # Only answers that did the work count; errors are reported apart.
            "achieved_rps": round(succeeded / self.elapsed, 1) if self.elapsed else 0.0,
            "requests": total,
            "succeeded": succeeded,
            "p50_ms": round(pct(0.50), 2),
            "p95_ms": round(pct(0.95), 2),
            "p99_ms": round(pct(0.99), 2),
            "max_ms": round(1000 * lat[-1], 2) if lat else float("nan"),
            "mean_ms": round(1000 * statistics.fmean(lat), 2) if lat else float("nan"),
            "error_rate": round(errors / total, 4) if total else 0.0,
            "statuses": dict(sorted(self.statuses.items())),
            "generator_cpu": round(self.cpu, 2),
        }


Op = Callable[[Connection], Awaitable[int]]


class Scenario:
    """Prepares users and sessions through the API, then yields one request per arrival."""

    def __init__(self, name: str, users: int, origin: str = "") -> None:
        self.name = name
        self.users = [str(uuid.uuid4()) for _ in range(users)]
        #: user, session id, factors, and the passkey request if the session has one.
        self.sessions: list[tuple[str, str, list[str], dict[str, Any] | None]] = []
        #: verify-passkey: each user's authenticator, and the origin it signs for.
        self.devices: dict[str, SoftAuthenticator] = {}
        self.origin = origin

    async def enroll(self, conn: Connection, user: str) -> int:
        with_passkey = self.name == "verify-passkey"
        body = {
            "user_uuid": user,
            "device_id": "bench",
            "factors": {f: digest(user, f) for f in FACTORS},
            "register_passkey": with_passkey,
        }
        status, payload = await conn.request(
            "POST", "/v1/enrollment/store", json.dumps(body).encode()
        )
        if status == 201 and with_passkey:
            status = await self._register(conn, user, json.loads(payload)["passkey_options"])
        return status

    async def _register(self, conn: Connection, user: str, options: dict[str, Any]) -> int:
        device = SoftAuthenticator(credential_id=uuid.uuid4().bytes)
        credential = device.register(
            options["rp"]["id"], self.origin, b64decode(options["challenge"])
        )
        body = json.dumps({"user_uuid": user, "credential": credential}).encode()
        status, _ = await conn.request("POST", "/v1/passkeys", body)
        self.devices[user] = device
        return status

    async def initiate(self, conn: Connection, user: str | None = None) -> tuple[int, bytes]:
        user = user or random.choice(self.users)
        body = {
            "user_uuid": user,
            "amount": 4250,
            "currency": "EUR",
        }
        return await conn.request("POST", "/v1/verification/initiate", json.dumps(body).encode())

    async def verify(self, conn: Connection) -> int:
        user, sid, factors, passkey = self.sessions.pop()
        body: dict[str, Any] = {
            "session_id": sid,
            "user_uuid": user,
            "factors": {f: digest(user, f) for f in factors if f != "PASSKEY"},
        }
        if passkey is not None:
            body["passkey"] = self.devices[user].answer(self.origin, passkey)
        status, _ = await conn.request("POST", "/v1/verification/verify", json.dumps(body).encode())
        return status

    async def open_sessions(self, conns: list[Connection], count: int) -> None:
        async def one(conn: Connection, n: int) -> None:
            for _ in range(n):
                user = random.choice(self.users)
                status, payload = await self.initiate(conn, user)
                if status == 200:
                    data = json.loads(payload)
                    self.sessions.append(
                        (
                            user,
                            data["session_id"],
                            data["required_factors"],
                            data.get("passkey"),
                        )
                    )

        share = -(-count // len(conns))
        await asyncio.gather(*(one(c, share) for c in conns))

    def op(self) -> Op:
        if self.name == "live":  # the floor: the same stack answering a trivial JSON route
            return lambda conn: self._status(conn.request("GET", "/health/live", None))
        if self.name == "initiate":
            return lambda conn: self._status(self.initiate(conn))
        if self.name in ("verify", "verify-passkey"):
            return self.verify
        if self.name == "enroll":
            return lambda conn: self.enroll(conn, str(uuid.uuid4()))
        # mix: the shape of real traffic, one initiate per verify, a few status reads.
        choice = random.random()
        if choice < 0.45 or not self.sessions:
            return lambda conn: self._status(self.initiate(conn))
        if choice < 0.9:
            return self.verify
        return lambda conn: self._status(
            conn.request("GET", f"/v1/verification/status/{self.sessions[-1][1]}", None)
        )

    @staticmethod
    async def _status(call: Awaitable[tuple[int, bytes]]) -> int:
        return (await call)[0]


async def run_tier(pool: asyncio.Queue[Connection], scenario: Scenario, tier: Tier) -> None:
    interval = 1.0 / tier.target
    start = time.perf_counter()
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    tasks = []

    async def one(scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = await scenario.op()(conn)
        except IndexError:  # ran out of prepared sessions
            status = -1
        finally:
            pool.put_nowait(conn)
        tier.latencies.append(time.perf_counter() - scheduled)
        tier.statuses[status] += 1

    i = 0
    while (scheduled := start + i * interval) < start + tier.seconds:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled)))
        i += 1
    await asyncio.gather(*tasks)
    tier.elapsed = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    used = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    tier.cpu = used / tier.elapsed


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    url = urlparse(args.url)
    if not ipaddress.ip_address(url.hostname or "").is_loopback:
        raise SystemExit("loopback addresses only")
    key = api_key()
    conns = [
        Connection(url.hostname or "127.0.0.1", url.port or 80, key)
        for _ in range(args.connections)
    ]
    origin = f"http://localhost:{url.port or 80}"  # the passkeys' relying party
    scenario = Scenario(args.scenario, args.users, origin)

    async def each_user(step: Callable[[Connection, str], Awaitable[object]]) -> None:
        """``step`` once for every user, as many at once as there are connections."""
        for i in range(0, len(scenario.users), len(conns)):
            batch = scenario.users[i : i + len(conns)]
            await asyncio.gather(*(step(c, u) for c, u in zip(conns, batch, strict=False)))

    if args.scenario not in {"enroll", "live"}:
        print(f"setup: enrolling {args.users} users ...", flush=True)
        await each_user(scenario.enroll)
    tiers = [Tier(t, args.seconds) for t in args.targets]
    if args.scenario not in {"enroll", "live"} and args.settle > 0:
        print(f"setup: waiting {args.settle:g} s for the enrollments' holds ...", flush=True)
        await asyncio.sleep(args.settle)
        print("setup: one initiate per user (their records are cached now) ...", flush=True)
        await each_user(scenario.initiate)
    if args.scenario in {"verify", "verify-passkey", "mix"}:
        needed = int(sum(t.target * t.seconds for t in tiers) * 1.1) + 10
        print(f"setup: opening {needed} sessions ...", flush=True)
        await scenario.open_sessions(conns, needed)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in conns:
        pool.put_nowait(conn)
    reports = []
    for tier in tiers:
        print(json.dumps({"tier_start": tier.target}), flush=True)  # for benchmarks.cpu
        await run_tier(pool, scenario, tier)
        report = {"scenario": args.scenario, **tier.report()}
        reports.append(report)
        print(json.dumps(report), flush=True)
        if args.ramp and (report["p99_ms"] > 300 or report["error_rate"] > 0.005
                          or report["achieved_rps"] < 0.95 * tier.target):  # fmt: skip
            print(
                f"knee: {args.scenario} saturates between the previous tier and "
                f"{tier.target:.0f} req/s",
                flush=True,
            )
            break
    for conn in conns:
        conn.close()
    return reports


def pbkdf2_limit(seconds: float = 4.0) -> float:
    """Cores x one core's PBKDF2-HMAC-SHA256 rate at 100,000 iterations (cryptography)."""
    from zeropay_proto.crypto import derive_kek

    derive_kek(b"m" * 99, b"s" * 16, 100_000)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        derive_kek(b"m" * 99, b"s" * 16, 100_000)
        count += 1
    return (os.cpu_count() or 1) * count / (time.perf_counter() - start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument(
        "--scenario",
        choices=["initiate", "verify", "verify-passkey", "enroll", "mix", "live"],
        default="initiate",
    )
    parser.add_argument("--rate", type=float, help="one tier at this many requests/s")
    parser.add_argument("--tiers", help="comma-separated rates, e.g. 1000,2000,5000")
    parser.add_argument("--ramp", help="START:STOP:STEP; stops at the knee")
    parser.add_argument("--seconds", type=float, default=10.0, help="per tier (10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=200, help="enrolled during setup")
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="initiate, verify and mix: seconds to wait after enrolling, so that the users' "
        "records can be cached as those of users who enrolled earlier are (enrolling holds a "
        "record uncached for 8 s with the default deadlines: README, 'The record cache'); "
        "0 measures freshly enrolled users, whose requests all read PostgreSQL (10)",
    )
    parser.add_argument("--json-out", help="also write the reports to this file")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first measure this machine's PBKDF2 limit (cores x one core's rate, 100,000 "
        "iterations) and report each tier's rate as a ratio to it",
    )
    args = parser.parse_args(argv)
    if args.ramp:
        start, stop, step = (float(x) for x in args.ramp.split(":"))
        args.targets = [start + i * step for i in range(int((stop - start) / step) + 1)]
    elif args.tiers:
        args.targets = [float(x) for x in args.tiers.split(",")]
    else:
        args.targets = [args.rate or 100.0]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"generator pid {os.getpid()}: {args.scenario} at {args.targets} req/s, "
        f"{args.seconds:g} s each, {args.connections} connections",
        flush=True,
    )
    limit = None
    if args.baseline:
        limit = pbkdf2_limit()
        print(
            json.dumps({"baseline": "pbkdf2", "machine_limit_per_s": round(limit, 1)}), flush=True
        )
    reports = asyncio.run(run(args))
    if limit:
        for report in reports:
            report["ratio_to_crypto_limit"] = round(report["achieved_rps"] / limit, 3)
            print(
                json.dumps(
                    {
                        "target_rps": report["target_rps"],
                        "ratio_to_crypto_limit": report["ratio_to_crypto_limit"],
                    }
                )
            )
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(reports, out, indent=2)


if __name__ == "__main__":
    main()
