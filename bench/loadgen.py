"""The load `bench/service.py`, `bench/serve_group.py` and `bench/markets.py` put on a
ledger: senders (in-process `Ledger.send`, or HTTP with keep-alive connections), client
threads driving a `Plan` in a closed or an open loop, CPU meters over /proc, and one
measured window as a `Row`. A library for the bench scripts: no script imports another.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from common import Server, log, stat_of
from psycopg import sql
from workload import Plan, PostgresBackend, SellerCounter

from ledger import Ledger
from ledger.store import tokens

OPEN_LOOP_AIM_MS = 50.0

# Senders: in-process and over HTTP ---------------------------------------------------------

Send = Callable[[dict[str, Any]], tuple[bool, str]]  # (accepted, refusal code or "")


def outcome(result: dict[str, Any]) -> tuple[bool, str]:
    if result.get("ok"):
        return (not result.get("replayed"), "" if not result.get("replayed") else "replayed")
    return False, str(result.get("error", {}).get("code", "?"))


class InProcess:
    def __init__(self, url: str, clients: int) -> None:
        self.ledger = Ledger.open(url, pool_size=clients)

    def sender(self) -> Send:
        def send(command: dict[str, Any]) -> tuple[bool, str]:
            return outcome(self.ledger.send(command))

        return send

    def close(self) -> None:
        self.ledger.close()


class OverHttp:
    """Clients of a running server: one keep-alive connection per client thread, made
    with the standard library's `http.client` (about a fifth of httpx's CPU per request:
    the load generator shares this machine's CPUs with the server it measures)."""

    def __init__(self, base: str, token_of: dict[str, str]) -> None:
        self.address = urlsplit(base)
        self.token_of = token_of
        self.connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def sender(self) -> Send:
        connection = http.client.HTTPConnection(self.address.hostname or "127.0.0.1",
                                                self.address.port, timeout=30)
        with self._lock:
            self.connections.append(connection)
        headers = {actor: {"Authorization": f"Bearer {token}",
                           "Content-Type": "application/json"}
                   for actor, token in self.token_of.items()}

        def send(command: dict[str, Any]) -> tuple[bool, str]:
            connection.request("POST", "/v1/commands", body=json.dumps(command).encode(),
                               headers=headers[command["actor"]["id"]])
            response = connection.getresponse()
            data = response.read()
            try:
                body = json.loads(data)
            except ValueError:
                return False, f"http_{response.status}"
            if not isinstance(body, dict):
                return False, f"http_{response.status}"
            return outcome(body)

        return send

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


