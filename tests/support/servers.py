"""PostgreSQL servers of the tests' own: the installed server's `initdb` and `pg_ctl`, each
cluster in a temporary folder on a free port, stopped (and removed) at the end.

`initdb` refuses to run as root, so as root (CI) the clusters belong to the `postgres`
user and every server command runs through `runuser -u postgres --`. Trust auth on
127.0.0.1 only; fsync off (a crash of the test machine loses nothing we keep).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SETTINGS = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=32MB",
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]


def bindir() -> Path:
    """The installed server's programs (`pg_config --bindir`)."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("no PostgreSQL server programs (initdb, pg_ctl): install postgresql")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Server:
    """One PostgreSQL server: its folder and port; `stop()`/`start()` it like an outage."""

    name: str
    data: Path
    port: int
    log: Path

    def url(self, dbname: str = "postgres", query: str = "") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}" + (
            f"?{query}" if query else "")

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_owner([str(bindir() / "pg_ctl"), "-D", str(self.data), *args]),
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = " ".join([*SETTINGS, "-c", f"port={self.port}"])
        self._ctl("-l", str(self.log), "-o", options, "-w", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, dbname: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)


@contextlib.contextmanager
def servers(count: int, prefix: str = "pg") -> Iterator[list[Server]]:
    """`count` fresh PostgreSQL servers, started; stopped and removed at the end, also
    when the block fails."""
    root = Path(tempfile.mkdtemp(prefix="ledger-servers-"))
    os.chmod(root, 0o755)
    started: list[Server] = []
    try:
        for i in range(count):
            data = root / f"{prefix}{i}"
            data.mkdir(mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres", "postgres")
            subprocess.run(_as_owner([str(bindir() / "initdb"), "-D", str(data), "-U",
                                      "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]),
                           check=True, capture_output=True, timeout=120)
            log = root / f"{prefix}{i}.log"
            log.touch()
            if os.geteuid() == 0:
                shutil.chown(log, "postgres", "postgres")
            server = Server(f"{prefix}{i}", data, free_port(), log)
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            if server.running():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
