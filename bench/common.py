"""What the benchmarks share: log lines, the machine, memory, child processes, store options,
a real `ledger serve` (the tests start theirs with it too) and timed HTTP requests.

Scripts run as `python bench/NAME.py` import it as `common` (their folder is on the path);
the tests import it as `bench.common`. It imports nothing of bench's scripts or of tests.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psycopg
from click.testing import CliRunner
from eventsourcing.persistence import StoredEvent

from ledger import Ledger
from ledger.cli import main as ledger_main
from ledger.store.application import LedgerApplication
from ledger.store.hashing import as_uuid
from ledger.store.plan import CommandRow, RegistrationRow, ReportRow, WritePlan

STARTUP = 60.0  # seconds for `ledger serve` to answer /healthz on a busy machine

# The scenario's calendar and actors (bench/commands.py's workload, bench/service.py's too)
REGISTRATION_OPENS = datetime(2026, 10, 1, tzinfo=UTC)
REGISTRATION_CLOSES = datetime(2026, 11, 1, tzinfo=UTC)
CAMPAIGN_STARTS = datetime(2026, 11, 10, tzinfo=UTC)
CAMPAIGN_ENDS = datetime(2026, 11, 12, tzinfo=UTC)
IN_WINDOW = datetime(2026, 10, 15, 9, 0, tzinfo=UTC)  # registration open
AFTER_CAMPAIGN = datetime(2026, 11, 13, 9, 0, tzinfo=UTC)  # reports are due
CATEGORIES = ("fashion", "beauty", "home")
OPERATOR = {"id": "ops-1", "role": "operator"}
REVIEWER = {"id": "reviewer-1", "role": "reviewer"}
FEED = {"id": "perf-feed", "role": "system"}


# Log lines and the report ------------------------------------------------------------------

def iso(at: datetime) -> str:
    """An instant as commands carry it: ISO-8601, `Z` for UTC."""
    return at.isoformat().replace("+00:00", "Z")


def log(message: str, args: argparse.Namespace | None = None) -> None:
    """A progress line on stderr, with the time; silent under `--json` unless `--verbose`."""
    if args is not None and args.json and not args.verbose:
        return
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    """The versions, CPUs and commit a report's figures were measured with."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "eventsourcing": metadata.version("eventsourcing"),
        "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(), "machine": platform.machine(),
    }
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True,
                                        capture_output=True, text=True,
                                        cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def emit(args: argparse.Namespace, report: dict[str, Any],
         print_tables: Callable[[dict[str, Any]], None]) -> None:
    """The report: saved as JSON if `--save`, printed as JSON if `--json`, else as tables."""
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_tables(report)


def command(name: str, command_id: str, actor: dict[str, str],
            payload: dict[str, Any]) -> dict[str, Any]:
    """A command as `ledger send` and `POST /v1/commands` take it."""
    return {"command": name, "command_id": command_id, "actor": actor, "payload": payload}


def live_calendar(now: datetime) -> dict[str, datetime]:
    """A campaign calendar around `now`, for a service on the real clock: registration
    open from a day ago for ten days, the LIVE period twenty days ahead for three."""
    day = timedelta(days=1)
    return {"registration_opens_at": now - day, "registration_closes_at": now + 10 * day,
            "starts_at": now + 20 * day, "ends_at": now + 23 * day}


def campaign_fields(campaign_id: str, calendar: dict[str, datetime] | None = None
                    ) -> dict[str, Any]:
    """A manual live campaign on the scenario's calendar, or on `calendar` (instants as
    datetimes)."""
    return {
        "campaign_id": campaign_id, "name": f"Bench LIVE {campaign_id}", "kind": "live",
        "review_mode": "manual", "registration_opens_at": REGISTRATION_OPENS,
        "registration_closes_at": REGISTRATION_CLOSES, "starts_at": CAMPAIGN_STARTS,
        "ends_at": CAMPAIGN_ENDS, **(calendar or {}),
        "requirements": {"min_account_level": 2, "min_livestream_level": 1,
                         "categories": list(CATEGORIES)},
        "levels": [
            {"code": "standard", "name": "Standard", "benefits": ["campaign badge"],
             "min_livestream_level": 1},
            {"code": "gold", "name": "Gold", "benefits": ["homepage banner"],
             "min_livestream_level": 3},
        ],
        "allow_duplicates": True, "max_sessions": 10,
    }


