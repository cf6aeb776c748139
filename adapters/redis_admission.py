"""Admission on Redis: the script calls that carry out :mod:`zeropay_proto.admission`, and the
check of every reply against it.

``admit_rl`` (the shared limiters, in the ``{rl}`` slot) and ``admit_user`` (the nonce and the
user's bucket, in the user's slot) return what they decided, what they read and the expiries
they set. :func:`decode_admission` replays the core on what they read: a decision, a count or
an expiry that differs raises :class:`ScriptDisagreement`, so the core stays the reference at
run time. The Admission returned is the core's. :class:`RedisAdmission` is the port's part of
the store.
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
    SharedLimiterStates,
    SharedLimitsDecided,
    SlidingDecision,
    UserBucketDecided,
    count_merchant_lock,
    decide_shared_limits,
    decide_user_bucket,
    nonce_kept_until_ms,
)
from zeropay_proto.ratelimit import StateT

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
        calls = admission_calls(self.keys, request, clustered=self.clustered)
        results = await self._run(calls) if calls else []
        return decode_admission(request, [(c[0], r) for c, r in zip(calls, results, strict=True)])

    @redis_call
    async def count_merchant_lock(self, merchant_id: str, now: float, window_ms: int) -> int:
        ((start, count, expires_at_ms, read),) = await self._run(
            [("count_lock", [self.keys.merchant_locks(merchant_id)], [epoch_ms(now), window_ms])]
        )
        kept = count_merchant_lock(_fixed_fields(read), now=now, window_ms=window_ms)
        script = (FixedWindowState(window_start_ms=start, count=count), expires_at_ms)
        if script != (kept.state, kept.expires_at_ms):
            raise ScriptDisagreement(f"count_lock decided {script}, the core {kept}")
        return kept.state.count


def shared_limits_call(keys: KeySpace, request: AdmissionRequest) -> Call:
    """``admit_rl``: the global, per-IP and merchant limiters, in one slot."""
    limits, merchant = request.limits, request.merchant_id or "-"
    return (
        "admit_rl",
        [
            keys.global_limit(),
            keys.ip_limit(request.client_ip),
            keys.merchant_limit(merchant),
            keys.merchant_locks(merchant),
        ],
        [
            epoch_ms(request.now),
            limits.window_ms,
            limits.global_limit,
            limits.per_ip,
            request.per_merchant,
            request.merchant_lock_cap,
            limits.lock_window_ms,
        ],
    )


def nonce_until_ms(request: AdmissionRequest) -> int:
    """The nonce's expiry as the scripts take it (0: no nonce)."""
    claim = request.nonce
    return 0 if claim is None else nonce_kept_until_ms(claim, now=request.now)


def admission_calls(keys: KeySpace, request: AdmissionRequest, *, clustered: bool) -> list[Call]:
    """The calls that admit ``request``: each touches one slot (the nonce and the user's bucket
    share a call where they share a slot, always standalone)."""
    calls = [shared_limits_call(keys, request)] if request.meets_shared_limits else []
    per_user, nonce_until = request.per_user, nonce_until_ms(request)
    now_ms, window = epoch_ms(request.now), request.limits.window_ms
    bucket = keys.user(request.user_id, "tb") if request.user_id else ""
    nonce_key = keys.nonce(request.nonce.nonce) if request.nonce else bucket
    claim = request.nonce
    if (
        per_user
        and claim
        and clustered
        and keys.group_of(request.user_id or "") != keys.nonce_group(claim.nonce)
    ):
        calls.append(("admit_user", [bucket, bucket], [now_ms, window, per_user, 0]))
        calls.append(("admit_user", [nonce_key, nonce_key], [now_ms, window, 0, nonce_until]))
    elif per_user or nonce_until:
        # Only the keys in use: an unused key could lie in another slot.
        keys_used = [nonce_key, bucket if per_user else nonce_key]
        calls.append(("admit_user", keys_used, [now_ms, window, per_user, nonce_until]))
    return calls


def decode_admission(request: AdmissionRequest, replies: Sequence[tuple[str, Any]]) -> Admission:
    """The core's admission, checked against the replies of :func:`admission_calls`."""
    shared = user = nonce = None
    for name, reply in replies:
        if name == "admit_rl":
            shared = checked_shared_limits(request, reply)
            continue
        code, bucket_reply, kept = reply
        if code != NO_NONCE:
            nonce = decide_nonce(already_claimed=code == NONCE_REUSED)
        if bucket_reply:
            user = checked_user_bucket(request, bucket_reply, kept)
    return Admission.of(shared, user, nonce)


def checked_shared_limits(request: AdmissionRequest, reply: Sequence[Any]) -> SharedLimitsDecided:
    g, ip, m, ml, counted, (g_kept, ip_kept, m_kept) = reply
    read = SharedLimiterStates(
        global_window=_fixed_read(g),
        ip_window=_sliding_read(ip),
        merchant_bucket=_bucket_read(m),
        merchant_locks=_fixed_read(ml),
    )
    decided = decide_shared_limits(read, request)
    limits = request.limits
    script = (
        _fixed(g, limits.global_limit),
        _sliding(ip, limits.per_ip),
        _bucket(m, request.per_merchant),
        _fixed(ml, request.merchant_lock_cap),
        bool(counted),
        (g_kept, ip_kept, m_kept),
    )
    core = (
        decided.global_decision,
        decided.ip_decision,
        decided.merchant_decision,
        decided.merchant_locks,
        decided.counted,
        tuple(
            0 if kept is None else kept.expires_at_ms
            for kept in (decided.global_kept, decided.ip_kept, decided.merchant_kept)
        ),
    )
    if script != core:
        raise ScriptDisagreement(f"admit_rl decided {script}, the core {core}")
    return decided


def checked_user_bucket(
    request: AdmissionRequest, reply: Sequence[Any], kept: int
) -> UserBucketDecided:
    decided = decide_user_bucket(_bucket_read(reply), request)
    script = (_bucket(reply, request.per_user), kept)
    if script != (decided.decision, decided.kept.expires_at_ms):
        raise ScriptDisagreement(f"admit_user decided {script}, the core {decided}")
    return decided


# Each limiter's reply: {allowed, state fields..., remaining, retry, reset, fields as read}
# ({} when the limiter is off).


def _fixed_read(reply: Sequence[Any]) -> FixedWindowState | None:
    return _fixed_fields(reply[-1]) if reply else None


def _fixed_fields(fields: Sequence[Any]) -> FixedWindowState | None:
    """A fixed window's ``s`` and ``c`` as HMGET read them (``None``: nothing stored)."""
    if fields[0] is None:
        return None
    start, count = fields
    return FixedWindowState(window_start_ms=int(start), count=int(count))


def _sliding_read(reply: Sequence[Any]) -> SlidingWindowState | None:
    if not reply or reply[-1][0] is None:
        return None
    start, current, previous = reply[-1]
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
