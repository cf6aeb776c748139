"""The storage ports: what the server needs from Redis and PostgreSQL, as ``typing.Protocol``s.

Every adapter (in-memory, Redis standalone or Cluster, PostgreSQL) implements these with the
same semantics; one contract suite (``tests/adapters``) runs unchanged against each.

A method is one request's whole storage step for that store, so the Redis adapter can make it
one atomic Lua script or one pipeline: one round trip per hash slot, and one crossing of the
Trio/asyncio bridge. Decisions are the core's: an adapter persists what
:mod:`zeropay_proto` decided, or (inside a Lua script, atomically) computes exactly what the
core would, which the differential tests check.

Every method raises :class:`adapters.errors.DependencyUnavailable` when its store cannot be
reached, so the server fails closed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from zeropay_proto import (
    AccountLocked,
    AttemptReleased,
    AttemptReserved,
    BearerToken,
    ChallengeIssued,
    ChallengeWindow,
    Policy,
    Session,
    SessionClosed,
    VerificationFailed,
    VerificationSucceeded,
    WrappedKey,
)
from zeropay_proto.admission import Admission, AdmissionRequest, Limits, SlidingDecision
from zeropay_proto.audit import AuditEvent
from zeropay_proto.idempotency import Claim, KeptAnswer
from zeropay_proto.merchants import MerchantCredential
from zeropay_proto.passkeys import Passkey
from zeropay_proto.webhooks import WebhookEndpoint

# ------------------------------------------------------------------------------ admission


class AdmissionPort(Protocol):
    """Rate limits, nonce claims, merchants' failure budgets and wrong keys
    (:mod:`zeropay_proto.admission`)."""

    async def admit(self, request: AdmissionRequest) -> Admission:
        """Apply every limiter (atomically, in their one slot) and claim the nonce. Where the
        limiters' slot is unreachable they fail open for a while
        (:attr:`~zeropay_proto.admission.Admission.failed_open`); the nonce never does."""
        ...

    async def reserve_merchant_failure(
        self, merchant_id: str, now: float, limits: Limits
    ) -> SlidingDecision | None:
        """Atomically: reserve one failure in the merchant's budget, or refuse (nothing
        stored), as :func:`zeropay_proto.admission.reserve_merchant_failure` decides. The
        admitted decision's state names the window the reservation was counted in. ``None``:
        the budget's slot is unreachable and fails open
        (:func:`zeropay_proto.admission.limiter_fails_open`)."""
        ...

    async def refund_merchant_failure(
        self, merchant_id: str, reserved_window_ms: int, limits: Limits
    ) -> None:
        """Atomically: give back a reserved failure that did not happen
        (:func:`zeropay_proto.admission.refund_merchant_failure`)."""
        ...

    async def count_auth_failure(
        self, client_ip: str, now: float, limits: Limits
    ) -> SlidingDecision | None:
        """A wrong merchant key from ``client_ip``: counted, or refused (nothing stored) once
        the address has presented :attr:`Limits.auth_failures` in the window. ``None``: not
        counted, the slot failing open."""
        ...


# ------------------------------------------------------------------------------ sessions


@dataclass(frozen=True, kw_only=True)
class CachedEnrollment:
    """A record cache entry: what PostgreSQL held for a user when initiate read it.

    ``sealed_record`` ``None``: the user was not enrolled. ``wrapped_key`` ``None`` beside a
    record: an entry written before the cache held the wrapped key, which verify does not
    use (it reads PostgreSQL). Why Redis may hold the wrapped key: README, "The record
    cache"; in short, it is as useless without the factor digests and the pepper as it is in
    PostgreSQL, and the record beside it is sealed under the master key."""

    sealed_record: bytes | None
    wrapped_key: WrappedKey | None
    #: The user's passkeys (their sign counts as PostgreSQL had them then, which only the
    #: durable store's conditional write trusts: ``PasskeyPort.record_sign_count``).
    passkeys: tuple[Passkey, ...] = ()

    @property
    def usable_by_verify(self) -> bool:
        """Whether verify can decide from this entry alone (not enrolled, or all of it)."""
        return self.sealed_record is None or self.wrapped_key is not None


#: The "not enrolled" entry.
NOT_ENROLLED = CachedEnrollment(sealed_record=None, wrapped_key=None)


@dataclass(frozen=True, kw_only=True)
class InitiateSnapshot:
    """What opening a session needs: the user's record cache entry (``None``: not cached)
    and the challenge window."""

    cached: CachedEnrollment | None
    window: ChallengeWindow | None


@dataclass(frozen=True, kw_only=True)
class RecordCache:
    """What initiate read from PostgreSQL on a cache miss, to cache for ``ttl_ms``."""

    entry: CachedEnrollment
    ttl_ms: int


ReserveOutcome = SessionClosed | AccountLocked | AttemptReserved


@dataclass(frozen=True, kw_only=True)
class FailureReserved:
    """A failure a verify reserved in its session's merchant's budget
    (:meth:`AdmissionPort.reserve_merchant_failure`): the window it was counted in."""

    merchant_id: str
    window_start_ms: int
    limits: Limits


ConcludeOutcome = VerificationSucceeded | VerificationFailed | SessionClosed


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """A live auth token: whose, for which session, until when, and what it proved (when it
    was issued and how many factors its verification challenged)."""

    user_id: str
    session_id: str
    expires_at_ms: int
    issued_at_ms: int
    factors_proven: int
    #: The user's generation the token was issued under (it is valid only while current).
    generation: int = 0


class SessionPort(Protocol):
    """Verification sessions, challenge windows, lockouts, tokens and the record cache.

    All of one user's keys live in one hash slot; the audit event of a state change is appended
    in the same atomic step as the change.
    """

    async def load_for_initiate(self, user_id: str) -> InitiateSnapshot:
        """The user's cached record and current challenge window."""
        ...

    async def cache_record(self, user_id: str, entry: CachedEnrollment, ttl_ms: int) -> None:
        """Cache ``entry`` for ``ttl_ms``, unless the user's record is held (below)."""
        ...

    async def invalidate_record(self, user_id: str, hold_ms: int) -> None:
        """Drop the user's record cache entry and refuse to cache one for ``hold_ms``; move
        the user's generation on (kept :data:`~zeropay_proto.GENERATION_KEPT_MS`).

        An update or a delete calls it before changing PostgreSQL (and makes no change if it
        fails); a new enrollment just after its insert (undone if it fails). A request that
        read the old row may try to cache it a moment later, and the hold refuses it;
        ``hold_ms`` exceeds the time between a request's read and its write, so once it ends
        no request holding a row older than the change is left (README, "The record cache").
        """
        ...

    async def store_session(
        self,
        issued: ChallengeIssued,
        now_ms: int,
        audit: AuditEvent,
        grace_ms: int,
        *,
        record_cache: RecordCache | None = None,
    ) -> None:
        """Store a new session (and its window when newly drawn), cache ``record_cache`` when
        given (initiate read the record from PostgreSQL) and the record is not held, and
        append ``audit``, atomically.

        The session is kept ``grace_ms`` past its expiry so that status can say "expired".
        """
        ...

    async def admit_and_load(self, request: AdmissionRequest) -> tuple[Admission, InitiateSnapshot]:
        """Initiate's first step: :meth:`AdmissionPort.admit` and :meth:`load_for_initiate` in
        one round trip (the reads are harmless if the request turns out to be refused)."""
        ...

    async def admit_and_reserve(
        self,
        request: AdmissionRequest,
        session_id: str,
        policy: Policy,
        lock_audit: AuditEvent,
    ) -> tuple[Admission, ReserveOutcome | None, CachedEnrollment | None, int]:
        """Verify's first step: admission and, only if the request was admitted (no limiter
        refused, the nonce was fresh), :meth:`reserve_attempt` for ``request.user_id``, the
        user's generation (read no later than the record: what :meth:`conclude_attempt` is
        told) and record cache entry (``None``: not cached). The outcome is ``None`` when
        refused or when there is no such session. One atomic round trip on standalone Redis
        (the reads ride along); two on a Cluster, where the keys span slots."""
        ...

    async def load_session(self, session_id: str, user_id: str) -> Session | None:
        """A stored session, or ``None``."""
        ...

    async def reserve_attempt(
        self, session_id: str, user_id: str, now: float, policy: Policy, lock_audit: AuditEvent
    ) -> ReserveOutcome | None:
        """Atomically: load the session and lockout, decide as
        :func:`zeropay_proto.reserve_attempt` does, persist a reservation, and append
        ``lock_audit`` if this reservation locked the account. ``None``: no such session."""
        ...

    async def release_attempt(
        self, session_id: str, user_id: str, *, attempt: int, now: float, policy: Policy
    ) -> AttemptReleased | None:
        """Atomically: give back reservation ``attempt`` that met an outage before anything
        was compared, as :func:`zeropay_proto.release_attempt` decides on the stored session
        and lockout. ``None``: the session id does not name this user."""
        ...

    async def conclude_attempt(
        self,
        session_id: str,
        user_id: str,
        *,
        attempt: int,
        key_unwrapped: bool,
        now: float,
        token_entropy: bytes,
        policy: Policy,
        audit: AuditEvent,
        generation: int = 0,
        refund: FailureReserved | None = None,
    ) -> ConcludeOutcome | None:
        """``refund``, when given, is a reserved merchant failure that a proven attempt gives
        back (:meth:`AdmissionPort.refund_merchant_failure`), in the same round trip.

        Atomically: decide as :func:`zeropay_proto.conclude_attempt` on the session and
        the user's generation as stored (``generation``: the one read with the reservation),
        persist it if it was pending (clearing the lockout and storing the token, with its
        generation, on success), and append ``audit`` (its action is rewritten to the
        outcome's)."""
        ...

    async def token_info(self, token: BearerToken) -> TokenInfo | None:
        """A live token's facts, or ``None`` (unknown, expired, revoked, or issued under a
        generation that is no longer current: :func:`zeropay_proto.token_valid`)."""
        ...

    async def revoke_token(self, token: BearerToken, audit: AuditEvent) -> bool:
        """Delete a token; ``False`` if it was not live. Appends ``audit`` when it was."""
        ...

    async def revoke_user_tokens(self, user_id: str, audit: AuditEvent) -> int:
        """Revoke every live token of a user (their enrollment or passkeys changed: no token
        may outlive what it proved), move their generation on, and append ``audit``. Returns
        how many were live."""
        ...

    async def forget_user(self, user_id: str, audit: AuditEvent) -> None:
        """Drop everything Redis holds for a user except live sessions (they expire and can no
        longer verify, since the record is gone) and the generation, which moves on; append
        ``audit``."""
        ...