def campaign_command(campaign_id: str, calendar: dict[str, datetime] | None = None
                     ) -> dict[str, Any]:
    """The operator's `create_campaign` command for `campaign_fields(campaign_id, calendar)`."""
    payload = {k: iso(v) if isinstance(v, datetime) else v
               for k, v in campaign_fields(campaign_id, calendar).items()}
    return command("create_campaign", f"create-{campaign_id}", OPERATOR, payload)


# What commands wrote, saved again in groups (bench/group_store.py, tests/test_group_store.py)

@dataclass(frozen=True)
class Step:
    """What one command wrote: its events (in order), its command row, its index rows."""

    events: tuple[StoredEvent, ...]
    command: CommandRow
    registrations: tuple[RegistrationRow, ...]
    reports: tuple[ReportRow, ...] = ()

    @property
    def rows(self) -> int:
        """Rows a save of this step inserts: events, their hash links, its command row and
        its index rows."""
        return 2 * len(self.events) + 1 + len(self.registrations) + len(self.reports)


def steps_of(url: str) -> list[Step]:
    """Every command a store holds that wrote events, with what it wrote, in the order it
    was written (events name their command: `command_id` is a field of every event)."""
    with Ledger.open(url, pool_size=1) as ledger:
        store = ledger.app.store
        by_command: dict[str, list[StoredEvent]] = {}
        for n in ledger.app.recorder.select_notifications(start=1, limit=10_000_000):
            by_command.setdefault(json.loads(n.state)["command_id"], []).append(StoredEvent(
                originator_id=n.originator_id, originator_version=n.originator_version,
                topic=n.topic, state=n.state))
        index = {as_uuid(str(r["registration_id"])): RegistrationRow(
            str(r["registration_id"]), r["campaign_id"], r["account_id"], r["seller_id"])
            for r in store._query(f"SELECT * FROM {store.t}ledger_registrations", ())}
        reports = {(as_uuid(str(r["registration_id"])), r["version"]): ReportRow(
            as_uuid(str(r["registration_id"])), r["report_id"], r["version"])
            for r in store._query(f"SELECT * FROM {store.t}ledger_reports", ())}
        steps = []
        for command_id, events in by_command.items():
            row = store.find_command(command_id)
            if row is None:
                raise ValueError(f"events of command {command_id} but no command row")
            created = [index[as_uuid(e.originator_id)] for e in events
                       if e.originator_version == 1 and as_uuid(e.originator_id) in index]
            recorded = [reports[key] for e in events
                        if (key := (as_uuid(e.originator_id), e.originator_version)) in reports]
            steps.append(Step(tuple(events), row, tuple(created), tuple(recorded)))
        return steps


def group_save(app: LedgerApplication, steps: Sequence[Step]) -> tuple[list[Any], WritePlan]:
    """What a group commit passes to `Application.save` for these steps: their events,
    decoded, in order, and one plan with every command's rows."""
    events = [app.mapper.to_domain_event(e) for step in steps for e in step.events]
    return events, WritePlan(commands=tuple(s.command for s in steps),
                             registrations=tuple(r for s in steps for r in s.registrations),
                             reports=tuple(r for s in steps for r in s.reports))


def save_steps(app: LedgerApplication, steps: Sequence[Step]) -> list[int]:
    """The steps in one `Application.save` (events in order, one plan), as a group commit
    saves; the notification ids of its recordings."""
    events, plan = group_save(app, steps)
    return [r.notification.id for r in app.save(*events, plan=plan)]


# Memory and child processes ----------------------------------------------------------------

def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds() -> float:
    """CPU seconds (user and system) used so far by this process and its ended children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that across exec,
    so a spawned child would report at least its parent's RSS at the time of the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class Progress:
    """The progress callback: counts calls, samples RSS at every tenth of the store."""

    def __init__(self) -> None:
        self.calls = 0
        self.last = (0, 0)
        self.samples: list[tuple[int, float]] = []
        self.next_sample = 0

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1
        self.last = (done, total)
        if done >= self.next_sample:
            self.samples.append((done, round(rss_mb(), 1)))
            self.next_sample = done + max(1, total // 10)


def in_child(func: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`func(*args)` in a fresh (spawned) process: its memory and caches are its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def stat_of(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def listening_sockets(port: int) -> set[int]:
    """The inodes of this machine's IPv4 TCP sockets listening on `port` (Linux:
    /proc/net/tcp, state 0A)."""
    found: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            found.add(int(fields[9]))
    return found


def polled_inodes(pid: int) -> set[int]:
    """The inodes of the files the process's epoll instances watch: a socket its event
    loop serves (Linux: /proc/PID/fdinfo of each eventpoll descriptor)."""
    found: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found  # gone meanwhile
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:[eventpoll]":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        found.update(int(field[4:], 16) for field in info.split() if field.startswith("ino:")
                     and field != "ino:")
    return found


def group_members(group: int) -> list[int]:
    """The live processes of a process group (zombies waiting to be reaped left out)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = stat_of(int(entry.name))
        if fields and int(fields[2]) == group and fields[0] != "Z":
            found.append(int(entry.name))
    return found


