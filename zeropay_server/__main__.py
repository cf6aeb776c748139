"""``zeropay-server`` / ``python -m zeropay_server``: serve, apply migrations, manage merchants.

    zeropay-server [--bind HOST:PORT] [--workers N] [--role all|api|audit]
    zeropay-server migrate
    zeropay-server maintain
    zeropay-server check-config
    zeropay-server stack up|down|status [--instances N] [--lb-port PORT] [--state-dir DIR]
    zeropay-server rotate-keys [--batch N]
    zeropay-server merchants add MERCHANT_ID | list | revoke KEY_ID | name MERCHANT_ID NAME
    zeropay-server webhooks add MERCHANT_ID URL [EVENT...] | list | disable ID | rotate-secret ID
    zeropay-server webhooks deliveries [ENDPOINT_ID] | retry EVENT_ID | replay --since TIME
    zeropay-server digest USER_UUID FACTOR ANSWER

Each command has its own ``--help``; ``--version`` prints the release. Everything else is
configured through the environment (``zeropay_server.config``).
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

COMMANDS = (
    "serve",
    "migrate",
    "maintain",
    "rotate-keys",
    "check-config",
    "merchants",
    "webhooks",
    "digest",
    "stack",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zeropay")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    """One parser per command: each ``zeropay-server COMMAND --help`` shows that command's
    words and flags only."""
    parser = argparse.ArgumentParser(
        prog="zeropay-server",
        description="ZeroPay payment-authentication server. With no REDIS_URL and no "
        "DATABASE_URL it runs on in-memory storage (one instance). With no command, serve.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="serve the API and the pages (the default)")
    serve.add_argument("--bind", help="HOST:PORT to listen on (ZEROPAY_BIND; 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="server processes (ZEROPAY_WORKERS; 1)")
    serve.add_argument(
        "--role",
        choices=ROLES,
        help="all: API and audit flusher (one per host); api: API only; audit: flusher only "
        "(ZEROPAY_ROLE; all)",
    )
    commands.add_parser("migrate", help="apply PostgreSQL migrations")
    commands.add_parser("maintain", help="audit partitions ahead, and the retention")
    commands.add_parser("check-config", help="print the effective configuration (no secrets)")
    rotate = commands.add_parser("rotate-keys", help="re-seal records under the current key")
    rotate.add_argument("--batch", type=int, default=500, help="records per batch (500)")
    merchants = commands.add_parser(
        "merchants",
        help="merchant API keys and display names",
        description="add MERCHANT_ID | list | revoke KEY_ID | name MERCHANT_ID DISPLAY NAME",
    )
    merchants.add_argument("words", nargs="+", metavar="WORD")
    webhooks = commands.add_parser(
        "webhooks",
        help="merchants' webhook endpoints and deliveries",
        description="add MERCHANT_ID URL [EVENT_TYPE...] | list [MERCHANT_ID] | disable "
        "ENDPOINT_ID | rotate-secret ENDPOINT_ID | deliveries [ENDPOINT_ID] | retry EVENT_ID "
        "| replay --since TIME",
    )
    webhooks.add_argument("words", nargs="+", metavar="WORD")
    webhooks.add_argument("--since", help="replay: deliveries of events from this ISO 8601 time")
    digest = commands.add_parser(
        "digest",
        help="the client-side digest of one answer (for trying the API with curl)",
    )
    digest.add_argument("user_uuid")
    digest.add_argument("factor")
    digest.add_argument("answer")
    stack = commands.add_parser("stack", help="a local stack: PostgreSQL, PgBouncer, Redis...")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--instances", type=int, default=2, help="API instances (2)")
    stack.add_argument("--lb-port", type=int, default=8080, help="the load balancer's port (8080)")
    stack.add_argument(
        "--state-dir", help="its PIDs, files and data (a folder of the temporary dir)"
    )
    return parser


def _with_command(argv: list[str]) -> list[str]:
    """``serve`` where no command is named (``zeropay-server --bind ...``)."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["serve", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_with_command(sys.argv[1:] if argv is None else argv))
    if args.command == "digest":
        return _digest(args.user_uuid, args.factor, args.answer)
    if args.command == "stack":
        from .stack import launcher

        return launcher.main(
            [args.action],
            directory=Path(args.state_dir) if args.state_dir else launcher.DEFAULT_STATE_DIR,
            instances=args.instances,
            lb_port=args.lb_port,
        )
    # Flags win over the environment; they are read like it (one validation), and passed on
    # to worker processes with it, never written into this process's environment.
    flags = {
        "ZEROPAY_BIND": getattr(args, "bind", None),
        "ZEROPAY_WORKERS": getattr(args, "workers", None),
        "ZEROPAY_ROLE": getattr(args, "role", None),
    }
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
        "merchants": lambda: merchants(settings, args.words),
        "webhooks": lambda: webhooks(settings, args.words, args.since),
    }
    return command_failures(args.command, commands[args.command])


def _digest(user: str, factor: str, answer: str) -> int:
    """Print the digest a client sends for one answer (zeropay_proto.answers): what a page
    or an SDK computes on the device, here for trying the API with curl. A wrong factor or
    answer is told with what the factors are and what the palettes hold."""
    from zeropay_proto import Factor, RemoteProtocolError
    from zeropay_proto.answers import COLOURS, EMOJI, factor_digest

    help_text = (
        f"factors: {', '.join(Factor.__members__)}\n"
        f"COLOUR picks (comma-separated, in order): {', '.join(COLOURS)}\n"
        f"EMOJI picks (in order): {' '.join(EMOJI.values())} "
        f"({', '.join(EMOJI)})"
    )
    if factor not in Factor.__members__:
        print(f"zeropay-server: no factor {factor!r}\n{help_text}", file=sys.stderr)
        return 2
    try:
        print(factor_digest(user, Factor[factor], answer).hex())
    except RemoteProtocolError as exc:
        print(f"zeropay-server: {exc.field}: {exc}\n{help_text}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
