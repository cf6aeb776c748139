"""CPU per request of two versions of the server, side by side in one run.

    python -m benchmarks.compare --base d1dde97                  # base commit vs this tree
    python -m benchmarks.compare --base d1dde97 --rounds 2 --plan initiate:500,verify:80

Checks the base commit out into a temporary git worktree, and for each round serves each
version in turn (base, then this tree) the same way: a fresh database, fresh keys,
production settings (``benchmarks.server``: every protection on, INFO logging, PBKDF2
100,000), each version's own ``zeropay_server`` started from its own tree. Each plan entry
is one ``benchmarks.cpu`` tier (this tree's load tool, the same for both). Prints one table of
CPU milliseconds per request for every process group, each version's figures and the ratio
head/base; ``--json-out`` keeps every report. Nothing runs concurrently: one version at a time
has the machine.

Needs the Redis and PostgreSQL that ``benchmarks.server`` uses, and git.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.cpu import measure
from benchmarks.load import pbkdf2_limit
from benchmarks.server import fresh_database, prepare, production_env
from tests.services import DATABASE_URL, REDIS_URL

GROUPS = ("api event loop", "crypto workers", "redis", "postgresql", "load generator")
DEFAULT_PLAN = "live:500,initiate:500,verify:80,enroll:60"


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """``ref`` checked out in a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="zeropay-base-") as parent:
        path = Path(parent) / "tree"
        git = shutil.which("git") or "git"
        subprocess.run([git, "worktree", "add", "--detach", str(path), ref], check=True)
        try:
            yield path
        finally:
            subprocess.run([git, "worktree", "remove", "--force", str(path)], check=False)


@contextlib.contextmanager
def serving(tree: Path, bind: str, workers: int, log: Path) -> Iterator[str]:
    """The server of ``tree`` on ``bind``, ready; yields its merchant key."""
    database_url = asyncio.run(fresh_database(DATABASE_URL, "zeropay_compare"))
    env = production_env(database_url, 100_000)
    key = prepare(env, cwd=str(tree))
    with log.open("ab") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "zeropay_server", "--bind", bind, "--workers", str(workers)],
            cwd=tree,
            env=env,
            stdout=sink,
            stderr=sink,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://{bind}/health/ready", timeout=2).status_code == 200:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server of {tree} did not start; see {log}")
                time.sleep(0.2)
            yield key
        finally:
            server.terminate()
            server.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--plan", default=DEFAULT_PLAN, help=f"scenario:rate,... ({DEFAULT_PLAN})")
    parser.add_argument("--rounds", type=int, default=1, help="alternate base and head (1)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bind", default="127.0.0.1:8090")
    parser.add_argument("--json-out", help="write every report to this file")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first measure the machine's PBKDF2 limit (benchmarks.load --baseline) and give "
        "verify and enroll throughput as a ratio to it",
    )
    args = parser.parse_args(argv)
    plan = [(s, float(r)) for s, r in (item.split(":") for item in args.plan.split(","))]
    limit = pbkdf2_limit() if args.baseline else None
    if limit:
        print(f"PBKDF2 limit of this machine: {limit:.1f}/s", flush=True)
    log = Path(".run/compare-servers.log")
    log.parent.mkdir(exist_ok=True)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with worktree(args.base) as base:
        for round_ in range(args.rounds):
            for label, tree in (("base", base), ("head", Path.cwd())):
                with serving(tree, args.bind, args.workers, log) as key:
                    os.environ["ZEROPAY_API_KEY"] = key
                    for scenario, rate in plan:
                        print(f"round {round_ + 1}: {label} {scenario} at {rate:g}/s", flush=True)
                        report = measure(
                            [
                                "--url", f"http://{args.bind}", "--scenario", scenario,
                                "--rate", str(rate), "--seconds", str(args.seconds),
                                "--connections", "16",
                            ],
                            redis_url=REDIS_URL,
                        )  # fmt: skip
                        results.setdefault((label, f"{scenario} {rate:g}/s"), []).append(report)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({f"{k[0]} {k[1]}": v for k, v in results.items()}, indent=1)
        )
    print(f"\nCPU ms per request, median of {args.rounds} round(s); base {args.base}, head "
          f"the working tree; {args.workers} worker(s)")  # fmt: skip
    print(f"| scenario | {' | '.join(GROUPS)} | achieved base/head |")
    print(f"|---|{'---|' * len(GROUPS)}---|")
    for scenario, rate in plan:
        cells = []
        for group in GROUPS:
            base_ms, head_ms = (
                statistics.median(
                    r["cpu_ms_per_request"].get(group) or 0.0
                    for r in results[(label, f"{scenario} {rate:g}/s")]
                )
                for label in ("base", "head")
            )
            ratio = f" ({head_ms / base_ms:.2f}x)" if base_ms else ""
            cells.append(f"{base_ms:.3f} -> {head_ms:.3f}{ratio}")
        rates = [
            statistics.median(r["achieved_rps"] for r in results[(label, f"{scenario} {rate:g}/s")])
            for label in ("base", "head")
        ]
        achieved = "/".join(f"{rate:g}" for rate in rates)
        if limit and scenario in {"verify", "verify-passkey", "enroll"}:
            achieved += " (" + "/".join(f"{rate / limit:.2f}" for rate in rates) + " x limit)"
        print(f"| {scenario} {rate:g}/s | {' | '.join(cells)} | {achieved} |")


if __name__ == "__main__":
    main()