# ------------------------------------------------------------------------------ PSP sessions


class PspSessionPort(Protocol):
    """Payment-provider checkout sessions, shared by every instance (the original kept them in
    a process-local Map)."""

    async def store_psp_session(
        self, psp_session_id: str, data: Mapping[str, Any], ttl_ms: int
    ) -> None:
        """Store a checkout session for ``ttl_ms`` (``PSP_SESSION_TTL``)."""
        ...

    async def load_psp_session(self, psp_session_id: str) -> dict[str, Any] | None:
        """A live checkout session, or ``None``."""
        ...


# ------------------------------------------------------------------------------ audit trail


@dataclass(frozen=True, kw_only=True)
class StreamEntry:
    """One pending audit event in a stream, with what acknowledging it needs."""

    stream: str
    entry_id: str
    event: AuditEvent


class AuditStreamPort(Protocol):
    """The durable, asynchronous audit buffer (a Redis Stream per slot group)."""

    async def append(self, event: AuditEvent) -> None:
        """Append one event (for actions not appended by an atomic step)."""
        ...

    async def read_batch(
        self, consumer: str, count: int, reclaim_idle_ms: int, *, reclaim: bool = True
    ) -> list[StreamEntry]:
        """Events for ``consumer``, up to ``count`` from each stream: when ``reclaim``, first
        those left pending for ``reclaim_idle_ms`` (by a dead flusher), then new ones."""
        ...

    async def acknowledge(self, entries: Sequence[StreamEntry]) -> None:
        """Mark entries written (and drop them from the stream)."""
        ...

    async def backlog(self) -> int:
        """Events appended and not yet acknowledged."""
        ...


