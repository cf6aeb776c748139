"""Admission on Redis: the script calls that carry out :mod:`zeropay_proto.admission`, and the
check of every reply against it.

``admit_shared`` (every limiter of a request, in its one slot: its merchant's, or its
address's shard) and ``claim_nonce`` (in the nonce's slot) return what they decided, what they
read and the expiries they set; so do the merchant failure budget's ``reserve_failure`` and
``refund_failure``, and ``auth_failure``. The core is replayed on what they read: a decision,
a count or an expiry that differs raises :class:`ScriptDisagreement`, so the core stays the
reference at run time. The Admission returned is the core's. :class:`RedisAdmission` is the
port's part of the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zeropay_proto import (
    FixedWindowState,
    RateLimited,
    RequestAdmitted,
    SlidingWindowState,
    TokenBucketState,
    decide_nonce,
    epoch_ms,
)
from zeropay_proto.admission import (
    Admission,
    AdmissionRequest,
    BucketDecision,
    FixedDecision,
    Kept,
    Limits,
    SharedLimiterStates,
    SharedLimitsDecided,
    SlidingDecision,
    decide_auth_failure,
    decide_shared_limits,
    limiter_fails_open,
    nonce_kept_until_ms,
    refund_merchant_failure,
    reserve_merchant_failure,
)
from zeropay_proto.ratelimit import StateT

from .redis_errors import is_unavailable
from .redis_keys import KeySpace
from .redis_scripts import (
    NO_NONCE,
    NONCE_REUSED,
    Call,
    ScriptDisagreement,
    ScriptRunner,
    redis_call,
)


class RedisAdmission(ScriptRunner):
    """AdmissionPort on Redis."""

    @redis_call
    async def admit(self, request: AdmissionRequest) -> Admission:
        return await self._admit(request)

    async def _admit(self, request: AdmissionRequest) -> Admission:
        """Admission's calls, run and decoded (ungated: for use inside a gated method)."""
        admission, _ = await self._admit_with(request, [])
        return admission

    async def _admit_with(
        self, request: AdmissionRequest, reads: Sequence[Call]
    ) -> tuple[Admission, list[Any]]:
        """Admission's calls and ``reads`` (the user's slot), run at once (one round trip
        standalone); the admission, and the reads' replies."""
        calls = admission_calls(self.keys, request)
        results = await self._run([*calls, *reads], tolerant=True) if calls or reads else []
        replies, failed_open = [], False
        for call, result in zip(calls, results, strict=False):
            if isinstance(result, BaseException):
                limits, now = request.limits, request.now
                if call[0] != "admit_shared" or not self._fails_open(call, result, now, limits):
                    raise result
                failed_open = True
                continue
            if call[0] == "admit_shared":
                self.limiter_outages.pop(_slot_tag(call), None)
            replies.append((call[0], result))
        read = results[len(calls) :]
        for result in read:
            if isinstance(result, BaseException):
                raise result
        return decode_admission(request, replies, failed_open=failed_open), read

    def _fails_open(self, call: Call, error: BaseException, now: float, limits: Limits) -> bool:
        """A Cluster's limiter slot unreachable (its master failing over): its limiters admit
        without counting for ``Limits.fail_open_ms`` from the first failure this process saw.
        Standalone, Redis is one server: nothing fails open."""
        if not self.clustered or not is_unavailable(error):
            return False
        since = self.limiter_outages.setdefault(_slot_tag(call), epoch_ms(now))
        return limiter_fails_open(since, now=now, limits=limits)

    async def _limiter_call(self, call: Call, now: float, limits: Limits) -> Any | None:
        """One limiter script's reply, or ``None`` while its slot fails open."""
        (reply,) = await self._run([call], tolerant=True)
        if not isinstance(reply, BaseException):
            self.limiter_outages.pop(_slot_tag(call), None)
            return reply
        if not self._fails_open(call, reply, now, limits):
            raise reply
        return None

    @redis_call
    async def reserve_merchant_failure(
        self, merchant_id: str, now: float, limits: Limits
    ) -> SlidingDecision | None:
        args = [epoch_ms(now), limits.merchant_failures, limits.failure_window_ms]
        call: Call = ("reserve_failure", [self.keys.merchant_failures(merchant_id)], args)
        reply = await self._limiter_call(call, now, limits)
        if reply is None:
            return None
        decided, kept = reserve_merchant_failure(_sliding_read(reply), now=now, limits=limits)
        _check_sliding("reserve_failure", reply, decided, kept, limits.merchant_failures)
        return decided

    @redis_call
    async def refund_merchant_failure(
        self, merchant_id: str, reserved_window_ms: int, limits: Limits
    ) -> None:
        call = self._refund_call(merchant_id, reserved_window_ms, limits)
        (reply,) = await self._run([call])
        check_refund(reply, reserved_window_ms, limits)

    def _refund_call(self, merchant_id: str, reserved_window_ms: int, limits: Limits) -> Call:
        return (
            "refund_failure",
            [self.keys.merchant_failures(merchant_id)],
            [reserved_window_ms, limits.failure_window_ms],
        )

    @redis_call
    async def count_auth_failure(
        self, client_ip: str, now: float, limits: Limits
    ) -> SlidingDecision | None:
        key = self.keys.auth_failures(client_ip, limits.shards)
        args = [epoch_ms(now), limits.auth_failures, limits.window_ms]
        reply = await self._limiter_call(("auth_failure", [key], args), now, limits)
        if reply is None:
            return None
        decided, kept = decide_auth_failure(_sliding_read(reply), now=now, limits=limits)
        _check_sliding("auth_failure", reply, decided, kept, limits.auth_failures)
        return decided


