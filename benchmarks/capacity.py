"""How many machines for the design document's peak: a capacity model from measured CPU.

    python -m benchmarks.capacity                                # this repo's measured figures
    python -m benchmarks.capacity --measured initiate.json verify.json --cores-per-instance 8
    python -m benchmarks.capacity --sessions 100000 --seconds 60 --verifies-per-session 1.1

The peak (design document, section 2): 100,000 sessions opened in a 60-second burst, 1,666
initiates/s, each session then verified (``--verifies-per-session``: attempts per session,
wrong answers included), a share of them with a passkey (``--passkey-share``). Everything
else is arithmetic on CPU milliseconds per request, as ``benchmarks.cpu`` measures them for
each process group (pass its JSON reports with ``--measured``; without them the figures of
BENCHMARKS.md are used):

    cores = rate x CPU ms per request / 1000 / utilisation

Assumptions, stated because the answer depends on them:

- CPU per request does not grow with the number of instances: API instances share nothing
  but Redis and PostgreSQL (measured: two workers gave 1.45 x one on 2 cores, the rest being
  the machine's other tenants).
- ``--utilisation`` (0.6): the share of a core the plan may use, the rest absorbing bursts
  inside the peak and a lost instance.
- Redis runs one thread per master: a master is planned at ``--redis-master-cpu`` (0.5, the
  alert's warning level) of a core; Redis Cluster spreads the slot groups evenly.
- Redis memory: 575 B per session (measured at 100,000 sessions: the session and its audit
  event waiting in its stream), 200 B per active user (lockout, bucket, window, record cache
  is extra at ``--record-cache-bytes``), doubled for the replicas.
- PostgreSQL: one audit row per request, written by the flusher in batches of
  ``--audit-batch`` (100); no other write for a cached user (verify and initiate read the
  record cache), one UPDATE per passkey verify (its sign count).
- An API instance has ``--cores-per-instance`` cores for its event loop(s) and its crypto
  workers together (CRYPTO_WORKERS = cores / workers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: CPU ms per request measured on 2026-11-28 (BENCHMARKS.md, one worker, saturated), per
#: process group, and the Redis commands per request (benchmarks.cost).
MEASURED: dict[str, dict[str, float]] = {
    "initiate": {"api event loop": 1.100, "redis": 0.111, "postgresql": 0.016},
    "verify": {
        "api event loop": 1.585,
        "crypto workers": 10.27,
        "redis": 0.185,
        "postgresql": 0.010,
    },
    # What a passkey adds to a verify (2026-11-29; that day ran about 1.45 x slower, so this
    # overstates it).
    "passkey": {"api event loop": 1.35, "postgresql": 0.6},
}
REDIS_COMMANDS = {"initiate": 21.0, "verify": 26.0}
#: Redis round trips per request (standalone; a Cluster verify takes 3).
REDIS_ROUND_TRIPS = 2
SESSION_BYTES = 575
USER_BYTES = 200


@dataclass(frozen=True, kw_only=True)
class Peak:
    """The load to plan for: ``sessions`` opened in ``seconds``, each verified
    ``verifies_per_session`` times, ``passkey_share`` of the verifies with a passkey."""

    sessions: int = 100_000
    seconds: float = 60.0
    verifies_per_session: float = 1.1
    passkey_share: float = 0.33

    @property
    def initiates_per_s(self) -> float:
        return self.sessions / self.seconds

    @property
    def verifies_per_s(self) -> float:
        return self.initiates_per_s * self.verifies_per_session


@dataclass(frozen=True, kw_only=True)
class Machine:
    """What one unit of each component is planned to give (the docstring's assumptions)."""

    cores_per_instance: int = 2
    utilisation: float = 0.6
    redis_master_cpu: float = 0.5
    audit_batch: int = 100
    record_cache_bytes: int = 900


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one peak needs."""

    peak: Peak
    api_cores: float
    crypto_cores: float
    api_instances: int
    redis_cpu_cores: float
    redis_masters: int
    redis_ops_per_s: float
    redis_round_trips_per_s: float
    redis_memory_bytes: float
    postgresql_rows_per_s: float
    postgresql_statements_per_s: float
    postgresql_cpu_cores: float


def plan(peak: Peak, machine: Machine, cpu: dict[str, dict[str, float]]) -> Plan:
    """The resources ``peak`` needs on ``machine`` given ``cpu`` (ms per request)."""
    initiates, verifies = peak.initiates_per_s, peak.verifies_per_s
    passkeys = verifies * peak.passkey_share

    def load(group: str) -> float:
        """CPU seconds per second (cores, fully used) of one process group."""
        return (
            initiates * cpu["initiate"].get(group, 0.0)
            + verifies * cpu["verify"].get(group, 0.0)
            + passkeys * cpu["passkey"].get(group, 0.0)
        ) / 1000

    api = load("api event loop") / machine.utilisation
    crypto = load("crypto workers") / machine.utilisation
    redis = load("redis")
    postgresql = load("postgresql")
    rows = initiates + verifies
    memory = 2 * peak.sessions * (SESSION_BYTES + USER_BYTES + machine.record_cache_bytes)
    return Plan(
        peak=peak,
        api_cores=api,
        crypto_cores=crypto,
        api_instances=max(2, math.ceil((api + crypto) / machine.cores_per_instance)),
        redis_cpu_cores=redis,
        redis_masters=max(3, math.ceil(redis / machine.redis_master_cpu)),
        redis_ops_per_s=initiates * REDIS_COMMANDS["initiate"]
        + verifies * REDIS_COMMANDS["verify"],
        redis_round_trips_per_s=(initiates + verifies) * REDIS_ROUND_TRIPS,
        redis_memory_bytes=memory,
        postgresql_rows_per_s=rows + passkeys,
        postgresql_statements_per_s=rows / machine.audit_batch + passkeys,
        postgresql_cpu_cores=postgresql,
    )


def measured(paths: list[Path]) -> dict[str, dict[str, float]]:
    """MEASURED with each ``benchmarks.cpu`` report found in ``paths`` put in its place (a
    ``verify-passkey`` report gives the passkey's share as its difference from verify)."""
    cpu = {name: dict(groups) for name, groups in MEASURED.items()}
    reports: dict[str, dict[str, float]] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                report: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict) and "cpu_ms_per_request" in report:
                reports[report["scenario"]] = report["cpu_ms_per_request"]
    for name in ("initiate", "verify"):
        if name in reports:
            cpu[name] = reports[name]
    if "verify-passkey" in reports:
        base = cpu["verify"]
        cpu["passkey"] = {
            group: max(0.0, ms - base.get(group, 0.0))
            for group, ms in reports["verify-passkey"].items()
            if group != "load generator"
        }
    return cpu


def describe(result: Plan, label: str) -> str:
    p = result.peak
    return "\n".join(
        [
            f"{label}: {p.sessions:,} sessions in {p.seconds:g} s = {p.initiates_per_s:,.0f} "
            f"initiates/s and {p.verifies_per_s:,.0f} verifies/s "
            f"({p.passkey_share:.0%} with a passkey)",
            f"  API event loops      {result.api_cores:7.1f} cores",
            f"  crypto (PBKDF2)      {result.crypto_cores:7.1f} cores",
            f"  API instances        {result.api_instances:7d}",
            f"  Redis                {result.redis_ops_per_s:9,.0f} commands/s (scripts' "
            f"inner ones included) in {result.redis_round_trips_per_s:,.0f} round trips/s, "
            f"{result.redis_cpu_cores:.2f} cores -> {result.redis_masters} masters "
            f"(+ as many replicas), {result.redis_memory_bytes / 2**20:,.0f} MiB with replicas",
            f"  PostgreSQL           {result.postgresql_rows_per_s:9,.0f} rows/s in "
            f"{result.postgresql_statements_per_s:,.0f} statements/s, "
            f"{result.postgresql_cpu_cores:.2f} cores",
        ]
    )


def main(argv: list[str] | None = None) -> list[Plan]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--measured", nargs="*", type=Path, default=[])
    parser.add_argument("--sessions", type=int, default=Peak.sessions)
    parser.add_argument("--seconds", type=float, default=Peak.seconds)
    parser.add_argument("--verifies-per-session", type=float, default=Peak.verifies_per_session)
    parser.add_argument("--passkey-share", type=float, default=Peak.passkey_share)
    parser.add_argument("--cores-per-instance", type=int, default=Machine.cores_per_instance)
    parser.add_argument("--utilisation", type=float, default=Machine.utilisation)
    parser.add_argument("--redis-master-cpu", type=float, default=Machine.redis_master_cpu)
    parser.add_argument("--audit-batch", type=int, default=Machine.audit_batch)
    args = parser.parse_args(argv)
    cpu = measured(args.measured)
    machine = Machine(
        cores_per_instance=args.cores_per_instance,
        utilisation=args.utilisation,
        redis_master_cpu=args.redis_master_cpu,
        audit_batch=args.audit_batch,
    )
    peak = Peak(
        sessions=args.sessions,
        seconds=args.seconds,
        verifies_per_session=args.verifies_per_session,
        passkey_share=args.passkey_share,
    )
    ten = dataclasses.replace(peak, sessions=10 * peak.sessions)
    plans = [plan(peak, machine, cpu), plan(ten, machine, cpu)]
    print("CPU ms per request: " + json.dumps(cpu))
    print(
        f"machine: {machine.cores_per_instance} cores per API instance, planned at "
        f"{machine.utilisation:.0%}; a Redis master at {machine.redis_master_cpu:.0%} of a core\n"
    )
    print(describe(plans[0], "peak"))
    print()
    print(describe(plans[1], "10 x peak"))
    return plans


if __name__ == "__main__":
    main()
