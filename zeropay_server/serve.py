"""Serving: the Trio entry point, graceful shutdown, and worker processes.

Serve from code (docs/stack.md): ``trio.run`` -> the crypto worker context -> the
trio-asyncio loop (only with Redis and PostgreSQL) -> the runtime -> Hypercorn's Trio worker,
with the audit flusher and PostgreSQL's maintenance (where the role and worker number say so)
and the gauge refresher beside it in one nursery. On SIGTERM or SIGINT
Hypercorn stops accepting, lets in-flight requests finish (``graceful_timeout``), and then the
audit buffer is drained before the background tasks are cancelled.

``--workers N`` runs N such processes, each with its own listening socket on the same address
(``SO_REUSEPORT``: the kernel balances connections). Prometheus metrics are then aggregated
across them through ``PROMETHEUS_MULTIPROC_DIR``. Only the first of them runs the audit
flusher (``--role all``); ``--role api`` runs none and ``--role audit`` nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping

import trio
import trio_parallel
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import wrap_app

from adapters.bridge import open_loop

from .app import create_app
from .config import Settings, load_settings
from .crypto import init_crypto_worker
from .listener import serve_http, shielded_sends
from .observability import configure_logging
from .runtime import Runtime, open_runtime
from .supervise import supervise

log = logging.getLogger("zeropay.serve")

#: In-flight requests get this long to finish on shutdown; the audit drain as long again.
GRACEFUL_TIMEOUT = 10.0


def hypercorn_config(settings: Settings, workers: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [settings.bind]
    config.workers = workers  # > 1 sets SO_REUSEPORT on the sockets
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.accesslog = None
    config.errorlog = None  # Hypercorn's messages propagate to the JSON root logger
    config.keep_alive_timeout = settings.keep_alive_timeout
    config.backlog = 1024
    return config


#: Descriptors kept free for everything but client connections: the Redis and PostgreSQL
#: pools (up to 4 x 64 and 50 + 10), the crypto workers' pipes, logs and listeners.
RESERVED_DESCRIPTORS = 512


def trusted_peer(
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> Callable[[str], bool]:
    """Whether a peer address is a trusted proxy (whose connections are many clients')."""

    @functools.lru_cache(maxsize=1024)
    def trusted(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in proxies)

    return trusted


def connection_bound(wanted: int) -> int:
    """Raise this process's descriptor limit to its hard limit, and return how many client
    connections fit under it (at most ``wanted``, at least 1)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_DESCRIPTORS))


async def serve(
    settings: Settings,
    *,
    shutdown: trio.Event,
    workers: int = 1,
    worker: int = 0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run server process number ``worker`` (of ``workers``) until ``shutdown`` is set."""
    if settings.embedded:
        log.warning(
            "EMBEDDED MODE: in-memory storage for ONE instance; keys generated at start-up; "
            "everything is lost when the process stops. Set REDIS_URL and DATABASE_URL (and "
            "the ZEROPAY_* keys) for production.",
            extra={"fields": {"storage": "memory"}},
        )
    async with contextlib.AsyncExitStack() as stack:
        context = await stack.enter_async_context(
            trio_parallel.open_worker_context(init=init_crypto_worker)
        )
        if not settings.embedded:
            await stack.enter_async_context(open_loop())
        runtime = await stack.enter_async_context(open_runtime(settings, run_sync=context.run_sync))
        app = create_app(runtime, api=settings.serves_api)
        config = hypercorn_config(settings, workers)
        flushes = settings.flushes_audit(worker)
        async with trio.open_nursery() as nursery:
            failed = runtime.metrics.background_failed
            if flushes:
                nursery.start_soon(supervise, "audit-flusher", runtime.flusher.run, failed)
                if runtime.maintenance is not None:  # PostgreSQL's (none in the embedded default)
                    nursery.start_soon(supervise, "maintenance", runtime.maintain_forever, failed)
                if runtime.webhooks is not None:  # where the audit rows, and the outbox, are
                    nursery.start_soon(supervise, "webhooks", runtime.webhooks.run, failed)
            nursery.start_soon(supervise, "gauges", runtime.refresh_gauges_forever, failed)
            nursery.start_soon(supervise, "merchant-keys", runtime.merchants.keep_fresh, failed)
            finished = trio.Event()

            max_connections = connection_bound(settings.max_connections)

            def draining() -> None:
                runtime.draining = True

            async def http(task_status: trio.TaskStatus[list[str]]) -> None:
                sockets = config.create_sockets()
                for sock in sockets.insecure_sockets:
                    sock.listen(config.backlog)
                try:
                    await serve_http(
                        wrap_app(shielded_sends(app), config.wsgi_max_body_size, None),
                        config,
                        sockets=sockets,
                        shutdown_trigger=shutdown.wait,
                        max_connections=max_connections,
                        max_per_peer=settings.max_connections_per_peer,
                        trusted_peer=trusted_peer(settings.trusted_proxies),
                        on_draining=draining,
                        task_status=task_status,
                    )
                finally:
                    finished.set()

            binds = await nursery.start(http)
            log.info(
                "listening",
                extra={
                    "fields": {
                        "binds": binds,
                        "pid": os.getpid(),
                        "embedded": settings.embedded,
                        "max_connections": max_connections,
                        "role": settings.role,
                        "audit_flusher": flushes,
                    }
                },
            )
            if runtime.demo_merchant_key is not None:
                # Printed, never logged: the one place a key is shown, as a CLI shows it.
                port = settings.bind.rpartition(":")[2]
                print(
                    f"\nEMBEDDED MODE demo merchant key (send it as X-API-Key):\n"
                    f"  {runtime.demo_merchant_key}\n"
                    f"The payer's pages: http://localhost:{port}/enroll and "
                    f"http://localhost:{port}/pay/<session_id>\n",
                    file=sys.stderr,
                    flush=True,
                )
            task_status.started(binds)
            await finished.wait()
            if flushes:
                await _drain_audit(runtime)
            nursery.cancel_scope.cancel()
    log.info("stopped", extra={"fields": {"pid": os.getpid()}})


async def _drain_audit(runtime: Runtime) -> None:
    """Write what the flusher's consumer can still read (graceful shutdown, bounded)."""
    with trio.move_on_after(GRACEFUL_TIMEOUT):
        try:
            drained = await runtime.flusher.drain()
            log.info("audit drained", extra={"fields": {"events": drained}})
        except Exception:
            log.exception("audit drain failed; events stay in the stream")


async def _main(settings: Settings, workers: int, worker: int = 0) -> None:
    shutdown = trio.Event()

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("shutting down")
                shutdown.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        await serve(settings, shutdown=shutdown, workers=workers, worker=worker)
        nursery.cancel_scope.cancel()


def _worker(env: Mapping[str, str], workers: int, worker: int) -> None:
    settings = load_settings(env)
    configure_logging(settings.log_level)
    trio.run(_main, settings, workers, worker)


def run(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, in ``settings.workers`` processes; ``env`` (the
    environment ``settings`` were read from, flags included) is what worker processes read
    theirs from."""
    configure_logging(settings.log_level)
    if settings.workers == 1:
        trio.run(_main, settings, 1)
        return
    with tempfile.TemporaryDirectory(prefix="zeropay-metrics-") as metrics_dir:
        # Set here, not in the child: prometheus-client chooses its multiprocess value store
        # when it is imported, which a spawned child does before its target runs.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        child_env = {**(env or os.environ), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        spawn = multiprocessing.get_context("spawn")
        children = [
            spawn.Process(target=_worker, args=(child_env, settings.workers, n), daemon=False)
            for n in range(settings.workers)
        ]
        for child in children:
            child.start()

        def forward(signum: int, _frame: object) -> None:
            for child in children:
                if child.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for child in children:
            child.join()