class AuditLogPort(Protocol):
    """The audit table (PostgreSQL ``audit_log``)."""

    async def write_events(self, events: Sequence[AuditEvent]) -> int:
        """Insert events idempotently by ``event_id``; returns how many were new."""
        ...

    async def user_trail(self, user_id: str, limit: int) -> list[AuditEvent]:
        """A user's events, oldest first (may read a replica)."""
        ...


# ------------------------------------------------------------------------------ enrollments


@dataclass(frozen=True, kw_only=True)
class StoredEnrollment:
    """The durable enrollment row: the wrapped key and the sealed record (its master copy)."""

    wrapped_key: WrappedKey
    sealed_record: bytes
    device_id: str
    created_at_ms: int
    updated_at_ms: int
    #: The user's passkeys, read with the row (``load_enrollment``); not written with it.
    passkeys: tuple[Passkey, ...] = ()


class EnrollmentPort(Protocol):
    """Durable enrollments (PostgreSQL ``wrapped_keys``)."""

    async def insert_enrollment(self, enrollment: StoredEnrollment) -> bool:
        """Insert; ``False`` if the user is already enrolled."""
        ...

    async def replace_enrollment(self, enrollment: StoredEnrollment) -> bool:
        """Replace an existing row; ``False`` if the user is not enrolled."""
        ...

    async def load_enrollment(self, user_id: str) -> StoredEnrollment | None:
        """One round trip, from the primary (security decisions never read a replica)."""
        ...

    async def delete_enrollment(self, user_id: str) -> bool:
        """Delete the row; ``False`` if there was none."""
        ...

    async def export_enrollment(self, user_id: str) -> StoredEnrollment | None:
        """The row for a GDPR export (may read a replica)."""
        ...


