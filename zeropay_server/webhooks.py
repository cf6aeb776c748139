"""Webhook delivery: a supervised background task that claims due outbox rows in PostgreSQL
and sends each to its endpoint, signed, then records what happened.

- **Once per claimant**: rows are claimed under a lease (``FOR UPDATE SKIP LOCKED``), so two
  instances never send one row at once; an instance killed mid-delivery leaves its rows to
  be claimed again when their lease runs out. Delivery is at least once: receivers
  deduplicate by the event's ``id``.
- **Never in the way**: a delivery waits at most :data:`REQUEST_TIMEOUT_SECONDS`, at most
  :data:`PER_ENDPOINT` run at once per endpoint and :data:`TOTAL` in all, and nothing on a
  request's path waits for any of it. Rows are claimed as slots free up, never for an
  endpoint whose slots are all busy: a slow endpoint holds its own slots only, and the
  other endpoints' deliveries go on beside it.
- **Where**: the endpoint's host is resolved at each delivery and every address checked
  (:func:`zeropay_proto.webhooks.address_refused`); the request goes to the checked address
  (the name is kept for TLS and ``Host``), so a name rebound after the check cannot redirect
  it. Redirects are not followed: a 3xx is a failure.
- **Retries** follow :func:`zeropay_proto.webhooks.next_attempt_delay_ms` for 3 days, then
  the row is dead-lettered (``zeropay-server webhooks`` lists deliveries).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
import trio

from adapters.errors import DependencyUnavailable
from adapters.ports import Delivery, DurableStore, StoredEndpoint
from zeropay_proto import IntegrityError, epoch_ms
from zeropay_proto.crypto import MasterKeyring, open_sealed
from zeropay_proto.webhooks import (
    SIGNATURE_HEADER,
    address_refused,
    event_body,
    event_due_at_ms,
    event_receipt,
    gives_up,
    next_attempt_delay_ms,
    signature_header,
    webhook_event_id,
)

from .crypto import ReceiptSigner
from .observability import Metrics

log = logging.getLogger("zeropay.webhooks")

REQUEST_TIMEOUT_SECONDS = 5.0
TOTAL = 32
PER_ENDPOINT = 4
BATCH = 100
LEASE_MS = 30_000  # six times the request timeout: a live claimant is never overtaken
POLL_SECONDS = 1.0
USER_AGENT = "ZeroPay-Webhooks/1"


class WebhookDeliverer:
    """Delivers the outbox of ``store`` (``run``, forever)."""

    def __init__(
        self,
        store: DurableStore,
        signer: ReceiptSigner,
        keyring: MasterKeyring,
        metrics: Metrics,
        *,
        allow_loopback: bool,
        clock: Callable[[], float],
        entropy: Callable[[int], bytes],
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._store, self._signer, self._keyring = store, signer, keyring
        self._metrics = metrics
        self._allow_loopback = allow_loopback
        self._clock, self._entropy = clock, entropy
        self._timeout = timeout
        self._total = trio.CapacityLimiter(TOTAL)
        #: Deliveries in flight (claimed, not yet settled) per endpoint.
        self._in_flight: Counter[str] = Counter()
        #: Set when a delivery ends: its slots may take the next rows.
        self._finished = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver what is due, forever: claim as many rows as there are free slots, start
        each at once, and claim again; poll when nothing is due."""
        task_status.started()
        async with (
            httpx.AsyncClient(follow_redirects=False, trust_env=False) as http,
            trio.open_nursery() as nursery,
        ):
            gauges_at = -POLL_SECONDS
            while True:
                try:
                    started = await self.claim_and_start(http, nursery)
                    if trio.current_time() - gauges_at >= POLL_SECONDS:
                        gauges_at = trio.current_time()
                        await self.refresh_gauges()
                except DependencyUnavailable:
                    log.warning("webhook outbox unreachable", extra={"fields": {}})
                    started = 0
                if not started:
                    await self._rest()

    async def _rest(self) -> None:
        """Nothing was claimed: wait for a delivery to end (its endpoint may take more), or
        POLL_SECONDS for new rows to come due."""
        with trio.move_on_after(POLL_SECONDS):
            await self._finished.wait()
        self._finished = trio.Event()

    async def refresh_gauges(self) -> None:
        state = await self._store.outbox_state()
        self._metrics.webhook_pending.set(state.pending)
        self._metrics.webhook_oldest.set(state.oldest_pending_ms / 1000)
        self._metrics.webhook_dead.set(state.dead)

    async def claim_and_start(self, http: httpx.AsyncClient, nursery: trio.Nursery) -> int:
        """Claim due rows for the free slots (for each endpoint, only as many as it has room
        for: PER_ENDPOINT less its deliveries in flight), and start their deliveries; how
        many. Waits for a slot when all TOTAL are busy."""
        if self._total.available_tokens < 1:
            slot = object()
            await self._total.acquire_on_behalf_of(slot)  # until one delivery ends
            self._total.release_on_behalf_of(slot)
        room = {e: PER_ENDPOINT - n for e, n in self._in_flight.items() if n}
        free = int(self._total.available_tokens)
        claimed = await self._store.claim_deliveries(
            min(BATCH, free), LEASE_MS, per_endpoint=PER_ENDPOINT, room=room
        )
        for delivery in claimed:
            slot = object()  # the total's borrower, released by the delivery's task
            await self._total.acquire_on_behalf_of(slot)
            self._in_flight[delivery.endpoint.endpoint.endpoint_id] += 1
            nursery.start_soon(self._deliver_one, http, delivery, slot)
        return len(claimed)

    async def _deliver_one(self, http: httpx.AsyncClient, delivery: Delivery, slot: object) -> None:
        endpoint = delivery.endpoint.endpoint.endpoint_id
        try:
            try:
                status, error = await self._send(http, delivery)
            except Exception:
                # A bug on one row must not stop every other delivery (the task would
                # restart, and meet the row again): it is a failed attempt, retried with
                # back-off and dead-lettered in the end, and logged.
                log.exception("webhook delivery failed unexpectedly", extra={"fields": {}})
                status, error = None, "internal error"
            await self._settle(delivery, status, error)
        except DependencyUnavailable:
            # PostgreSQL went away: the lease runs out and the row is claimed again.
            log.warning("webhook delivery not recorded", extra={"fields": {}})
        finally:
            self._in_flight[endpoint] -= 1
            self._total.release_on_behalf_of(slot)
            self._finished.set()

    async def _send(
        self, http: httpx.AsyncClient, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        """POST the event; the status, or why there was none."""
        event = delivery.event
        stored = delivery.endpoint
        receipt = event_receipt(event) if delivery.event_type == "session.verified" else None
        jws = None if receipt is None else self._signer.jws(receipt)
        body = event_body(event, delivery.event_type, stored.endpoint.merchant_id, receipt_jws=jws)
        now = self._clock()
        try:
            secrets = self._secrets(stored, epoch_ms(now))
        except IntegrityError:
            return None, "the endpoint's secret cannot be opened"
        url = stored.endpoint.url
        target = await self._checked_target(url)
        if isinstance(target, str):
            return None, target
        address_url, host = target
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": host,
            SIGNATURE_HEADER: signature_header(secrets, int(now), body),
            "ZeroPay-Event-Id": webhook_event_id(event.event_id, delivery.event_type),
        }
        try:
            with trio.fail_after(self._timeout):
                response = await http.post(
                    address_url,
                    content=body,
                    headers=headers,
                    extensions={"sni_hostname": urlsplit(url).hostname or ""},
                )
        except trio.TooSlowError:
            return None, f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}"
        return response.status_code, None

    def _secrets(self, stored: StoredEndpoint, now_ms: int) -> list[bytes]:
        """The endpoint's signing secrets: the current one, and the previous one while a
        rotation still honours it."""
        until = stored.endpoint.previous_secret_until_ms
        sealed = (
            stored.sealed_secrets[:1] if until is None or now_ms >= until else stored.sealed_secrets
        )
        return [
            open_sealed(
                self._keyring,
                purpose="webhook-secret",
                user_id=stored.endpoint.endpoint_id,
                envelope=s,
            )
            for s in sealed
        ]

    async def _checked_target(self, url: str) -> tuple[str, str] | str:
        """The URL with its host replaced by a checked address, and the ``Host`` header; or
        why it may not be delivered to."""
        checked = await checked_addresses(url, allow_loopback=self._allow_loopback)
        if isinstance(checked, str):
            return checked
        parts = urlsplit(url)
        literal = f"[{checked[0]}]" if ":" in checked[0] else checked[0]
        netloc = f"{literal}:{_port(parts)}"
        host = parts.hostname or ""
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host_header

    async def _settle(self, delivery: Delivery, status: int | None, error: str | None) -> None:
        delivered = status is not None and 200 <= status < 300
        next_ms: int | None = None
        if not delivered:
            next_ms = next_attempt_delay_ms(delivery.attempt, self._entropy(2))
            now_ms = epoch_ms(self._clock())
            due_ms = event_due_at_ms(delivery.event, delivery.event_type)
            if gives_up(due_ms, now_ms + next_ms):
                next_ms = None
            if error is None:
                error = f"HTTP {status}"
            log.info(
                "webhook delivery failed",
                extra={"fields": {"error": error, "attempt": delivery.attempt}},
            )
        outcome = "delivered" if delivered else ("retrying" if next_ms is not None else "dead")
        attempt = str(min(delivery.attempt, 10))
        self._metrics.webhook_deliveries.labels(outcome, attempt).inc()
        await self._store.settle_delivery(
            delivery, delivered=delivered, status=status, error=error, next_attempt_ms=next_ms
        )


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


async def checked_addresses(url: str, *, allow_loopback: bool) -> list[str] | str:
    """Every address ``url``'s host resolves to now, if each may be delivered to
    (:func:`zeropay_proto.webhooks.address_refused`); else why not. The registering command
    and each delivery ask the same."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        found = await trio.socket.getaddrinfo(host, _port(parts), type=trio.socket.SOCK_STREAM)
    except OSError:
        return f"{host} did not resolve"
    addresses = [str(info[4][0]) for info in found]
    for address in addresses:
        why = address_refused(address, allow_loopback=allow_loopback)
        if why is not None:
            return f"{host} resolves to {address}, a {why} address"
    return addresses