# CPU use -------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        fields = stat_of(pid)
        if fields:
            found[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return found


def grown(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples by the processes alive at the second."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def postgres_pids() -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Cores used in a window by this process (the clients), the server's processes,
    PostgreSQL's, and everything else on the machine (other work)."""

    def __init__(self, server: Server | None) -> None:
        self.server = server
        self.start = self._sample()
        self.began = time.perf_counter()

    def _sample(self) -> tuple[float, dict[int, float], dict[int, float], float]:
        server = cpu_seconds(self.server.pids()) if self.server else {}
        return own_cpu(), server, cpu_seconds(postgres_pids()), machine_busy()

    def cores(self) -> tuple[float, float, float, float]:
        end = self._sample()
        wall = time.perf_counter() - self.began
        client = (end[0] - self.start[0]) / wall
        server = grown(self.start[1], end[1]) / wall
        pg = grown(self.start[2], end[2]) / wall
        busy = (end[3] - self.start[3]) / wall
        return client, server, pg, max(0.0, busy - client - server - pg)


# Load ----------------------------------------------------------------------------------------

@dataclass
class Window:
    accepted: int
    seconds: float
    latencies_ms: list[float]
    refused: dict[str, int]
    exhausted: bool

    @property
    def per_s(self) -> float:
        return self.accepted / self.seconds

    def percentile(self, q: float) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


def drive(plan: Plan, make_sender: Callable[[], Send], counter: SellerCounter, warmup: float,
          duration: float, rate: float | None, first_report: int = 0, seed: int = 7) -> Window:
    """`plan.clients` threads send their streams, each command as soon as the last one
    answered (closed loop, `rate` None) or at Poisson arrival times adding up to `rate`
    per second (open loop: latency counted from the arrival). Counts what finished inside
    [warmup, warmup + duration]."""
    lock = threading.Lock()
    latencies: list[float] = []
    refused: Counter[str] = Counter()
    accepted = 0
    start = time.perf_counter() + 0.2  # every thread ready
    window = (start + warmup, start + warmup + duration)
    errors: list[BaseException] = []

    def client(number: int) -> None:
        nonlocal accepted
        try:
            send = make_sender()
            arrivals = random.Random(seed * 1000 + number)
            due = start
            mine: list[float] = []
            mine_refused: Counter[str] = Counter()
            mine_accepted = 0
            for command in plan.stream(number, counter, first_report):
                if rate is not None:
                    due += arrivals.expovariate(rate / plan.clients)
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    began = due
                else:
                    began = time.perf_counter()
                if began >= window[1]:
                    break
                ok, code = send(command)
                ended = time.perf_counter()
                if window[0] <= ended < window[1]:
                    if ok:
                        mine_accepted += 1
                        mine.append(1000 * (ended - began))
                    else:
                        mine_refused[code] += 1
            with lock:
                latencies.extend(mine)
                refused.update(mine_refused)
                accepted += mine_accepted
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(plan.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Window(accepted, duration, latencies, dict(refused), counter.exhausted)


# Measurements --------------------------------------------------------------------------------

@dataclass
class Row:
    mode: str
    loop: str  # "closed" | "open"
    clients: int
    target_per_s: float | None
    commands: int
    per_s: float
    p50_ms: float
    p99_ms: float
    load1: float
    cpu_client: float
    cpu_server: float
    cpu_postgres: float
    cpu_other: float
    refused: dict[str, int]
    exhausted: bool
    ratio: float | None = None


def measure(mode: str, plan: Plan, sender: Callable[[], Send], server: Server | None,
            args: argparse.Namespace, counter: SellerCounter, rate: float | None) -> Row:
    meter = CpuMeter(server)
    window = drive(plan, sender, counter, args.warmup, args.duration, rate,
                   first_report=0 if rate is None else 1_000_000)
    cores = meter.cores()
    row = Row(mode, "closed" if rate is None else "open", plan.clients, rate,
              window.accepted, window.per_s, window.percentile(50), window.percentile(99),
              os.getloadavg()[0], *cores, window.refused, window.exhausted)
    log(f"  {row.loop} loop{f' at {rate:.0f}/s' if rate else ''}: {row.per_s:.0f} accepted/s, "
        f"p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms, load {row.load1:.2f}"
        f"{', refused ' + str(row.refused) if row.refused else ''}"
        f"{', RAN OUT OF SELLERS (raise --sellers)' if row.exhausted else ''}")
    return row


class Stores:
    """One database (dropped and made again), a schema per measurement, tokens issued
    once and copied into each schema."""

    def __init__(self, pg_url: str, plan: Plan) -> None:
        self.backend = PostgresBackend(pg_url)
        self.plan = plan
        self.tokens_url = self.backend.url("tokens")
        started = time.perf_counter()
        with Ledger.open(self.tokens_url) as ledger:
            now = datetime.now(UTC)
            self.token_of = {a.id: tokens.issue(ledger.app.store, a, now)
                             for a in plan.actors()}
        self.issue_seconds = time.perf_counter() - started
        self.count = 0

    def fresh(self, label: str) -> str:
        """A new schema with the ledger's tables, the plan's setup and every token."""
        self.count += 1
        url = self.backend.url(f"m{self.count}_{label}")
        self.plan.setup(url)
        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(self.backend.store.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("INSERT INTO {}.ledger_tokens SELECT * FROM "
                                 "tokens.ledger_tokens").format(sql.Identifier(schema)))
        return url


# Output --------------------------------------------------------------------------------------

def cpu_cells(r: Row) -> str:
    """Cores used by client/server/postgres/other work, and the CPU milliseconds that
    client + server + postgres spent per accepted command."""
    ours = r.cpu_client + r.cpu_server + r.cpu_postgres
    per_command = 1000 * ours / r.per_s if r.per_s else float("nan")
    return (f"{r.cpu_client:4.2f}/{r.cpu_server:4.2f}/{r.cpu_postgres:4.2f}/"
            f"{r.cpu_other:4.2f} {per_command:>7.1f}")


# Command line --------------------------------------------------------------------------------

def add_load_options(parser: argparse.ArgumentParser) -> None:
    """The load's options (windows, clients, sellers, the open loop); bench/serve_group.py
    takes them too."""
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds measured per window (20)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds run before each window, not counted (2)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--sellers", type=int, default=3000,
                        help="most sellers one mode may use, a token each (3000)")
    parser.add_argument("--open-fraction", type=float, default=0.5,
                        help="open-loop rate as a fraction of the peak (0.5)")
    parser.add_argument("--no-open-loop", dest="open_loop", action="store_false",
                        help="skip the open-loop windows")
