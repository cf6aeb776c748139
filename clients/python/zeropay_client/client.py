"""The clients: :class:`ZeroPay` (sync) and :class:`AsyncZeroPay` (async), one method per
operation of the service's contract (``/openapi.json``; :data:`OPERATIONS` maps each
``operationId`` to its method).

Every state-changing call carries a fresh ``X-Nonce`` and ``X-Timestamp``; every call the
service makes idempotent (enroll, initiate, verify, checkout creation) carries an
``Idempotency-Key`` (yours, or a new UUID per call) that its retries reuse. Only those, and
reads, are retried: after a connection failure, a 409 ``IDEMPOTENCY_IN_PROGRESS``, a 429 or
a 5xx, waiting ``Retry-After`` (capped) or an exponential backoff with jitter. A call the
service does not make idempotent is never retried: its outcome would be unknown. Errors are
raised as :mod:`zeropay_client.errors` exceptions carrying the problem details.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import anyio
import httpx

from .errors import ConnectionFailed, ZeroPayError, error_for

Answer = dict[str, Any]
R = TypeVar("R")

#: Every operationId of the contract, and the method that performs it.
OPERATIONS: Mapping[str, str] = {
    "enroll": "enroll",
    "issue_enrollment_grant": "enrollment_link",
    "read_enrollment_grant": "read_enrollment_grant",
    "update_enrollment": "update_enrollment",
    "delete_enrollment": "delete_enrollment",
    "export_enrollment": "export_enrollment",
    "passkey_options": "passkey_options",
    "register_passkey": "register_passkey",
    "list_passkeys": "list_passkeys",
    "delete_passkey": "delete_passkey",
    "initiate_verification": "initiate_verification",
    "verify": "verify",
    "get_session_status": "get_session_status",
    "validate_token": "validate_token",
    "revoke_token": "revoke_token",
    "create_psp_session": "create_psp_session",
    "get_psp_session": "get_psp_session",
    "get_keys": "get_keys",
    "live": "live",
    "ready": "ready",
    "health": "health",
    "get_openapi": "get_openapi",
    "get_problem_type": "get_problem_type",
    "get_metrics": "get_metrics",
    "pay_page": "pay_page_url",
    "enroll_page": "enroll_page_url",
    "static_asset": "static_asset_url",
}
_RETRIED_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
MAX_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Call:
    """One request, as the operations describe it and the clients send it."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None
    merchant: bool = False
    token: str | None = None
    state_changing: bool = False
    idempotency_key: str | None = None
    #: A read, or an idempotent write: safe to send again.
    retriable: bool = False
    #: ``ready`` and ``health`` answer their report with a 503 too.
    report: bool = False
    text: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _segment(value: str) -> str:
    return quote(value, safe="")


