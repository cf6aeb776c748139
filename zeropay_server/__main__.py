"""``zeropay-server`` / ``python -m zeropay_server``: serve, apply migrations, manage merchants.

    zeropay-server [--bind HOST:PORT] [--workers N] [--role all|api|audit]
    zeropay-server migrate
    zeropay-server maintain
    zeropay-server check-config
    zeropay-server stack up|down|status [--instances N] [--lb-port PORT] [--state-dir DIR]
    zeropay-server rotate-keys [--batch N]
    zeropay-server merchants add MERCHANT_ID | list | revoke KEY_ID
    zeropay-server webhooks add MERCHANT_ID URL [EVENT...] | list | disable ID | rotate-secret ID
    zeropay-server webhooks deliveries [ENDPOINT_ID] | retry EVENT_ID | replay --since TIME
    zeropay-server digest USER_UUID FACTOR ANSWER

Everything else is configured through the environment (``zeropay_server.config``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .config import ROLES, ConfigError, Settings, described, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zeropay-server",
        description="ZeroPay payment-authentication server. With no REDIS_URL and no "
        "DATABASE_URL it runs on in-memory storage (one instance).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=[
            "serve",
            "migrate",
            "maintain",
            "rotate-keys",
            "check-config",
            "merchants",
            "webhooks",
            "digest",
            "stack",
        ],
        default="serve",
    )
    parser.add_argument(
        "arguments",
        nargs="*",
        help="merchants: 'add MERCHANT_ID', 'list' or 'revoke KEY_ID'; webhooks: 'add "
        "MERCHANT_ID URL [EVENT_TYPE...]', 'list [MERCHANT_ID]', 'disable ENDPOINT_ID' or "
        "'rotate-secret ENDPOINT_ID', 'deliveries [ENDPOINT_ID]', 'retry EVENT_ID' or "
        "'replay --since TIME'; "
        "digest: 'USER_UUID FACTOR ANSWER' (the client-side digest, for curl); "
        "stack: 'up', 'down' or 'status'",
    )
    parser.add_argument(
        "--batch", type=int, default=500, help="rotate-keys: records per batch (500)"
    )
    parser.add_argument(
        "--since", help="webhooks replay: deliveries of events from this ISO 8601 time"
    )
    parser.add_argument("--instances", type=int, default=2, help="stack: API instances (2)")
    parser.add_argument(
        "--lb-port", type=int, default=8080, help="stack: the load balancer's port (8080)"
    )
    parser.add_argument(
        "--state-dir", help="stack: its PIDs, files and data (a folder of the temporary dir)"
    )
    parser.add_argument("--bind", help="HOST:PORT to listen on (ZEROPAY_BIND; 127.0.0.1:8080)")
    parser.add_argument("--workers", type=int, help="server processes (ZEROPAY_WORKERS; 1)")
    parser.add_argument(
        "--role",
        choices=ROLES,
        help="all: API and audit flusher (one per host); api: API only; audit: flusher only "
        "(ZEROPAY_ROLE; all)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "digest":
        return _digest(args.arguments)
    if args.command == "stack":
        from .stack import launcher

        return launcher.main(
            args.arguments,
            directory=Path(args.state_dir) if args.state_dir else launcher.DEFAULT_STATE_DIR,
            instances=args.instances,
            lb_port=args.lb_port,
        )
    # Flags win over the environment; they are read like it (one validation), and passed on
    # to worker processes with it, never written into this process's environment.
    flags = {"ZEROPAY_BIND": args.bind, "ZEROPAY_WORKERS": args.workers, "ZEROPAY_ROLE": args.role}
    env = {**os.environ, **{name: str(value) for name, value in flags.items() if value is not None}}
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"zeropay-server: configuration error: {problem}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(described(settings), indent=2, sort_keys=True))
        return 0
    if args.command in ("migrate", "maintain", "rotate-keys", "merchants", "webhooks"):
        return _postgres_command(args, settings)
    from .serve import run

    run(settings, env)
    return 0


def _postgres_command(args: argparse.Namespace, settings: Settings) -> int:
    """The commands on PostgreSQL (and Redis, for rotate-keys): each failure a message."""
    from .migrate import command_failures, maintain, merchants, migrate, webhooks
    from .rotate import rotate_keys

    commands: dict[str, Callable[[], int]] = {
        "migrate": lambda: migrate(settings),
        "maintain": lambda: maintain(settings),
        "rotate-keys": lambda: rotate_keys(settings, max(1, args.batch)),
        "merchants": lambda: merchants(settings, args.arguments),
        "webhooks": lambda: webhooks(settings, args.arguments, args.since),
    }
    return command_failures(args.command, commands[args.command])


def _digest(arguments: list[str]) -> int:
    """Print the digest a client sends for one answer (zeropay_proto.answers): what a page
    or an SDK computes on the device, here for trying the API with curl."""
    from zeropay_proto import Factor, RemoteProtocolError
    from zeropay_proto.answers import factor_digest

    if len(arguments) != 3 or arguments[1] not in Factor.__members__:
        print("usage: zeropay-server digest USER_UUID FACTOR ANSWER", file=sys.stderr)
        return 2
    user, factor, answer = arguments
    try:
        print(factor_digest(user, Factor[factor], answer).hex())
    except RemoteProtocolError as exc:
        print(f"zeropay-server: {exc.field}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