# ------------------------------------------------------------------------------ passkeys


class PasskeyPort(Protocol):
    """Users' passkeys (PostgreSQL ``passkeys``): public keys and sign counts, no secrets."""

    async def add_passkey(self, user_id: str, passkey: Passkey, limit: int) -> bool:
        """Register ``passkey`` for an enrolled user who has fewer than ``limit``; ``False``
        if the user is not enrolled, has ``limit`` already, or the credential is known."""
        ...

    async def passkeys(self, user_id: str) -> list[Passkey]:
        """The user's passkeys, oldest first."""
        ...

    async def delete_passkey(self, user_id: str, credential_id: bytes) -> bool:
        """Remove one; ``False`` if the user has no such passkey."""
        ...

    async def record_sign_count(self, user_id: str, credential_id: bytes, count: int) -> bool:
        """Store a verified assertion's count if it rises (or stays 0 for an authenticator
        without a counter); ``False`` if a concurrent assertion got there first, or the
        passkey is gone: then this one is refused."""
        ...


# ------------------------------------------------------------------------------ merchants


class MerchantPort(Protocol):
    """Merchant API keys (PostgreSQL ``merchant_keys``): hashes only, never keys."""

    async def add_merchant_key(self, credential: MerchantCredential) -> None:
        """Store a newly issued key."""
        ...

    async def merchant_keys(self, *, include_revoked: bool = False) -> list[MerchantCredential]:
        """Every live key (and, asked, the revoked ones), oldest first."""
        ...

    async def revoke_merchant_key(self, key_id: str, now_ms: int) -> bool:
        """Revoke a live key; ``False`` if there is no such live key."""
        ...

    async def name_merchant(self, merchant_id: str, display_name: str) -> None:
        """Set (or change) the name payers are shown for the merchant."""
        ...

    async def merchant_names(self) -> dict[str, str]:
        """Every merchant's display name, by merchant id."""
        ...


# ------------------------------------------------------------------------------ the stores


@dataclass(frozen=True, kw_only=True)
class StoredEndpoint:
    """A webhook endpoint and its signing secrets, sealed (the newest first)."""

    endpoint: WebhookEndpoint
    sealed_secrets: tuple[bytes, ...]