# Synthetic stores: the options ---------------------------------------------------------------

def add_store_options(parser: argparse.ArgumentParser, database: str,
                      small_help: str) -> None:
    """The options every bench that builds synthetic stores takes."""
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="the big store's events (default 1,000,000)")
    parser.add_argument("--small", type=int, default=100_000, help=small_help)
    parser.add_argument("--quick", action="store_true", help="the 100k store only")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--campaigns", type=int, default=12)
    parser.add_argument("--events-per-registration", type=int, default=40,
                        help="registrations = events / this (default 40: 25,000 at 1M)")
    parser.add_argument("--pg-url", default=f"postgresql://postgres@127.0.0.1:5432/{database}",
                        help="this database is DROPPED and created again on every run")
    parser.add_argument("--sqlite-dir", default=None,
                        help="where the SQLite files go (default: a temporary folder, removed)")
    add_report_options(parser)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """How a bench's report goes out (`emit`): `--json`, `--save FILE`, `--verbose`."""
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", default=None, help="also write the JSON figures to this file")
    parser.add_argument("--verbose", action="store_true",
                        help="progress lines on stderr even with --json")


def store_plan(args: argparse.Namespace, prefix: str) -> tuple[list[str], list[int], Path]:
    """The backends, the store sizes and the SQLite folder the options ask for."""
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sizes = [args.small] if args.quick else sorted({s for s in (args.small, args.events) if s})
    tmp = Path(args.sqlite_dir) if args.sqlite_dir else Path(tempfile.mkdtemp(prefix=prefix))
    tmp.mkdir(parents=True, exist_ok=True)
    return backends, sizes, tmp


# A real `ledger serve` -------------------------------------------------------------------------

def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def interrupt(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """Ctrl-C a process started in a session of its own; if it has not ended after
    `timeout` seconds, SIGKILL its whole group. Its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


@dataclass
class Server:
    """A `ledger serve` process in a session of its own, its URL and its log file."""

    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_until_up(self, within: float = STARTUP) -> None:
        """Return once /healthz answers 200; RuntimeError (with the log's end) if it
        exits or does not answer in time."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ledger serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ledger serve did not answer /healthz in {within}s: "
                           f"{self.log.read_text()[-2000:]}")

    def pids(self) -> list[int]:
        """The server's live processes (itself, its workers, their helpers)."""
        return group_members(self.process.pid)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def serving_workers(self) -> set[int]:
        """The server's processes whose event loop serves a listening socket of its port
        (Linux only)."""
        listening = listening_sockets(self.port)
        return {pid for pid in self.pids()
                if pid != self.process.pid and polled_inodes(pid) & listening}

    def wait_for_workers(self, count: int, within: float = STARTUP) -> None:
        """Return once `count` workers serve the port. The first worker up answers
        /healthz while the others still start, and a load begun then keeps every
        keep-alive connection on that one; RuntimeError if they are not up in time."""
        deadline = time.monotonic() + within
        while (serving := len(self.serving_workers())) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{serving} of {count} workers serve after {within}s: "
                                   f"{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> int:
        """SIGINT (Ctrl-C) and wait; kill the whole group if it does not stop in time."""
        return interrupt(self.process, timeout)

    def group_is_gone(self, within: float = 5.0) -> bool:
        """No running process is left in the server's process group (workers, the
        multiprocessing resource tracker); zombies waiting for init to reap them are gone."""
        deadline = time.monotonic() + within
        while self.pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


def start_server(argv: Sequence[str], port: int, log: Path) -> Server:
    """Start `argv` (a server listening on `port`) in a session of its own, its output to
    `log`; LEDGER_NOW is not passed on (a server reads the real clock)."""
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_NOW"}
    with log.open("wb") as out:
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    return Server(f"http://127.0.0.1:{port}", process, log)


@contextmanager
def serving(url: str, log: Path, *options: str, within: float = STARTUP,
            command: Callable[[int], list[str]] | None = None) -> Iterator[Server]:
    """The real `ledger serve` (`options` added; or `command(port)`, another server) on a
    free loopback port until the block ends, then stopped with its whole process group."""
    port = free_port()
    argv = command(port) if command is not None else [
        sys.executable, "-m", "ledger", "--db", url, "serve", "--port", str(port), *options]
    running = start_server(argv, port, log)
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 1
    try:
        running.wait_until_up(within)
        if workers > 1 and Path("/proc/net/tcp").exists():
            running.wait_for_workers(workers, within)
        yield running
    finally:
        running.stop()
        if not running.group_is_gone():
            os.killpg(running.process.pid, signal.SIGKILL)


# Timed HTTP ------------------------------------------------------------------------------------

def add_token(url: str, role: str, actor_id: str, *, config: str | None = None) -> str:
    """A new bearer token for the actor, issued with `ledger tokens add` (in the store at
    `url`, or with `config` where that markets file keeps tokens)."""
    store = ["--config", config] if config else ["--db", url]
    result = CliRunner().invoke(ledger_main, [*store, "tokens", "add", "--role", role,
                                              "--id", actor_id])
    if result.exit_code != 0:
        raise RuntimeError(f"ledger tokens add failed: {result.output}")
    return result.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def timed(conn: http.client.HTTPConnection, method: str, path: str, token: str = "",
          body: Any | None = None) -> tuple[int, float]:
    """(status, seconds) of one request on a keep-alive connection."""
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    started = time.perf_counter()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - started


@contextmanager
def hammering(base: str, path: str, token: str, clients: int,
              within: float = 30.0) -> Iterator[list[int]]:
    """`clients` threads, each on its own keep-alive connection, GET `path` again and
    again until the block ends (at most `within` seconds); the block starts once every
    client has a request in flight, and sees the statuses they got so far."""
    stop, statuses = threading.Event(), []
    in_flight = threading.Semaphore(0)
    host, port = base.removeprefix("http://").split(":")

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=within)
        deadline = time.monotonic() + within
        try:
            conn.request("GET", path, headers=bearer(token))
            in_flight.release()
            while True:
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
                if stop.is_set() or time.monotonic() > deadline:
                    return
                conn.request("GET", path, headers=bearer(token))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for _ in threads:
        in_flight.acquire(timeout=within)
    try:
        yield statuses
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=within)


