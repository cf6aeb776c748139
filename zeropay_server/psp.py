"""Payment-service-provider checkout sessions, created in parallel with the challenge.

A provider is anything with :meth:`PspProvider.create_checkout`. The built-in ``sandbox``
provider makes checkout sessions without any network call; ``psp_config`` may ask it to fail
(``{"simulate": "failure"}``) or to be slow (``{"simulate_delay_ms": N}``), so the deadline and
failure paths can be exercised. A PSP failure never fails an authentication: the initiate
answer comes without its ``psp_session``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import trio

from zeropay_proto import b64url

#: Deadline for creating a checkout session during initiate: a slow PSP never holds a payer.
PSP_DEADLINE_SECONDS = 5.0


class PspError(Exception):
    """The provider could not create a checkout session."""


@dataclass(frozen=True, kw_only=True)
class PspCheckout:
    """A provider's checkout session, as stored and returned."""

    psp_session_id: str
    provider: str
    status: str
    checkout_url: str
    #: In minor units of ``currency``.
    amount: int | None
    currency: str | None
    merchant_id: str | None
    verification_session_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PspProvider(Protocol):
    name: str

    async def create_checkout(
        self,
        *,
        amount: int | None,
        currency: str | None,
        merchant_id: str | None,
        verification_session_id: str | None,
        config: Mapping[str, Any],
    ) -> PspCheckout: ...


class SandboxProvider:
    """A provider that needs no network: for development, tests and benchmarks. Its session
    ids come from ``entropy`` (the runtime's)."""

    name = "sandbox"

    def __init__(self, entropy: Callable[[int], bytes]) -> None:
        self._entropy = entropy

    async def create_checkout(
        self,
        *,
        amount: int | None,
        currency: str | None,
        merchant_id: str | None,
        verification_session_id: str | None,
        config: Mapping[str, Any],
    ) -> PspCheckout:
        delay = config.get("simulate_delay_ms")
        if isinstance(delay, int) and not isinstance(delay, bool) and delay > 0:
            await trio.sleep(delay / 1000)
        if config.get("simulate") == "failure":
            raise PspError("sandbox provider asked to fail")
        session_id = "psp_" + b64url(self._entropy(16))
        return PspCheckout(
            psp_session_id=session_id,
            provider=self.name,
            status="created",
            checkout_url=f"https://sandbox.psp.invalid/checkout/{session_id}",
            amount=amount,
            currency=currency,
            merchant_id=merchant_id,
            verification_session_id=verification_session_id,
        )
