"""A private PostgreSQL server (initdb), its streaming replica, and PgBouncer in front.

Run as root, the servers run as the ``postgres`` user (PostgreSQL and PgBouncer refuse root),
so their directories are made theirs; they live under /tmp, where that user can reach them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from .processes import free_port


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _owned_by_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres")


class PrivatePostgres:
    """A PostgreSQL server of its own (initdb in ``workdir``, a fresh /tmp folder unless
    given), which its owner may stop and start."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise FileNotFoundError("PostgreSQL server binaries are not installed")
        self._bin = Path(found[-1]).parent
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="zeropay-pg-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        _owned_by_postgres(self.workdir)
        self.data = self.workdir / "data"
        self.port = port or free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = _as_postgres()

    def initdb(self) -> PrivatePostgres:
        """Create the cluster (trust authentication on loopback, replication allowed)."""
        subprocess.run(
            [*self._as, str(self._bin / "initdb"), "-D", str(self.data), "-A", "trust",
             "-U", "postgres"],
            check=True, stdout=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        return self

    def replica(self, workdir: Path | None = None, port: int | None = None) -> PrivatePostgres:
        """A streaming-replication standby of this server (pg_basebackup -R), not started."""
        standby = PrivatePostgres(workdir or Path(str(self.workdir) + "-replica"), port)
        subprocess.run(
            [*self._as, str(self._bin / "pg_basebackup"), "-h", "127.0.0.1", "-p",
             str(self.port), "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream"],
            check=True, stdout=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        return standby

    def start(self) -> None:
        subprocess.run(
            [*self._as, str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
             str(self.workdir / "server.log"), "-o",
             f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir}", "start"],
            check=True, stdout=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip

    def pid(self) -> int:
        """The postmaster's PID (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        subprocess.run(
            [*self._as, str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
             "stop"],
            check=True, stdout=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(found, os.X_OK):
        raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
    return found


def pgbouncer_command(workdir: Path, database_url: str, port: int) -> tuple[list[str], str]:
    """Write PgBouncer's files (transaction mode, every database of ``database_url``'s
    server) into ``workdir``; returns the command that runs it in the foreground and its URL
    (``database_url``'s database through it)."""
    target = urlparse(database_url)
    workdir.mkdir(parents=True, exist_ok=True)
    user = target.username or "postgres"
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 200\n"
        "default_pool_size = 25\nmin_pool_size = 0\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    command = [pgbouncer_binary(), str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        _owned_by_postgres(workdir, *workdir.iterdir())
        command = [pgbouncer_binary(), "-u", "postgres", str(config)]
    return command, f"postgresql://{user}@127.0.0.1:{port}{target.path}"
