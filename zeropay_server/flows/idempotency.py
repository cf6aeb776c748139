"""Idempotent retries around a flow: the ``Idempotency-Key`` header, decided by the core
(:mod:`zeropay_proto.idempotency`), carried out through the state store.

A request with a key claims it before the operation runs (one round trip), and settles it
after (one more): its answer kept for 24 hours if it is a decision, the claim released if not
(a 503 is retried for real). A request that finds the same request's answer gets it back,
byte for byte, with ``Idempotent-Replayed: true``, and the operation does not run: a verify
replayed spends no attempt. One that finds the same request running gets a 409, and one that
finds another request under its key a 422. Those three are charged like a read (to the
merchant's budget or the caller's address), so replays are no way around the limiters, and
their nonce and timestamp are checked as any write's: a captured request sent again as it is
gets a 403, never the kept answer. Kept answers are sealed under the master keyring (a
verify's holds a bearer token). Requests without a key cost nothing more.

If the answer cannot be kept (Redis failed between the operation and the settling), it still
goes to the client; the claim lapses after its lease (a minute), until when a retry gets a
409, and after which a retry runs the operation again: a second session for an initiate (the
first expires unused), a closed session for a verify (its outcome is in its status).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from adapters.errors import DependencyUnavailable
from adapters.ports import IdempotencyScope, ScopeKind
from zeropay_proto import RemoteProtocolError
from zeropay_proto.crypto import NONCE_BYTES
from zeropay_proto.idempotency import (
    ANSWER_KEPT_MS,
    CLAIM_LEASE_MS,
    TOKEN_BYTES,
    Answer,
    AnswerReplayed,
    Claim,
    ClaimGranted,
    KeyReused,
    StillRunning,
    decide_idempotency,
    keeps_answer,
    open_answer,
    parse_idempotency_key,
    request_fingerprint,
    scoped_key,
    seal_answer,
)
from zeropay_proto.identifiers import parse_user_id
from zeropay_proto.requests import load_json_object

from .context import ApiError, Reply, retry_after
from .steps import FlowSteps

log = logging.getLogger("zeropay.flows")

REPLAYED_HEADER = "Idempotent-Replayed"


class IdempotentFlows(FlowSteps):
    async def idempotently(
        self, kind: ScopeKind, method: str, path: str, run: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """``run``'s reply (it answers errors as replies, never raises), at most once per
        ``Idempotency-Key`` within the scope ``kind``."""
        key = parse_idempotency_key(self.ctx.header("Idempotency-Key"))
        scope = None if key is None else await self._scope(kind)
        if key is None or scope is None:  # no key, or a body naming no user: its 400
            return await run()
        scoped = scoped_key(scope.name, key)
        fingerprint = request_fingerprint(method, path, self.ctx.body)
        token = self.rt.entropy(TOKEN_BYTES)
        claim = Claim(token=token, fingerprint=fingerprint)
        held = await self.rt.state.claim_idempotency(scope, scoped, claim, CLAIM_LEASE_MS)
        match decide_idempotency(held, fingerprint=fingerprint, token=token):
            case ClaimGranted():
                self.rt.metrics.idempotency.labels("ran").inc()
                return await self._run_and_settle(scope, scoped, claim, run)
            case AnswerReplayed(answer=kept):
                headers = await self._admit_repeat(scope)
                self.rt.metrics.idempotency.labels("replayed").inc()
                keyring = self.rt.settings.secrets.keyring
                return _replayed(open_answer(kept, keyring=keyring, scoped=scoped), headers)
            case StillRunning(retry_after_ms=wait):
                await self._admit_repeat(scope)
                self.rt.metrics.idempotency.labels("in_progress").inc()
                message = "a request with this Idempotency-Key is still running"
                raise ApiError(409, "IDEMPOTENCY_IN_PROGRESS", message, headers=retry_after(wait))
            case KeyReused():
                await self._admit_repeat(scope)
                self.rt.metrics.idempotency.labels("key_reused").inc()
                message = "this Idempotency-Key was used with another request"
                raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", message, field="Idempotency-Key")

    async def _admit_repeat(self, scope: IdempotencyScope) -> dict[str, str]:
        """Admission for a request that finds its key taken: charged like a read (the
        merchant's budget, or the caller's address), and its nonce and timestamp checked as
        any state-changing request's, in the slot of the user it names as the first request's
        were: a captured request replayed as it is (its nonce spent) gets a 403, never the
        kept answer; a client's retry comes with fresh ones."""
        merchant = scope.owner if scope.kind == "merchant" else None
        user = _named_user(self.ctx.body)
        return await self.admit(user, state_changing=True, merchant_id=merchant)

    async def _run_and_settle(
        self,
        scope: IdempotencyScope,
        scoped: str,
        claim: Claim,
        run: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        """Run the operation, then keep its answer (a decision) or release the claim."""
        reply = await run()
        code = reply.body.get("code") if reply.status >= 400 else None
        kept = None
        if keeps_answer(reply.status, code):
            kept = seal_answer(
                _answer(reply),
                fingerprint=claim.fingerprint,
                keyring=self.rt.settings.secrets.keyring,
                scoped=scoped,
                nonce=self.rt.entropy(NONCE_BYTES),
            )
        try:
            await self.rt.state.settle_idempotency(scope, scoped, claim, kept, ANSWER_KEPT_MS)
        except DependencyUnavailable:
            self.rt.metrics.idempotency.labels("not_kept").inc()
            log.warning("idempotent answer not kept: redis unavailable", extra={"fields": {}})
        return reply

    async def _scope(self, kind: ScopeKind) -> IdempotencyScope | None:
        if kind == "merchant":
            return IdempotencyScope("merchant", await self.merchant())
        user = _named_user(self.ctx.body)
        return None if user is None else IdempotencyScope("user", user)


def _named_user(body: bytes) -> str | None:
    """The user a request body names (``user_uuid``), if it parses."""
    try:
        return parse_user_id(load_json_object(body).get("user_uuid"))
    except RemoteProtocolError:
        return None


def _answer(reply: Reply) -> Answer:
    """The answer as it goes out: status, media type and headers, the body's exact bytes."""
    headers = (("Content-Type", reply.content_type), *reply.headers.items())
    return Answer(
        status=reply.status,
        headers=tuple(headers),
        body=reply.encoded(),
    )


def _replayed(answer: Answer, admitted: dict[str, str]) -> Reply:
    """The kept answer, byte for byte, with the rate-limit headers of this request."""
    headers = {**dict(answer.headers), **admitted}
    content_type = headers.pop("Content-Type", "application/json")
    headers[REPLAYED_HEADER] = "true"
    return Reply(
        answer.status, json.loads(answer.body), headers, content_type=content_type, raw=answer.body
    )