class WebhookEndpointPort(Protocol):
    """Merchants' webhook endpoints (PostgreSQL), managed by ``zeropay-server webhooks``."""

    async def add_webhook_endpoint(
        self, endpoint: WebhookEndpoint, sealed_secret: bytes
    ) -> None: ...

    async def webhook_endpoints(self, merchant_id: str | None = None) -> list[StoredEndpoint]:
        """Every endpoint (of ``merchant_id``), enabled or not, oldest first."""
        ...

    async def disable_webhook_endpoint(self, endpoint_id: str) -> bool:
        """Stop delivering to it; ``False`` if there is no such endpoint enabled."""
        ...

    async def rotate_webhook_secret(
        self, endpoint_id: str, sealed_secret: bytes, previous_until_ms: int
    ) -> bool:
        """Sign with ``sealed_secret`` from now on, and with the current one beside it
        until ``previous_until_ms``; ``False`` if there is no such endpoint."""
        ...


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One outbox row claimed for delivery: the event, where it goes, and which attempt."""

    event: AuditEvent
    event_type: str
    endpoint: StoredEndpoint
    attempt: int


@dataclass(frozen=True, kw_only=True)
class OutboxState:
    """The outbox at a glance: undelivered rows, the oldest one's age, the dead letters."""

    pending: int = 0
    oldest_pending_ms: int = 0
    dead: int = 0


@dataclass(frozen=True, kw_only=True)
class OutboxRow:
    """One delivery as an operator sees it."""

    event_id: str
    endpoint_id: str
    event_type: str
    state: str
    attempts: int
    at_ms: int
    next_attempt_at_ms: int
    last_status: int | None
    last_error: str | None


class WebhookOutboxPort(Protocol):
    """The webhook outbox (PostgreSQL), filled by :meth:`AuditLogPort.write_events`."""

    async def claim_deliveries(
        self, limit: int, lease_ms: int, *, per_endpoint: int, room: Mapping[str, int]
    ) -> list[Delivery]:
        """Up to ``limit`` due rows, at most ``per_endpoint`` of an endpoint, or its
        ``room`` where given; each claimed for ``lease_ms`` (its attempt counted): no other
        claimant gets a row while its lease runs."""
        ...

    async def settle_delivery(
        self,
        delivery: Delivery,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_ms: int | None,
    ) -> None:
        """Record an attempt: delivered, or failed and due again in ``next_attempt_ms``
        (``None``: dead-lettered)."""
        ...

    async def outbox_state(self) -> OutboxState: ...

    async def webhook_deliveries(self, endpoint_id: str | None, limit: int) -> list[OutboxRow]:
        """The newest outbox rows (of ``endpoint_id``), newest first."""
        ...

    async def requeue_deliveries(
        self,
        *,
        event_id: str | None,
        since_ms: int | None,
        event_types: Collection[str] | None = None,
    ) -> int:
        """Make rows due now again (delivered or dead ones too): the audit event's (of
        ``event_types`` only, if given), or every row since ``since_ms``; how many."""
        ...


class HealthPort(Protocol):
    """Readiness: whether the store accepts writes now."""

    async def ping(self) -> bool:
        """True if a write succeeded (Redis: in every slot group a request writes)."""
        ...


class PasskeyCeremonyPort(Protocol):
    """A passkey registration's challenge, between its options and its response."""

    async def store_passkey_challenge(
        self, user_id: str, challenge: bytes, ttl_ms: int, *, enrollment: bool = False
    ) -> None:
        """Keep the user's registration challenge (a new one replaces the last). An
        ``enrollment`` one is kept apart: it is the grant an enrollment gives its client to
        register a passkey without a token."""
        ...

    async def load_passkey_challenge(
        self, user_id: str, *, enrollment: bool = False
    ) -> bytes | None:
        """The user's registration challenge, left in place: a response is checked against
        it first, and only one that verifies takes it (:meth:`take_passkey_challenge`)."""
        ...

    async def take_passkey_challenge(
        self, user_id: str, challenge: bytes, *, enrollment: bool = False
    ) -> bool:
        """Remove the user's registration challenge if it is still ``challenge``, atomically;
        ``False`` if it is gone or was replaced. Each is good for one verified response, and a
        response that did not verify never spends it."""
        ...


