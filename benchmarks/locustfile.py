"""ZeroPay flows for Locust users (``benchmarks.load`` is this project's own open-loop tool).

    pip install locust
    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8080 \\
        --headless -u 50 -r 10 -t 60s

Each simulated user enrolls once, then repeats: initiate a payment, verify it, check the
session's status. The server's rate limits must allow the load (RATE_LIMIT_* high); the
merchant key comes from ZEROPAY_API_KEY or the file ``python -m benchmarks.server`` writes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from locust import HttpUser, between, task  # type: ignore[import-not-found]

from benchmarks.load import api_key
from zeropay_proto import Factor
from zeropay_proto.answers import example_answer, factor_digest

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")


def digest(user: str, factor: str) -> str:
    """The client's digest of the example answer (:mod:`zeropay_proto.answers`)."""
    named = Factor(factor)
    return factor_digest(user, named, example_answer(named, "bench")).hex()


def fresh() -> dict[str, str]:
    return {"X-Nonce": str(uuid.uuid4()), "X-Timestamp": str(int(time.time() * 1000))}


class Payer(HttpUser):  # type: ignore[misc]
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.user = str(uuid.uuid4())
        body = {
            "user_uuid": self.user,
            "device_id": "locust",
            "factors": {f: digest(self.user, f) for f in FACTORS},
        }
        self.client.post("/v1/enrollment/store", json=body, headers=fresh())

    @task  # type: ignore[untyped-decorator]
    def pay(self) -> None:
        started: Any = self.client.post(
            "/v1/verification/initiate",
            json={"user_uuid": self.user, "amount": 4250, "currency": "EUR"},
            headers={**fresh(), "X-API-Key": api_key()},
        )
        if started.status_code != 200:
            return
        session = started.json()
        self.client.post(
            "/v1/verification/verify",
            json={
                "session_id": session["session_id"],
                "user_uuid": self.user,
                "factors": {f: digest(self.user, f) for f in session["required_factors"]},
            },
            headers=fresh(),
        )
        self.client.get(
            f"/v1/verification/status/{session['session_id']}",
            name="/v1/verification/status/{session_id}",
        )
