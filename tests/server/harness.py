"""Drive the app in-process on the in-memory adapters, with a hand-advanced clock."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio_parallel
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

from tests.contract import check_answer
from tests.helpers import answers
from zeropay_server.app import create_app
from zeropay_server.config import load_settings
from zeropay_server.runtime import Runtime, open_runtime

#: Tests use a cheap derivation; the production default is 100,000.
TEST_ITERATIONS = "1000"
FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: Headers  # case-insensitive
    text: str


@dataclass
class Harness:
    app: QuartTrio
    runtime: Runtime
    clock: Clock

    def nonce_headers(self) -> dict[str, str]:
        return {"X-Nonce": str(uuid.uuid4()), "X-Timestamp": str(int(self.clock.now * 1000))}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        nonce: bool | None = None,
        peer: str = "192.0.2.10",
    ) -> Response:
        all_headers = {"Content-Type": "application/json"}
        if self.runtime.demo_merchant_key is not None:  # the merchant routes need it
            all_headers["X-API-Key"] = self.runtime.demo_merchant_key
        if nonce if nonce is not None else method in {"POST", "PUT", "DELETE"}:
            all_headers.update(self.nonce_headers())
        all_headers.update(headers or {})
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        client = self.app.test_client()
        response = await client.open(  # type: ignore[call-arg]
            path,
            method=method,
            headers=all_headers,
            data=data,
            scope_base={"client": (peer, 40000)},
        )
        data_out = await response.get_data()
        text = data_out.decode() if isinstance(data_out, bytes) else data_out
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {}
        # Every answer of every server test is one the published contract declares.
        content_type = response.headers.get("Content-Type", "")
        check_answer(method, path, response.status_code, content_type, text)
        return Response(response.status_code, parsed, response.headers, text)

    async def enroll(
        self, user: str, factors: tuple[str, ...] = FACTORS, *, grant: str | None = None
    ) -> Response:
        body = {"user_uuid": user, "factors": answers(user, list(factors)), "device_id": "phone-1"}
        if grant is not None:
            body["grant"] = grant
        return await self.call("POST", "/v1/enrollment/store", body)

    async def initiate(self, user: str, **extra: Any) -> Response:
        return await self.call("POST", "/v1/verification/initiate", {"user_uuid": user, **extra})

    async def verify(self, user: str, session_id: str, factors: dict[str, str]) -> Response:
        return await self.call(
            "POST",
            "/v1/verification/verify",
            {"session_id": session_id, "user_uuid": user, "factors": factors},
        )

    async def pay(
        self, user: str, started: Mapping[str, Any], passkey: dict[str, Any] | None = None
    ) -> Response:
        """Verify the session ``started`` (an initiate's answer) with the right answers to its
        knowledge factors, and ``passkey`` (an assertion) if given."""
        knowledge = [f for f in started["required_factors"] if f != "PASSKEY"]
        body: dict[str, Any] = {
            "session_id": started["session_id"],
            "user_uuid": user,
            "factors": answers(user, knowledge),
        }
        if passkey is not None:
            body["passkey"] = passkey
        return await self.call("POST", "/v1/verification/verify", body)

    async def verified_token(self, user: str) -> tuple[str, Response]:
        return await self.verified_token_with(user, "right")

    async def verified_token_with(self, user: str, answer: str) -> tuple[str, Response]:
        """A bearer token from a verification answered with ``answer``'s digests."""
        started = await self.initiate(user)
        session_id = started.body["session_id"]
        done = await self.verify(
            user, session_id, answers(user, started.body["required_factors"], answer)
        )
        assert done.status == 200, done.text
        return done.body["auth_token"], done


@contextlib.asynccontextmanager
async def running_app(**env: str) -> AsyncIterator[Harness]:
    """The app on the in-memory adapters (embedded default), crypto in the real pool."""
    settings = load_settings({"PBKDF2_ITERATIONS": TEST_ITERATIONS, **env})
    clock = Clock()
    async with open_runtime(settings, run_sync=trio_parallel.run_sync, clock=clock) as runtime:
        yield Harness(create_app(runtime), runtime, clock)