def check_refund(reply: Sequence[Any], reserved_window_ms: int, limits: Limits) -> None:
    """``refund_failure``'s reply (the expiry it wrote, what it read) against the core."""
    written, read = reply
    kept = refund_merchant_failure(
        _sliding_fields(read), reserved_window_ms=reserved_window_ms, limits=limits
    )
    if written != (0 if kept is None else kept.expires_at_ms):
        raise ScriptDisagreement(f"refund_failure wrote until {written}, the core {kept}")


def _check_sliding(
    name: str,
    reply: Sequence[Any],
    decided: SlidingDecision,
    kept: Kept[SlidingWindowState] | None,
    limit: int,
) -> None:
    """A sliding window's script (written only when it admitted) against the core."""
    if (_sliding(reply, limit), bool(reply[0])) != (decided, kept is not None):
        raise ScriptDisagreement(f"{name} decided {reply}, the core {decided}")


def limiter_args(request: AdmissionRequest) -> list[int]:
    """``admit_shared``'s arguments, in its order."""
    limits = request.limits
    return [
        epoch_ms(request.now),
        limits.window_ms,
        request.per_ip,
        request.global_limit,
        limits.global_reserve,
        request.per_merchant,
        request.merchant_failures,
        limits.failure_window_ms,
        request.per_user,
    ]


def nonce_until_ms(request: AdmissionRequest) -> int:
    """The nonce's expiry as the scripts take it (0: no nonce)."""
    claim = request.nonce
    return 0 if claim is None else nonce_kept_until_ms(claim, now=request.now)


def admission_calls(keys: KeySpace, request: AdmissionRequest) -> list[Call]:
    """The calls that admit ``request``: its limiters (one slot) and its nonce (its own)."""
    calls: list[Call] = []
    if request.meets_shared_limits:
        calls.append(("admit_shared", keys.limiters(request), limiter_args(request)))
    if request.nonce is not None:
        key = keys.nonce(request.nonce.nonce, request.user_id)
        calls.append(("claim_nonce", [key], [nonce_until_ms(request)]))
    return calls


