"""``zeropay-server stack up|down|status``: the design document's topology on loopback.

    zeropay-server stack up [--instances N] [--lb-port 8080] [--state-dir DIR]
    zeropay-server stack status
    zeropay-server stack down

``up`` starts, without Docker, each on loopback:

- a PostgreSQL primary (initdb) and its streaming replica (pg_basebackup), migrations applied;
- PgBouncer in transaction mode in front of the primary, which the API instances write
  through; exports and audit reads go to the replica;
- a Redis Cluster of 3 masters and 3 replicas;
- N API instances (``zeropay-server``; the first flushes the audit stream and maintains
  PostgreSQL, the others serve the API only), keys generated once into the state directory's
  env file, and one merchant key;
- HAProxy in front of them, running ``deploy/haproxy/haproxy.cfg`` with health checks on
  ``/health/ready``.

It prints the URLs and writes every PID to ``state.json`` in the state directory; ``down``
stops everything by those PIDs and removes the directory. Its data is throwaway: this is the
topology to try, test and measure, not a way to keep data.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import redis_cluster
from .postgres import PrivatePostgres, pgbouncer_command
from .processes import alive, bindable, free_cluster_port, free_port, stop_pid, wait_until

#: The state directory: in the temporary directory, one per user, where PostgreSQL's user
#: can reach its data when the stack runs as root (the directory is 0711: traversable, not
#: listable; the keys in it are 0600).
DEFAULT_STATE_DIR = Path(tempfile.gettempdir()) / f"zeropay-stack-{os.getuid()}"
HAPROXY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
#: The instances haproxy.cfg names (ZEROPAY_API_1 .. 4).
MAX_INSTANCES = 4
#: What an instance haproxy.cfg names but the launcher did not start points at (DOWN).
CLOSED = "127.0.0.1:1"
STARTUP_TIMEOUT = 90.0


@dataclass
class Started:
    name: str
    pid: int
    #: The signal that stops it cleanly (PostgreSQL: SIGINT is its fast shutdown).
    stop_signal: str = "SIGTERM"


@dataclass
class State:
    directory: str
    urls: dict[str, str] = field(default_factory=dict)
    processes: list[Started] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.directory) / "state.json"
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> State | None:
        """The state recorded in ``directory``, if any. Only a directory of this user's own
        is read: its PIDs are what ``down`` signals."""
        if directory.is_symlink() or (
            directory.exists() and directory.stat().st_uid != os.getuid()
        ):
            raise RuntimeError(f"{directory} is not this user's own directory: use --state-dir")
        path = directory / "state.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            directory=raw["directory"],
            urls=raw["urls"],
            processes=[Started(**p) for p in raw["processes"]],
        )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _server_env(directory: Path) -> dict[str, str]:
    """The instances' keys, fresh for each stack, also kept in the state directory's
    ``zeropay.env`` (mode 0600) for the operator's own commands."""
    keys = {
        "ZEROPAY_MASTER_KEYS": f"1:{_key()}",
        "ZEROPAY_PEPPER": _key(),
        "ZEROPAY_RECEIPT_SIGNING_KEY": _key(),
        "ZEROPAY_RECEIPT_KEY_ID": "stack-1",
    }
    _write_private(directory / "zeropay.env", "".join(f"{k}={v}\n" for k, v in keys.items()))
    return keys


