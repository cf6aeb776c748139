"""The operator's routes: the receipt key set, liveness, readiness, health, the OpenAPI
document. They serve on every role (an ``audit``-role instance too) and need no admission."""

from __future__ import annotations

from zeropay_proto import epoch_ms

from ..openapi import openapi_document
from ..problems import PROBLEMS
from .context import ApiError, Reply
from .steps import FlowSteps

#: Seconds a client waits before retrying a 503 (``Retry-After``).
RETRY_AFTER_UNAVAILABLE = 5


class OperationFlows(FlowSteps):
    async def keys(self) -> Reply:
        return Reply(200, {"keys": self.rt.signer.published(epoch_ms(self.ctx.now))})

    async def live(self) -> Reply:
        return Reply(200, {"status": "ok"})

    async def ready(self) -> Reply:
        checks = await self.rt.ready()
        if all(checks.values()):
            return Reply(200, {"status": "ready", "checks": checks})
        unavailable = {"status": "unavailable", "checks": checks}
        return Reply(503, unavailable, {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)})

    async def health(self) -> Reply:
        checks = await self.rt.ready()
        up = all(checks.values())
        body = {
            "status": "ok" if up else "degraded",
            "checks": checks,
            "storage": "memory" if self.rt.settings.embedded else "redis+postgresql",
            "crypto_queue_depth": self.rt.crypto.queue_depth(),
        }
        return Reply(200 if up else 503, body)

    async def openapi(self) -> Reply:
        return Reply(200, openapi_document())

    async def problem_type(self, slug: str) -> Reply:
        """What an error's ``type`` names: its code, usual status, title and meaning."""
        for kind in PROBLEMS.values():
            if kind.slug == slug:
                return Reply(200, kind.as_dict())
        raise ApiError(404, "NOT_FOUND", "no such problem type", field="slug")