class _Operations(Generic[R]):
    """The operations, each described as a :class:`Call` and handed to ``_send``."""

    base_url: str

    def _send(self, call: Call) -> R:
        raise NotImplementedError

    # ------------------------------------------------------------------ verification

    def initiate_verification(
        self,
        user_uuid: str,
        *,
        amount: int | None = None,
        currency: str | None = None,
        risk_level: str | None = None,
        return_url: str | None = None,
        cancel_url: str | None = None,
        require_passkey: bool | None = None,
        merchant_id: str | None = None,
        psp_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Open a session for a payment of ``amount`` minor units of ``currency`` (4250 EUR
        is 42.50 EUR). Send the payer to :meth:`pay_page_url` of its ``session_id``."""
        body = _drop_none(
            user_uuid=user_uuid,
            amount=amount,
            currency=currency,
            risk_level=risk_level,
            return_url=return_url,
            cancel_url=cancel_url,
            require_passkey=require_passkey,
            merchant_id=merchant_id,
            psp_config=None if psp_config is None else dict(psp_config),
        )
        return self._keyed("POST", "/v1/verification/initiate", body, idempotency_key, True)

    def verify(
        self,
        session_id: str,
        user_uuid: str,
        factors: Mapping[str, str],
        *,
        passkey: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Answer a session with the factors' digests (:func:`factor_digest`)."""
        body = _drop_none(
            session_id=session_id,
            user_uuid=user_uuid,
            factors=dict(factors),
            passkey=None if passkey is None else dict(passkey),
        )
        return self._keyed("POST", "/v1/verification/verify", body, idempotency_key, False)

    def get_session_status(self, session_id: str) -> R:
        """The session's state and payment: what to check before shipping."""
        path = f"/v1/verification/status/{_segment(session_id)}"
        return self._send(Call("GET", path, retriable=True))

    # ------------------------------------------------------------------ enrollment

    def enroll(
        self,
        user_uuid: str,
        factors: Mapping[str, str],
        *,
        device_id: str = "zeropay-client",
        register_passkey: bool | None = None,
        grant: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Enroll 3 to 15 factors, as digests (:func:`factor_digests`); ``grant``: the
        enrollment link's grant the payer followed (:meth:`enrollment_link`)."""
        body = _drop_none(
            user_uuid=user_uuid,
            factors=dict(factors),
            device_id=device_id,
            register_passkey=register_passkey,
            grant=grant,
        )
        return self._keyed("POST", "/v1/enrollment/store", body, idempotency_key, False)

    def enrollment_link(self, user_uuid: str, *, idempotency_key: str | None = None) -> R:
        """A link that enrolls ``user_uuid`` (merchants): its ``enroll_url`` (relative to
        the service), good once for 15 minutes. Send the payer there; no one types an id."""
        body = {"user_uuid": user_uuid}
        return self._keyed("POST", "/v1/enrollment/grants", body, idempotency_key, True)

    def read_enrollment_grant(self, grant: str) -> R:
        """The user an enrollment grant enrolls, and how long it stays good."""
        path = f"/v1/enrollment/grants/{_segment(grant)}"
        return self._send(Call("GET", path, retriable=True))

    def update_enrollment(
        self, token: str, user_uuid: str, factors: Mapping[str, str], *, device_id: str
    ) -> R:
        body = {"user_uuid": user_uuid, "factors": dict(factors), "device_id": device_id}
        return self._send(
            Call("PUT", "/v1/enrollment/update", body, token=token, state_changing=True)
        )

    def delete_enrollment(self, token: str, user_uuid: str) -> R:
        path = f"/v1/enrollment/delete/{_segment(user_uuid)}"
        return self._send(Call("DELETE", path, token=token, state_changing=True))

    def export_enrollment(self, token: str, user_uuid: str) -> R:
        path = f"/v1/enrollment/export/{_segment(user_uuid)}"
        return self._send(Call("GET", path, token=token, retriable=True))

    # ------------------------------------------------------------------ passkeys

    def passkey_options(self, token: str, user_uuid: str) -> R:
        body = {"user_uuid": user_uuid}
        return self._send(
            Call("POST", "/v1/passkeys/options", body, token=token, state_changing=True)
        )

    def register_passkey(
        self, user_uuid: str, credential: Mapping[str, Any], *, token: str | None = None
    ) -> R:
        body = {"user_uuid": user_uuid, "credential": dict(credential)}
        return self._send(Call("POST", "/v1/passkeys", body, token=token, state_changing=True))

    def list_passkeys(self, token: str, user_uuid: str) -> R:
        path = f"/v1/passkeys/{_segment(user_uuid)}"
        return self._send(Call("GET", path, token=token, retriable=True))

    def delete_passkey(self, token: str, user_uuid: str, credential_id: str) -> R:
        path = f"/v1/passkeys/{_segment(user_uuid)}/{_segment(credential_id)}"
        return self._send(Call("DELETE", path, token=token, state_changing=True))

    # ------------------------------------------------------------------ tokens

    def validate_token(self, token: str) -> R:
        return self._send(Call("GET", "/v1/session/validate", token=token, retriable=True))

    def revoke_token(self, token: str) -> R:
        return self._send(Call("POST", "/v1/session/revoke", token=token, state_changing=True))

    # ------------------------------------------------------------------ payments

    def create_psp_session(
        self,
        *,
        session_id: str | None = None,
        amount: int | None = None,
        currency: str | None = None,
        psp_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        body = _drop_none(
            session_id=session_id,
            amount=amount,
            currency=currency,
            psp_config=None if psp_config is None else dict(psp_config),
        )
        return self._keyed("POST", "/v1/psp/session/create", body, idempotency_key, True)

    def get_psp_session(self, psp_session_id: str) -> R:
        path = f"/v1/psp/session/{_segment(psp_session_id)}"
        return self._send(Call("GET", path, merchant=True, retriable=True))

    # ------------------------------------------------------------------ operations

    def get_keys(self) -> R:
        """The JWK Set that checks receipts (:func:`verify_receipt`)."""
        return self._send(Call("GET", "/v1/keys", retriable=True))

    def live(self) -> R:
        return self._send(Call("GET", "/health/live", retriable=True))

    def ready(self) -> R:
        """``{"status": "ready" | "unavailable", "checks": {...}}``."""
        return self._send(Call("GET", "/health/ready", report=True))

    def health(self) -> R:
        return self._send(Call("GET", "/health", report=True))

    def get_openapi(self) -> R:
        return self._send(Call("GET", "/openapi.json", retriable=True))

    def get_problem_type(self, slug: str) -> R:
        """What an error's ``type`` (``/problems/{slug}``) means."""
        return self._send(Call("GET", f"/problems/{_segment(slug)}", retriable=True))

    def get_metrics(self) -> R:
        """``{"text": ...}``: the Prometheus exposition."""
        return self._send(Call("GET", "/metrics", retriable=True, text=True))

    # ------------------------------------------------------------------ the payer's pages

    def pay_page_url(self, session_id: str) -> str:
        """Where to send the payer to answer the session."""
        return f"{self.base_url}/pay/{_segment(session_id)}"

    def enroll_page_url(self) -> str:
        return f"{self.base_url}/enroll"

    def static_asset_url(self, name: str) -> str:
        return f"{self.base_url}/static/{_segment(name)}"

    # ------------------------------------------------------------------

    def _keyed(
        self, method: str, path: str, body: dict[str, Any], key: str | None, merchant: bool
    ) -> R:
        return self._send(
            Call(
                method,
                path,
                body,
                merchant=merchant,
                state_changing=True,
                idempotency_key=key or str(uuid.uuid4()),
                retriable=True,
            )
        )


class _Transport:
    """What both clients share: headers, and what an answer means."""

    def __init__(self, api_key: str | None, max_retries: int) -> None:
        self.api_key = api_key
        self.max_retries = max_retries

    def headers(self, call: Call) -> dict[str, str]:
        headers = {"Accept": "application/json, application/problem+json"}
        if call.merchant:
            if self.api_key is None:
                raise ValueError("this operation needs the merchant's api_key")
            headers["X-API-Key"] = self.api_key
        if call.token is not None:
            headers["Authorization"] = f"Bearer {call.token}"
        if call.state_changing:  # fresh for every attempt: a retry is a new request
            headers["X-Nonce"] = str(uuid.uuid4())
            headers["X-Timestamp"] = str(int(time.time() * 1000))
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        return headers

    def request(self, call: Call) -> dict[str, Any]:
        """One attempt's request: fresh headers, the same body."""
        body = None if call.body is None else json.dumps(call.body, separators=(",", ":"))
        return {
            "method": call.method,
            "url": call.path,
            "content": None if body is None else body.encode(),
            "headers": self.headers(call),
        }

    def result(
        self, call: Call, attempt: int, got: httpx.Response | httpx.TransportError
    ) -> Answer | float:
        """An attempt's answer, or the seconds to wait before the next one; raises the
        error where the call is not to be retried (or is out of retries)."""
        try:
            if isinstance(got, httpx.TransportError):
                raise ConnectionFailed(f"{type(got).__name__}: {got}")
            return self.outcome(call, got)
        except ZeroPayError as error:
            wait = self.wait(call, attempt, error)
            if wait is None:
                raise
            return wait

    def outcome(self, call: Call, response: httpx.Response) -> Answer:
        """The answer, or raise its error."""
        if call.text and response.status_code == 200:
            return {"text": response.text}
        try:
            body = response.json()
        except ValueError:
            body = {"code": "NOT_JSON", "detail": response.text[:200]}
        if response.status_code < 400 or (call.report and isinstance(body, dict)):
            return body if isinstance(body, dict) else {"value": body}
        problem = body if isinstance(body, dict) else {}
        wait = response.headers.get("Retry-After", "")
        if "retry_after" not in problem and wait.isdigit():
            problem = {**problem, "retry_after": int(wait)}
        raise error_for(response.status_code, problem)

    def wait(self, call: Call, attempt: int, error: ZeroPayError) -> float | None:
        """Seconds to wait before retrying after ``error``, or ``None``: do not retry."""
        if not call.retriable or attempt >= self.max_retries:
            return None
        if not isinstance(error, ConnectionFailed) and error.status not in _RETRIED_STATUSES:
            return None
        if error.status == 409 and error.code != "IDEMPOTENCY_IN_PROGRESS":
            return None
        backoff = min(MAX_WAIT_SECONDS, 0.25 * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311
        return min(MAX_WAIT_SECONDS, float(error.retry_after or 0)) or backoff


class ZeroPay(_Operations[Answer]):
    """The synchronous client. ``api_key`` (``X-API-Key``) is the merchant's, set once."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._t = _Transport(api_key, max_retries)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._sleep = sleep

    def _send(self, call: Call) -> Answer:
        attempt = 0
        while True:
            try:
                got: httpx.Response | httpx.TransportError = self._http.request(
                    **self._t.request(call)
                )
            except httpx.TransportError as exc:
                got = exc
            outcome = self._t.result(call, attempt, got)
            if isinstance(outcome, dict):
                return outcome
            self._sleep(outcome)  # seconds before the next attempt
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ZeroPay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncZeroPay(_Operations[Awaitable[Answer]]):
    """The asynchronous client (asyncio or Trio: httpx runs on either)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._t = _Transport(api_key, max_retries)
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._sleep = sleep

    async def _send(self, call: Call) -> Answer:
        attempt = 0
        while True:
            try:
                got: httpx.Response | httpx.TransportError = await self._http.request(
                    **self._t.request(call)
                )
            except httpx.TransportError as exc:
                got = exc
            outcome = self._t.result(call, attempt, got)
            if isinstance(outcome, dict):
                return outcome
            await (self._sleep or anyio.sleep)(outcome)  # seconds before the next attempt
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncZeroPay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