def decode_admission(
    request: AdmissionRequest, replies: Sequence[tuple[str, Any]], *, failed_open: bool = False
) -> Admission:
    """The core's admission, checked against the replies of :func:`admission_calls`."""
    shared = nonce = None
    for name, reply in replies:
        if name == "admit_shared":
            shared = checked_shared_limits(request, reply)
        elif reply != NO_NONCE:
            nonce = decide_nonce(already_claimed=reply == NONCE_REUSED)
    return Admission.of(shared, nonce, failed_open=failed_open)


def _slot_tag(call: Call) -> str:
    """The hash tag of a call's first key (its slot)."""
    key = call[1][0]
    return key[: key.index("}") + 1]


def checked_shared_limits(request: AdmissionRequest, reply: Sequence[Any]) -> SharedLimitsDecided:
    ip, g, m, mf, u, counted, kept = reply
    read = SharedLimiterStates(
        ip_window=_sliding_read(ip),
        global_window=_fixed_read(g),
        merchant_bucket=_bucket_read(m),
        merchant_failures=_sliding_read(mf),
        user_bucket=_bucket_read(u),
    )
    decided = decide_shared_limits(read, request)
    script = (
        _sliding(ip, request.per_ip),
        _fixed(g, request.global_limit),
        _bucket(m, request.per_merchant),
        _sliding(mf, request.merchant_failures),
        _bucket(u, request.per_user),
        bool(counted),
        tuple(kept),
    )
    core = (
        decided.ip_decision,
        decided.global_decision,
        decided.merchant_decision,
        decided.merchant_failures,
        decided.user_decision,
        decided.counted,
        tuple(
            0 if k is None else k.expires_at_ms
            for k in (
                decided.ip_kept,
                decided.global_kept,
                decided.merchant_kept,
                decided.user_kept,
            )
        ),
    )
    if script != core:
        raise ScriptDisagreement(f"admit_shared decided {script}, the core {core}")
    return decided


# Each limiter's reply: {allowed, state fields..., remaining, retry, reset, fields as read}
# ({} when the limiter is off).


def _fixed_read(reply: Sequence[Any]) -> FixedWindowState | None:
    if not reply or reply[-1][0] is None:
        return None
    start, count = reply[-1]
    return FixedWindowState(window_start_ms=int(start), count=int(count))


def _sliding_read(reply: Sequence[Any]) -> SlidingWindowState | None:
    return _sliding_fields(reply[-1]) if reply else None


def _sliding_fields(fields: Sequence[Any]) -> SlidingWindowState | None:
    """A sliding window's ``s``, ``c`` and ``p`` as HMGET read them (``None``: nothing)."""
    if fields[0] is None:
        return None
    start, current, previous = fields
    return SlidingWindowState(
        window_start_ms=int(start), current=int(current), previous=int(previous)
    )


def _bucket_read(reply: Sequence[Any]) -> TokenBucketState | None:
    if not reply or reply[-1][0] is None:
        return None
    level, updated = reply[-1]
    return TokenBucketState(level=int(level), updated_ms=int(updated))


def _decided(
    reply: Sequence[Any], limit: int, state: StateT
) -> RequestAdmitted[StateT] | RateLimited[StateT]:
    allowed, remaining, retry, reset = reply[0], reply[-4], reply[-3], reply[-2]
    if allowed:
        return RequestAdmitted(state=state, limit=limit, remaining=remaining, reset_after_ms=reset)
    return RateLimited(state=state, limit=limit, retry_after_ms=retry, reset_after_ms=reset)


def _fixed(reply: Sequence[Any], limit: int) -> FixedDecision | None:
    if not reply:
        return None
    return _decided(reply, limit, FixedWindowState(window_start_ms=reply[1], count=reply[2]))


def _sliding(reply: Sequence[Any], limit: int) -> SlidingDecision | None:
    if not reply:
        return None
    _, start, current, previous, *_ = reply
    state = SlidingWindowState(window_start_ms=start, current=current, previous=previous)
    return _decided(reply, limit, state)


def _bucket(reply: Sequence[Any], limit: int) -> BucketDecision | None:
    if not reply:
        return None
    return _decided(reply, limit, TokenBucketState(level=reply[1], updated_ms=reply[2]))
