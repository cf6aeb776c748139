"""A steady, bounded load of initiate and verify, recorded request by request, and the checker
of what every history must satisfy whatever fault it met.

Each worker owns its users, so one user's requests are sequential and the order of their
answers is the order they happened. Honest users always answer right; the others answer
wrong a third of the time, so that lockouts happen too. Every request carries a fresh nonce.
Invariants checked (``History.check``):

- every answer is 2xx, 4xx or 503 (never a 500), within the dependency deadline plus a
  generous margin (a hang detector, not a performance bound);
- a connection fails only where the test killed or stopped that instance;
- no fresh nonce is refused as reused (403), each session verifies at most once;
- at most 5 failures are evaluated per user between successes (the lockout's bound), counted
  afresh where Redis lost its data (the lockout counters with it);
- no honest user is ever refused as locked: an outage is never a failed attempt.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from tests.helpers import digest

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")
#: An answer slower than this is a hang (the dependency deadline is 1 s).
HANG_SECONDS = 10.0
#: Pause between one user's payments: a steady load of ~100 requests/s over 4 workers.
PACE_SECONDS = 0.02


def headers(merchant_key: str) -> dict[str, str]:
    return {
        "X-Nonce": str(uuid.uuid4()),
        "X-Timestamp": str(int(time.time() * 1000)),
        "X-API-Key": merchant_key,
    }


@dataclass(frozen=True)
class Record:
    """One request and its answer (status 0: the connection failed)."""

    kind: str
    user: str
    honest: bool
    instance: int
    started: float
    finished: float
    status: int
    code: str | None = None
    session: str | None = None


@dataclass
class History:
    records: list[Record] = field(default_factory=list)
    #: Instance -> the time from which its connections may fail (killed, terminated).
    down_since: dict[int, float] = field(default_factory=dict)
    #: When Redis lost its data (restarted empty, flushed): the lockout counters went with
    #: it, so every user's count of evaluated failures starts again there.
    wiped_at: list[float] = field(default_factory=list)

    def statuses(self) -> Counter[int]:
        return Counter(r.status for r in self.records)

    def slowest(self) -> float:
        return max((r.finished - r.started for r in self.records), default=0.0)

    def successes(self, user: str) -> int:
        return sum(
            1 for r in self.records if r.kind == "verify" and r.user == user and r.status == 200
        )

    def failures(self, user: str) -> int:
        return sum(
            1 for r in self.records if r.kind == "verify" and r.user == user and r.status == 401
        )

    def unseen(self, user: str) -> int:
        """Verifications whose outcome the client never saw: answered 503 (the script may
        have run after the deadline) or cut off with their instance."""
        return sum(
            1
            for r in self.records
            if r.kind == "verify" and r.user == user and r.status in {0, 503}
        )

    def check(self) -> None:
        """Assert every invariant of the module docstring."""
        assert self.records, "no request was made"
        for r in self.records:
            assert r.status == 0 or 200 <= r.status < 500 or r.status == 503, r
            assert r.finished - r.started <= HANG_SECONDS, f"hang: {r}"
            if r.status == 0:
                since = self.down_since.get(r.instance)
                assert since is not None, f"connection failed: {r}"
                assert r.finished >= since, f"connection failed before the fault: {r}"
            assert r.code != "NONCE_REUSED", f"a fresh nonce refused: {r}"
            assert not (r.honest and r.code == "ACCOUNT_LOCKED"), f"honest user locked: {r}"
        verified = Counter(
            r.session for r in self.records if r.kind == "verify" and r.status == 200
        )
        assert all(count == 1 for count in verified.values()), "a session verified twice"
        streak: Counter[str] = Counter()
        wipes = sorted(self.wiped_at)
        for r in sorted(self.records, key=lambda r: r.finished):
            if wipes and r.finished >= wipes[0]:
                wipes.pop(0)
                streak.clear()
            if r.kind != "verify":
                continue
            if r.status == 200:
                streak[r.user] = 0
            elif r.status == 401:
                streak[r.user] += 1
                assert streak[r.user] <= 5, f"more than 5 evaluated failures: {r.user}"


class Load:
    """Workers paying for their users against the instances, until stopped."""

    def __init__(
        self,
        urls: list[str],
        merchant_key: str,
        *,
        honest: int = 16,
        mixed: int = 8,
        attackers: int = 0,
        addresses: bool = False,
    ) -> None:
        self.urls = urls
        self.merchant_key = merchant_key
        self.honest = [str(uuid.uuid4()) for _ in range(honest)]
        #: Mixed users answer wrong a third of the time; attackers always.
        self.mixed = [str(uuid.uuid4()) for _ in range(mixed + attackers)]
        self.attackers = set(self.mixed[mixed:])
        #: With ``addresses``, each user's requests come from an address of its own, sent as
        #: ``X-Forwarded-For`` (the servers must trust the loopback proxy).
        self.addresses = (
            {
                user: f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
                for n, user in enumerate(self.honest + self.mixed)
            }
            if addresses
            else {}
        )
        self.history = History()
        self.stopped = trio.Event()

    async def enroll(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for user in self.honest + self.mixed:
                body = {
                    "user_uuid": user,
                    "device_id": "fault-suite",
                    "factors": {f: digest(user, f) for f in FACTORS},
                }
                response = await client.post(
                    f"{self.urls[0]}/v1/enrollment/store",
                    json=body,
                    headers=headers(self.merchant_key),
                )
                assert response.status_code == 201, response.text

    async def run(self, workers: int = 4) -> None:
        users = [(u, True) for u in self.honest] + [(u, False) for u in self.mixed]
        async with trio.open_nursery() as nursery:
            for i in range(workers):
                nursery.start_soon(self._worker, i, users[i::workers])

    async def _call(
        self, client: httpx.AsyncClient, instance: int, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], float, float]:
        started = trio.current_time()
        sent = headers(self.merchant_key)
        if address := self.addresses.get(body["user_uuid"]):
            sent["X-Forwarded-For"] = address
        try:
            response = await client.post(f"{self.urls[instance]}{path}", json=body, headers=sent)
        except httpx.TransportError:
            return 0, {}, started, trio.current_time()
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        return response.status_code, payload, started, trio.current_time()

    async def _worker(self, index: int, users: list[tuple[str, bool]]) -> None:
        async with httpx.AsyncClient(timeout=HANG_SECONDS * 3) as client:
            turn = index
            while not self.stopped.is_set():
                for user, honest in users:
                    turn += 1
                    first, second = turn % len(self.urls), (turn + 1) % len(self.urls)
                    await self._pay(client, user, honest, first, second)
                    await trio.sleep(PACE_SECONDS)
                    if self.stopped.is_set():
                        return

    async def _pay(
        self, client: httpx.AsyncClient, user: str, honest: bool, first: int, second: int
    ) -> None:
        status, payload, started, finished = await self._call(
            client, first, "/v1/verification/initiate", {"user_uuid": user, "risk_level": "HIGH"}
        )
        session = payload.get("session_id")
        self.history.records.append(
            Record(
                "initiate",
                user,
                honest,
                first,
                started,
                finished,
                status,
                payload.get("code"),
                session,
            )
        )
        if status != 200:
            return
        wrong = user in self.attackers or (not honest and secrets.randbelow(3) == 0)
        answer = "wrong" if wrong else "right"
        factors = {f: digest(user, f, answer) for f in payload["required_factors"]}
        body = {"session_id": session, "user_uuid": user, "factors": factors}
        status, payload, started, finished = await self._call(
            client, second, "/v1/verification/verify", body
        )
        self.history.records.append(
            Record(
                "verify",
                user,
                honest,
                second,
                started,
                finished,
                status,
                payload.get("code"),
                session,
            )
        )