class EnrollmentGrantPort(Protocol):
    """Enrollment grants spent (:mod:`zeropay_proto.grants`): each is good for one use."""

    async def spend_enrollment_grant(self, user_id: str, grant_id: str, until_ms: int) -> bool:
        """Mark the user's grant ``grant_id`` used, atomically, until ``until_ms`` (its
        expiry: after it the token is refused anyway); ``False`` if it was already used."""
        ...


class MerchantRevocationPort(Protocol):
    """Merchant key revocations, published where every instance reads them within seconds
    (Redis), so that a revocation holds while PostgreSQL, the keys' home, is unreachable."""

    async def publish_merchant_key_revoked(self, key_id: str) -> None:
        """Add ``key_id`` to the revoked keys."""
        ...

    async def revoked_merchant_keys(self) -> frozenset[str]:
        """Every revoked key id published."""
        ...


#: Whose idempotency keys a route's are: the authenticated merchant's, or the named user's.
ScopeKind = Literal["merchant", "user"]


@dataclass(frozen=True)
class IdempotencyScope:
    """Whose idempotency keys: a merchant's (kept in its slot) or a user's (in theirs)."""

    kind: ScopeKind
    owner: str

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.owner}"


class IdempotencyPort(Protocol):
    """Idempotency keys (:mod:`zeropay_proto.idempotency`): a claim while the first request
    runs, then its answer, under the key hashed within its scope."""

    async def claim_idempotency(
        self, scope: IdempotencyScope, key: str, claim: Claim, lease_ms: int
    ) -> Claim | KeptAnswer | None:
        """Store ``claim`` under ``key`` for ``lease_ms`` unless something is held there,
        atomically; what was held, or ``None`` if the claim was stored."""
        ...

    async def settle_idempotency(
        self,
        scope: IdempotencyScope,
        key: str,
        claim: Claim,
        answer: KeptAnswer | None,
        ttl_ms: int,
    ) -> bool:
        """Replace ``claim`` by ``answer`` (kept ``ttl_ms``), or remove it (``None``), if
        it is still held; ``False`` if it lapsed meanwhile."""
        ...


class StateStore(
    AdmissionPort,
    EnrollmentGrantPort,
    IdempotencyPort,
    MerchantRevocationPort,
    SessionPort,
    PspSessionPort,
    PasskeyCeremonyPort,
    AuditStreamPort,
    HealthPort,
    Protocol,
):
    """Everything the server keeps in Redis (the in-memory store in the embedded default)."""


class DurableStore(
    EnrollmentPort,
    PasskeyPort,
    AuditLogPort,
    MerchantPort,
    WebhookEndpointPort,
    WebhookOutboxPort,
    HealthPort,
    Protocol,
):
    """Everything the server keeps in PostgreSQL (the in-memory store in the embedded
    default)."""


class ServerStatsPort(Protocol):
    """Redis's own figures, for the gauges (Redis only)."""

    async def server_stats(self) -> tuple[int, int, float]:
        """``used_memory``, ``maxmemory`` and CPU seconds, summed over the nodes."""
        ...


# ------------------------------------------------------------------------------ maintenance


@dataclass(frozen=True, kw_only=True)
class MaintenanceReport:
    """What one maintenance run did. ``ran`` false: another instance held the lock.
    ``horizon``: the end of the last monthly audit partition."""

    ran: bool
    horizon: dt.datetime | None
    partitions_created: int = 0
    rows_moved: int = 0
    partitions_dropped: int = 0
    retention_applied: bool = False


class MaintenancePort(Protocol):
    """The durable store's upkeep (PostgreSQL: audit partitions ahead, retention), one
    instance at a time."""

    async def maintain(
        self,
        now: dt.datetime,
        *,
        months_ahead: int = ...,
        keep_days: int = ...,
        retention_every: dt.timedelta = ...,
    ) -> MaintenanceReport:
        """Do what is due at ``now``; ``ran`` is false if another instance is doing it."""
        ...