def p99(seconds: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    return sorted(seconds)[math.ceil(0.99 * len(seconds)) - 1]


def latency_figures(seconds: list[float]) -> dict[str, float]:
    """The median, 99th percentile and maximum of some delays, in milliseconds."""
    return {"p50_ms": round(statistics.median(seconds) * 1000, 1),
            "p99_ms": round(p99(seconds) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1)}


# PostgreSQL servers of our own (tests and benchmarks) ------------------------------------------
# The installed server's `initdb` and `pg_ctl`, each cluster in a temporary folder on a free
# port, stopped (and removed) at the end. `initdb` refuses to run as root, so as root (CI)
# the clusters belong to the `postgres` user and every server command runs through `runuser
# -u postgres --`. Trust auth on 127.0.0.1 only; fsync off (nothing here outlives the run).

SETTINGS = ["-c", "max_connections=200", "-c", "shared_buffers=64MB",
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
FAST = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]


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


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class PgServer:
    """One PostgreSQL server: its folder and port; `stop()`/`start()` it like an outage."""

    name: str
    data: Path
    port: int
    log: Path
    durable: bool = False  # fsync and synchronous commit on, as a production server runs

    def url(self, dbname: str = "postgres", query: str = "") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}" + (
            f"?{query}" if query else "")

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_owner([str(bindir() / "pg_ctl"), "-D", str(self.data), *args]),
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = " ".join([*SETTINGS, *([] if self.durable else FAST),
                            "-c", f"port={self.port}"])
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

    def pids(self) -> list[int]:
        """The server's processes: the postmaster and its children (backends, WAL writer,
        checkpointer...), for their CPU."""
        try:
            main = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        found = [main]
        for entry in Path("/proc").glob("[0-9]*"):
            fields = stat_of(int(entry.name))
            if fields and int(fields[1]) == main:
                found.append(int(entry.name))
        return found

    def create_database(self, dbname: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)


@contextlib.contextmanager
def pg_servers(count: int, prefix: str = "pg", *,
               durable: bool = False) -> Iterator[list[PgServer]]:
    """`count` fresh PostgreSQL servers, started; stopped and removed at the end, also
    when the block fails. `durable`: fsync and synchronous commit on (benchmarks); else
    off, for speed (tests: nothing outlives the run)."""
    root = Path(tempfile.mkdtemp(prefix="ledger-servers-"))
    os.chmod(root, 0o755)
    started: list[PgServer] = []
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
            server = PgServer(f"{prefix}{i}", data, free_port(), log, durable)
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            if server.running():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
