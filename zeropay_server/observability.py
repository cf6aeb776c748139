"""Prometheus metrics and structured logs.

Metrics cover the design document's dashboard (section 12): request rate and latency per
route, error rate (by status), active sessions, Redis memory, PostgreSQL pool in use, crypto
queue depth and audit backlog. ``deploy/prometheus/alerts.yml`` turns its warning and critical
thresholds into alert rules over these names. Labels never carry user data: routes are
templates (``/v1/verification/status/{session_id}``), never paths.

Logs are one JSON object per line. They are built from explicit fields, never from request
bodies or headers, and :class:`RedactingFilter` scrubs anything shaped like a digest, a
token or a session id from every message as a second line of defence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections import deque
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: Latency buckets around the seed's thresholds (P99 300 ms warning, 500 ms critical).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)


class SessionWindow:
    """Sessions opened within the session lifetime: an upper bound of the live ones, per
    instance, without scanning Redis."""

    def __init__(self, ttl_seconds: int) -> None:
        self._ttl = ttl_seconds
        self._opened: deque[float] = deque()

    def opened(self, now: float) -> None:
        self._opened.append(now)

    def active(self, now: float) -> int:
        while self._opened and self._opened[0] <= now - self._ttl:
            self._opened.popleft()
        return len(self._opened)


class Metrics:
    """The service's metrics, in a registry of their own (one per app)."""

    def __init__(self, session_ttl: int) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if self.multiprocess else self.registry
        self.requests = Counter(
            "zeropay_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "zeropay_http_request_duration_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.verifications = Counter(
            "zeropay_verifications", "Verification outcomes", ["outcome"], registry=registry
        )
        self.dependency_latency = Histogram(
            "zeropay_dependency_duration_seconds",
            "Latency of calls to Redis and PostgreSQL",
            ["dependency"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.active_sessions = Gauge(
            "zeropay_active_sessions",
            "Verification sessions opened within their lifetime",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.crypto_queue = Gauge(
            "zeropay_crypto_queue_depth",
            "Key derivations waiting for a worker",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.crypto_busy = Gauge(
            "zeropay_crypto_busy_workers",
            "Key derivations running",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_pool_in_use = Gauge(
            "zeropay_db_pool_in_use",
            "PostgreSQL connections checked out",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_pool_max = Gauge(
            "zeropay_db_pool_max",
            "PostgreSQL pool size",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.redis_memory = Gauge(
            "zeropay_redis_used_memory_bytes",
            "Redis used_memory (all cluster nodes)",
            registry=registry,
            multiprocess_mode="max",
        )
        self.redis_max_memory = Gauge(
            "zeropay_redis_max_memory_bytes",
            "Redis maxmemory (0: unlimited)",
            registry=registry,
            multiprocess_mode="max",
        )
        self.redis_cpu = Gauge(
            "zeropay_redis_cpu_seconds",
            "Redis used_cpu_sys + used_cpu_user (all nodes; cumulative)",
            registry=registry,
            multiprocess_mode="max",
        )
        self.audit_backlog = Gauge(
            "zeropay_audit_backlog",
            "Audit events appended and not yet in PostgreSQL",
            registry=registry,
            multiprocess_mode="max",
        )
        self.partition_horizon = Gauge(
            "zeropay_audit_partition_horizon_seconds",
            "End of the last monthly audit partition (Unix time): events before it have one",
            registry=registry,
            multiprocess_mode="max",
        )
        self.dependency_up = Gauge(
            "zeropay_dependency_up",
            "1 when the dependency answered its last check",
            ["dependency"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.account_locks = Counter(
            "zeropay_account_locks",
            "Accounts locked by failed verifications, by the merchant whose session locked them",
            ["merchant"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "zeropay_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, dead) and attempt "
            "number (10 stands for 10 and more)",
            ["outcome", "attempt"],
            registry=registry,
        )
        self.webhook_pending = Gauge(
            "zeropay_webhook_pending",
            "Webhook deliveries not yet made (the outbox's pending rows)",
            registry=registry,
            multiprocess_mode="max",
        )
        self.webhook_oldest = Gauge(
            "zeropay_webhook_oldest_pending_seconds",
            "Age of the oldest webhook event not yet delivered",
            registry=registry,
            multiprocess_mode="max",
        )
        self.webhook_dead = Gauge(
            "zeropay_webhook_dead_letters",
            "Webhook deliveries given up after 3 days",
            registry=registry,
            multiprocess_mode="max",
        )
        self.idempotency = Counter(
            "zeropay_idempotent_requests",
            "Requests with an Idempotency-Key, by outcome: ran (the first), replayed, "
            "in_progress (409), key_reused (422), not_kept (ran, its answer could not be kept)",
            ["outcome"],
            registry=registry,
        )
        self.limiter_failed_open = Counter(
            "zeropay_limiter_failed_open",
            "Requests admitted without counting while their limiters' Redis slot was "
            "unreachable (a Cluster failover), by limiter: requests, merchant_failures, "
            "auth_failures",
            ["limiter"],
            registry=registry,
        )
        self.background_failures = Counter(
            "zeropay_background_failures",
            "Background tasks (audit flusher, gauges) that failed and were restarted",
            ["task"],
            registry=registry,
        )
        self.sessions = SessionWindow(session_ttl)
        self._per_request: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def background_failed(self, task: str) -> None:
        self.background_failures.labels(task).inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request. The labelled series are looked up once per route,
        method and status (a handful each), not on every request."""
        key = (route, method, status)
        series = self._per_request.get(key)
        if series is None:
            series = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
            self._per_request[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format (aggregated over worker processes if there are several)."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


# ------------------------------------------------------------------------------ logging

_SECRET_SHAPES = re.compile(
    r"\b[0-9a-fA-F]{64}\b"  # digests, verifiers, token digests
    r"|\b[A-Za-z0-9_-]{43,64}\b"  # session ids, auth tokens, base64 keys
)


def redact(text: str) -> str:
    """``text`` with everything shaped like a digest, token, session id or key replaced."""
    return _SECRET_SHAPES.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    """Replace anything shaped like a secret in a record's message and fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _SECRET_SHAPES.sub("[redacted]", str(record.msg))
        if record.args:
            record.args = tuple(
                _SECRET_SHAPES.sub("[redacted]", a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                k: _SECRET_SHAPES.sub("[redacted]", v) if isinstance(v, str) else v
                for k, v in fields.items()
            }
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def _timestamp(epoch: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"
    )


class AccessLog:
    """The line logged for every answered request, written without a ``logging`` round.

    A ``logger.info`` with fields costs about 11 microseconds (a record, the redaction
    filter's regular expressions, the formatter's ``json.dumps``); this line's fields are
    the route template, method, status and duration, none of them from the request, so it
    needs no redaction and is built with one f-string (about 2 microseconds, the write
    included). Same JSON shape and stream as every other log line, under the handler's lock.
    When logging was not set up by :func:`configure_logging` (tests, an embedding
    application), the line goes through ``logging`` as usual.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("zeropay.access")

    def __call__(self, route: str, method: str, status: int, seconds: float) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        handler = _json_handler
        if handler is None:
            self._logger.info(
                "request",
                extra={
                    "fields": {
                        "route": route,
                        "method": method,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                    }
                },
            )
            return
        line = (
            f'{{"time": "{_timestamp(time.time())}", "level": "INFO", '
            f'"logger": "zeropay.access", "message": "request", "route": {json.dumps(route)}, '
            f'"method": "{method}", "status": {status}, '
            f'"duration_ms": {round(seconds * 1000, 2)}}}\n'
        )
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(line)
            handler.stream.flush()


#: The JSON handler :func:`configure_logging` installed, which :class:`AccessLog` writes to.
_json_handler: logging.StreamHandler[Any] | None = None


def configure_logging(level: str) -> None:
    """Send JSON logs to stderr, through the redaction filter."""
    global _json_handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    _json_handler = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)  # a level load_settings accepted (it refuses any other)
    for noisy in ("hypercorn.access", "hypercorn.error", "quart.app", "quart.serving"):
        logging.getLogger(noisy).handlers[:] = []
        logging.getLogger(noisy).propagate = noisy != "hypercorn.access"
