"""A dependency outage answers 503 and never punishes the user.

The outage is injected at the port: a wrapper around the in-memory store raises
DependencyUnavailable, exactly what the PostgreSQL and Redis adapters raise when their store
stops (tested against the real servers in tests/adapters and tests/faults).
"""

from __future__ import annotations

from typing import Any

from adapters.errors import DependencyUnavailable
from tests.authenticator import SoftAuthenticator, b64decode
from tests.helpers import answers
from tests.server.harness import running_app
from tests.server.test_api import new_user
from tests.server.test_passkeys import ORIGIN


class Outage:
    """A port whose coroutine methods (``only`` those, if given) raise DependencyUnavailable
    while ``down``."""

    def __init__(self, inner: Any, dependency: str, only: set[str] | None = None) -> None:
        self.inner, self.dependency, self.only, self.down = inner, dependency, only, False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down and (self.only is None or name in self.only):
                raise DependencyUnavailable(self.dependency)
            return await method(*args, **kwargs)

        return call


async def test_right_factors_during_a_postgresql_outage_never_lock_the_account() -> None:
    async with running_app() as h:
        user = new_user()
        assert (await h.enroll(user)).status == 201
        outage = Outage(h.runtime.durable, "postgresql")
        h.runtime.durable = outage
        started = await h.initiate(user)  # the record is cached: initiate still works
        assert started.status == 200
        right = answers(user, started.body["required_factors"])
        outage.down = True
        statuses = [(await h.verify(user, started.body["session_id"], right)) for _ in range(6)]
        assert [r.status for r in statuses] == [503] * 6
        assert all(r.headers["Retry-After"] for r in statuses)
        assert all(r.body["code"] == "DEPENDENCY_UNAVAILABLE" for r in statuses)
        outage.down = False
        status = await h.call("GET", f"/v1/verification/status/{started.body['session_id']}")
        assert (status.body["status"], status.body["attempts_used"]) == ("pending", 0)
        done = await h.verify(user, started.body["session_id"], right)
        assert done.status == 200, done.text


async def test_an_outage_after_real_failures_keeps_their_count() -> None:
    """Releasing gives back only what met the outage: four real failures stay counted, so
    the fifth real failure still locks."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        outage = Outage(h.runtime.durable, "postgresql")
        h.runtime.durable = outage
        statuses = []
        for _ in range(2):
            started = await h.initiate(user)
            wrong = answers(user, started.body["required_factors"], "wrong")
            for down in (False, True, False):
                outage.down = down
                statuses.append((await h.verify(user, started.body["session_id"], wrong)).status)
        outage.down = False
        assert statuses == [401, 503, 401] * 2  # four real failures, two outages
        started = await h.initiate(user)
        wrong = answers(user, started.body["required_factors"], "wrong")
        fifth = await h.verify(user, started.body["session_id"], wrong)
        assert fifth.status == 401  # the fifth real failure: evaluated, and it locks
        refused = await h.verify(user, started.body["session_id"], wrong)
        assert (refused.status, refused.body["code"]) == (429, "ACCOUNT_LOCKED")


async def test_an_outage_while_storing_the_session_beside_a_psp_checkout_is_a_503() -> None:
    """The session is stored while the PSP checkout is created, in one nursery: its failure
    came out as an exception group, and the answer was a 500."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        outage = Outage(h.runtime.state, "redis", only={"store_session"})
        h.runtime.state = outage
        outage.down = True
        for psp_config in (None, {"provider": "sandbox"}):
            extra = {} if psp_config is None else {"psp_config": psp_config}
            response = await h.initiate(user, **extra)
            assert (response.status, response.body["code"]) == (503, "DEPENDENCY_UNAVAILABLE")


async def test_an_enrollment_redis_could_not_announce_is_undone() -> None:
    """Enrolling deletes a cached "not enrolled" after the insert; if Redis cannot, the
    insert is undone (503) so that no stale marker outlives it, and enrolling again works."""
    async with running_app() as h:
        user = new_user()
        outage = Outage(h.runtime.state, "redis", only={"invalidate_record"})
        h.runtime.state = outage
        outage.down = True
        refused = await h.enroll(user)
        assert refused.status == 503
        assert await h.runtime.durable.load_enrollment(user) is None
        outage.down = False
        assert (await h.enroll(user)).status == 201
        assert await h.runtime.durable.load_enrollment(user) is not None


async def test_a_postgresql_outage_at_the_passkeys_count_gives_the_attempt_back() -> None:
    """The proven assertion's count must reach PostgreSQL before the answers are compared;
    when it cannot, the client gets a 503 and the attempt is not counted."""
    async with running_app() as h:
        user = new_user()
        enrolled = await h.call(
            "POST",
            "/v1/enrollment/store",
            {
                "user_uuid": user,
                "factors": answers(user, ["PIN", "COLOUR", "EMOJI"]),
                "device_id": "phone-1",
                "register_passkey": True,
            },
        )
        device = SoftAuthenticator(credential_id=b"outage-passkey")
        challenge = b64decode(enrolled.body["passkey_options"]["challenge"])
        credential = device.register("localhost", ORIGIN, challenge)
        registered = await h.call(
            "POST", "/v1/passkeys", {"user_uuid": user, "credential": credential}
        )
        assert registered.status == 201
        started = await h.initiate(user, amount=10000, currency="EUR")
        outage = Outage(h.runtime.durable, "postgresql", only={"record_sign_count"})
        h.runtime.durable = outage
        outage.down = True
        refused = await h.pay(user, started.body, device.answer(ORIGIN, started.body["passkey"]))
        assert (refused.status, refused.body["code"]) == (503, "DEPENDENCY_UNAVAILABLE")
        outage.down = False
        status = await h.call("GET", f"/v1/verification/status/{started.body['session_id']}")
        assert (status.body["status"], status.body["attempts_used"]) == ("pending", 0)
        done = await h.pay(user, started.body, device.answer(ORIGIN, status.body["passkey"]))
        assert done.status == 200, done.text


async def test_an_enrollment_stands_when_its_passkey_grant_cannot_be_kept() -> None:
    async with running_app() as h:
        user = new_user()
        outage = Outage(h.runtime.state, "redis", only={"store_passkey_challenge"})
        h.runtime.state = outage
        outage.down = True
        body = {
            "user_uuid": user,
            "factors": answers(user, ["PIN", "COLOUR", "EMOJI"]),
            "device_id": "phone-1",
            "register_passkey": True,
        }
        enrolled = await h.call("POST", "/v1/enrollment/store", body)
        assert enrolled.status == 201, enrolled.text
        assert enrolled.body["passkey_options"] is None
        outage.down = False
        assert (await h.initiate(user)).status == 200  # enrolled all the same