def _write_private(path: Path, text: str) -> None:
    """A file only this user can read, from its creation on (the state directory is 0711:
    others cannot list it, but could open a file whose name they guess)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


def up(directory: Path, instances: int, lb_port: int) -> State:
    """Start the topology; on any failure, stop what was started and raise."""
    if not 1 <= instances <= MAX_INSTANCES:
        raise ValueError(f"1 to {MAX_INSTANCES} API instances (haproxy.cfg names four)")
    existing = State.load(directory)  # (refuses a directory that is not this user's)
    if existing is not None and any(alive(p.pid) for p in existing.processes):
        raise RuntimeError(f"a stack is already up in {directory}: stack status, stack down")
    if not bindable(lb_port):
        raise RuntimeError(f"127.0.0.1:{lb_port} is taken: choose another with --lb-port")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o711)
    directory.chmod(0o711)
    state = State(directory=str(directory))
    try:
        _start(state, directory, instances, lb_port)
    except BaseException:
        down(directory)
        raise
    return state


def _start(state: State, directory: Path, instances: int, lb_port: int) -> None:
    say = _progress
    say("PostgreSQL primary and its streaming replica")
    primary = PrivatePostgres(directory / "pg-primary").initdb()
    primary.start()
    state.processes.append(Started("postgresql-primary", primary.pid(), "SIGINT"))
    state.save()
    replica = primary.replica(directory / "pg-replica")
    replica.start()
    state.processes.append(Started("postgresql-replica", replica.pid(), "SIGINT"))
    state.save()
    database = f"postgresql://postgres@127.0.0.1:{primary.port}/zeropay"
    replica_url = f"postgresql://postgres@127.0.0.1:{replica.port}/zeropay"

    say("PgBouncer (transaction mode) in front of the primary")
    bouncer_port = free_port()
    command, bouncer_url = pgbouncer_command(directory / "pgbouncer", database, bouncer_port)
    state.processes.append(Started("pgbouncer", _spawn(command, directory / "pgbouncer.out")))
    state.save()
    wait_until(lambda: not bindable(bouncer_port), timeout=20, what="pgbouncer")

    say("Redis Cluster: 3 masters, 3 replicas")
    ports = [free_cluster_port() for _ in range(6)]
    for port in ports:
        node = redis_cluster.node_command(port, directory / f"redis-{port}")
        state.processes.append(Started(f"redis-{port}", _spawn(node, None)))
        state.save()
    for port in ports:
        wait_until(functools.partial(redis_cluster.answers, port), timeout=20, what="redis node")
    redis_cluster.create(ports, replicas=1)
    wait_until(lambda: redis_cluster.converged(ports), timeout=30, what="redis cluster")

    base = {
        **os.environ,
        **_server_env(directory),
        "REDIS_CLUSTER_ENABLED": "true",
        "REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in ports),
    }
    say("migrations, and a merchant")
    _command(["migrate"], {**base, "DATABASE_URL": database})  # creates the database
    added = _command(["merchants", "add", "stack-shop"], {**base, "DATABASE_URL": database})
    merchant_key = added.strip().splitlines()[-1]  # the key, on a line of its own
    _write_private(directory / "merchant-key", merchant_key + "\n")

    api_ports = [free_port() for _ in range(instances)]
    server_env = {
        **base,
        "DATABASE_URL": bouncer_url,
        "DB_STATEMENT_CACHE_SIZE": "0",
        "DB_REPLICA_URL": replica_url,
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "WEBAUTHN_RP_ID": "localhost",
        "WEBAUTHN_ORIGINS": f"http://localhost:{lb_port}",
    }
    say(f"{instances} API instance(s)")
    for number, port in enumerate(api_ports, start=1):
        role = "all" if number == 1 else "api"
        command = [sys.executable, "-m", "zeropay_server", "--bind", f"127.0.0.1:{port}",
                   "--role", role]  # fmt: skip
        log = directory / f"api-{number}.log"
        state.processes.append(Started(f"api-{number}", _spawn(command, log, server_env)))
        state.urls[f"api-{number}"] = f"http://127.0.0.1:{port}"
        state.save()
    for port in api_ports:
        ready = functools.partial(_http_ok, f"http://127.0.0.1:{port}/health/ready")
        wait_until(ready, timeout=STARTUP_TIMEOUT, what="API instance")

    say("HAProxy")
    stats_port = free_port()
    names = [f"127.0.0.1:{p}" for p in api_ports] + [CLOSED] * (MAX_INSTANCES - instances)
    haproxy_env = {
        **os.environ,
        "ZEROPAY_LB_ADDR": f"127.0.0.1:{lb_port}",
        "ZEROPAY_STATS_ADDR": f"127.0.0.1:{stats_port}",
        **{f"ZEROPAY_API_{i}": name for i, name in enumerate(names, start=1)},
    }
    haproxy = [_haproxy(), "-db", "-f", str(HAPROXY_CONFIG)]
    state.processes.append(
        Started("haproxy", _spawn(haproxy, directory / "haproxy.log", haproxy_env))
    )
    lb = f"http://127.0.0.1:{lb_port}"
    state.urls.update(
        {
            "load balancer": lb,
            "haproxy stats": f"http://127.0.0.1:{stats_port}/",
            "postgresql primary": database,
            "postgresql replica": replica_url,
            "pgbouncer": bouncer_url,
            "redis cluster": ",".join(f"127.0.0.1:{p}" for p in ports),
            "merchant key file": str(directory / "merchant-key"),
            "server env file": str(directory / "zeropay.env"),
        }
    )
    state.save()
    wait_until(lambda: _http_ok(f"{lb}/health/ready"), timeout=30, what="load balancer")


def _haproxy() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(found, os.X_OK):
        raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
    return found


def _spawn(command: list[str], log: Path | None, env: dict[str, str] | None = None) -> int:
    """Start ``command`` in a session of its own (it outlives this command); its PID."""
    sink = subprocess.DEVNULL if log is None else log.open("ab")
    process = subprocess.Popen(
        command,
        stdout=sink,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    if not isinstance(sink, int):
        sink.close()
    return process.pid


def _command(arguments: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "zeropay_server", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"zeropay-server {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout


def _progress(what: str) -> None:
    print(f"stack: starting {what} ...", file=sys.stderr, flush=True)


def down(directory: Path) -> list[str]:
    """Stop every process of the stack by PID, last started first, and remove its
    directory; the names of those that were running."""
    state = State.load(directory)
    stopped = []
    if state is not None:
        for started in reversed(state.processes):
            if stop_pid(started.pid, signal.Signals[started.stop_signal]):
                stopped.append(started.name)
    shutil.rmtree(directory, ignore_errors=True)
    return stopped


def status(directory: Path) -> dict[str, object]:
    """Each process's PID and whether it runs, the URLs, and the load balancer's readiness."""
    state = State.load(directory)
    if state is None:
        return {"up": False}
    lb = state.urls.get("load balancer")
    return {
        "up": all(alive(p.pid) for p in state.processes),
        "processes": {p.name: {"pid": p.pid, "running": alive(p.pid)} for p in state.processes},
        "urls": state.urls,
        "ready": bool(lb) and _http_ok(f"{lb}/health/ready"),
    }


def main(words: list[str], *, directory: Path, instances: int, lb_port: int) -> int:
    """The ``stack`` command: 0, or 1 with the reason (never a traceback)."""
    try:
        return _run(words, directory=directory, instances=instances, lb_port=lb_port)
    except (RuntimeError, ValueError, FileNotFoundError, TimeoutError) as exc:
        print(f"zeropay-server stack {' '.join(words)}: {exc}", file=sys.stderr)
        return 1


def _run(words: list[str], *, directory: Path, instances: int, lb_port: int) -> int:
    match words:
        case ["up"]:
            state = up(directory, instances, lb_port)
            width = max(len(k) for k in state.urls)
            for name, url in state.urls.items():
                print(f"{name:>{width}}  {url}")
            print(f"\nmerchant key: {(directory / 'merchant-key').read_text().strip()}")
            print("stop it with: scripts/stack down")
            return 0
        case ["down"]:
            stopped = down(directory)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
            return 0
        case ["status"]:
            report = status(directory)
            print(json.dumps(report, indent=2))
            return 0 if report.get("up") else 1
        case _:
            print("usage: zeropay-server stack up|down|status", file=sys.stderr)
            return 2
