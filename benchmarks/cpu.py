"""CPU milliseconds per request, per process, over a steady load: what a request really costs.

    python -m benchmarks.server &                                # the server under test
    python -m benchmarks.cpu --scenario initiate --rate 300 --seconds 10
    python -m benchmarks.cpu --scenario verify --rate 80 --seconds 10

Runs one ``benchmarks.load`` tier at a constant rate and reads ``/proc/<pid>/stat`` (user +
system time) of every process involved when the tier starts and when it ends: the API
server's event loop (each ``zeropay_server`` process), its crypto workers (their children),
Redis (every ``redis-server``), PostgreSQL (every ``postgres`` process) and the load
generator itself. Each delta divided by the requests answered 2xx in the tier is that
process group's CPU per request; errors are reported apart and never divide. Keep the rate
below saturation (the report says when answers fell short of it), or the figure measures
queueing as well.

Linux only (it reads /proc). Loopback only, like the load tool it drives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    parent, user, system = int(fields[1]), int(fields[11]), int(fields[12])
    return name, parent, (user + system) / _TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _workers(pid: int) -> int:
    """The ``--workers`` (or ZEROPAY_WORKERS) of a server's main process."""
    argv = _cmdline(pid).split()
    if "--workers" in argv[:-1]:
        return int(argv[argv.index("--workers") + 1])
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 1
    for entry in environ:
        if entry.startswith(b"ZEROPAY_WORKERS="):
            return int(entry.split(b"=", 1)[1])
    return 1


def processes(generator: int) -> dict[int, str]:
    """Every process of interest, by pid: its group's name.

    A server started with ``--workers N`` (N > 1) serves from N child processes, each with
    its own crypto workers (grandchildren); with one worker the main process serves and its
    children are the crypto workers."""
    stats = {pid: _stat(pid) for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())}
    live = {pid: s for pid, s in stats.items() if s is not None}
    mains = {pid for pid in live if "zeropay_server" in _cmdline(pid)}
    serving = {pid for pid in mains if _workers(pid) == 1}
    serving |= {pid for pid, (_, parent, _) in live.items() if parent in mains - serving}
    groups: dict[int, str] = {}
    for pid, (name, parent, _) in live.items():
        if pid in serving or pid in mains:
            groups[pid] = "api event loop"
        elif parent in serving:
            groups[pid] = "crypto workers"
        elif name == "redis-server":
            groups[pid] = "redis"
        elif name == "postgres":
            groups[pid] = "postgresql"
        elif pid == generator:
            groups[pid] = "load generator"
    return groups


def cpu_by_group(groups: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far by each group (processes gone since count as nothing)."""
    totals: dict[str, float] = dict.fromkeys(groups.values(), 0.0)
    for pid, group in groups.items():
        found = _stat(pid)
        if found is not None:
            totals[group] += found[2]
    return totals


def redis_calls(url: str) -> dict[str, int]:
    """Calls so far of each Redis command (``INFO commandstats``), by lower-case name."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def measure(argv: list[str], *, redis_url: str | None = None) -> dict[str, Any]:
    """Run one load tier (``benchmarks.load`` arguments) and return the CPU report; with
    ``redis_url``, also the Redis commands per request."""
    load = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.load", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert load.stdout is not None
    groups: dict[int, str] = {}
    before: dict[str, float] = {}
    report: dict[str, Any] | None = None
    for line in load.stdout:
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if "tier_start" in message:
            groups = processes(load.pid)
            before = cpu_by_group(groups)
            calls_before = redis_calls(redis_url) if redis_url else {}
        elif "achieved_rps" in message:
            after = cpu_by_group(groups)
            report = message
            report["cpu_s"] = {g: round(after[g] - before.get(g, 0.0), 3) for g in after}
            if redis_url:
                calls = redis_calls(redis_url)
                report["redis_calls"] = {
                    name: count - calls_before.get(name, 0)
                    for name, count in calls.items()
                    if count > calls_before.get(name, 0)
                }
    if load.wait() != 0 or report is None:
        raise SystemExit("the load run failed")
    succeeded = report["succeeded"]
    report["cpu_ms_per_request"] = {
        group: round(1000 * seconds / succeeded, 3) if succeeded else None
        for group, seconds in report["cpu_s"].items()
    }
    report["redis_calls_per_request"] = {
        name: round(count / succeeded, 3) if succeeded else None
        for name, count in sorted(report.get("redis_calls", {}).items())
    }
    report["saturated"] = report["achieved_rps"] < 0.95 * report["target_rps"]
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument(
        "--scenario",
        choices=["initiate", "verify", "verify-passkey", "enroll", "mix", "live"],
        default="initiate",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s, below saturation")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--settle", type=float, default=10.0, help="see benchmarks.load")
    parser.add_argument(
        "--redis",
        default=os.environ.get("ZEROPAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="the server's Redis, for the commands per request ('' to skip)",
    )
    args = parser.parse_args(argv)
    report = measure(
        [
            "--url", args.url, "--scenario", args.scenario, "--rate", str(args.rate),
            "--seconds", str(args.seconds), "--connections", str(args.connections),
            "--users", str(args.users), "--settle", str(args.settle),
        ],
        redis_url=args.redis or None,
    )  # fmt: skip
    print(json.dumps(report))
    print(f"\n{args.scenario} at {report['achieved_rps']} req/s answered 2xx "
          f"({report['requests'] - report['succeeded']} errors apart)"
          + (" -- SATURATED: below the target rate, the figures include queueing"
             if report["saturated"] else ""))  # fmt: skip
    for group, ms in sorted(report["cpu_ms_per_request"].items()):
        print(f"  {group:>16}: {ms} ms of CPU per request")
    if report["redis_calls_per_request"]:
        print("  redis commands per request: " + ", ".join(
            f"{name} {n}" for name, n in report["redis_calls_per_request"].items()))  # fmt: skip
    return report


if __name__ == "__main__":
    main()
