"""Throughput and latency of `ledger serve` over HTTP, next to in-process `Ledger.send`.

What it measures, on PostgreSQL, in one run:

- **in-process**: `--clients` threads (16) call `Ledger.send(command)` on one `Ledger`
  (a pool of `--clients` connections) as fast as they can, for `--duration` seconds after
  a `--warmup`;
- **serve workers=N** for each N in `--workers` (1,2,4): the real `ledger serve --workers N`
  on a free loopback port, and the same number of client threads, each with its own
  keep-alive `http.client` connection (the standard library's: about a fifth of httpx's
  CPU per request, and the load generator shares the CPUs with the server), POSTing the
  same commands to `/v1/commands` with the bearer token of the command's actor (the
  service takes the actor from the token).

Each measurement gets a fresh PostgreSQL schema, the same setup and the same command
stream. The figures: accepted commands/s (results `ok` and not replayed, finished inside
the window), p50/p99 latency (client side: for HTTP, the whole request), and the ratio to
in-process (the aim: the HTTP layer costs under 30% of in-process throughput, ratio >=
0.70). Then an **open loop** per mode at half of that mode's measured peak: commands
arrive at random (Poisson) times, spread over the same clients, and each latency is
counted from when the command was due, not when it was sent (so a slow server cannot
hide its queue); the aim is p99 < 50 ms. Printed with every row: the 1-minute load
average at the end of the window; the cores used in the window by the client process,
the server's processes, PostgreSQL's backends and all other work on the machine (from
/proc); and the client + server + PostgreSQL CPU milliseconds per accepted command, the
figure that moves least when other work shares the CPUs (this machine has 2, and the load
generator shares them with the server and the database).

The command mix is bench/commands.py's (its generators are imported): per seller
`register` (one session), `add_session`, `approve` (the every-7th seller that fails the
criteria with an override reason), `withdraw` (every 5th seller), and two
`record_performance`, in that order, one seller at a time per client. The service runs on
the system clock, so the dates of commands.py's campaigns are moved (whole days) to put
today inside their registration window; the reports go to registrations of a campaign
that has already ended (commands.py's own dates), one set per client, prepared in-process
before the window with a fixed clock, as are the campaigns. Tokens come from
`ledger.store.tokens.issue` (what `ledger tokens add` calls): one per seller, one for the
reviewer and one for the performance feed, issued once and copied into each schema.

Unless `--no-token-variant`, the largest worker count runs once more with the token
look-up cached in each worker (a uvicorn factory in this file wraps the service's
`actor()`; the ledger's code is not changed), and 1,000 `tokens.find` calls are timed one
by one, to show what the per-request look-up in the database costs.

    python bench/service.py              # defaults, about 4 minutes
    python bench/service.py --quick      # a smoke run (5 s windows, workers 1,2)
    python bench/service.py --workers 2 --duration 30 --clients 32

Options: `--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_service_bench:
this database is DROPPED and created again), `--duration` seconds per window (20),
`--warmup` seconds before each window (2), `--clients` (16), `--workers` (1,2,4),
`--sellers` the most sellers one mode may use, one token each (3000), `--open-fraction`
of the peak for the open loop (0.5), `--no-open-loop`, `--no-token-variant`, `--json`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from common import (
    Server,
    free_port,
    log,
    serving,
    stat_of,
)
from psycopg import sql
from workload import Plan, PostgresBackend, SellerCounter

from ledger import Ledger
from ledger.store import tokens
from ledger.store.tokens import TokenActor

HERE = Path(__file__).resolve().parent
OPEN_LOOP_AIM_MS = 50.0
RATIO_AIM = 0.70


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


# The server ---------------------------------------------------------------------------------

def serving_workers(url: str, workers: int, folder: Path,
                    variant: str = "") -> AbstractContextManager[Server]:
    """`ledger serve --workers N` (or this file's variant factory) until the block ends;
    its stderr (the JSON access log) goes to a file in `folder`."""
    def variant_argv(port: int) -> list[str]:
        return [sys.executable, str(HERE / "service.py"), "--serve-variant", variant,
                "--pg-url", url, "--port", str(port), "--workers", str(workers)]

    log_path = folder / f"serve-{workers}{'-' + variant if variant else ''}-{free_port()}.log"
    return serving(url, log_path, "--workers", str(workers),
                   command=variant_argv if variant else None)


def cached_tokens_app() -> Any:
    """The service's app with each token's actor looked up once per worker (a variant
    to measure what the per-request look-up costs; uvicorn factory)."""
    from ledger.service.app import from_env
    from ledger.service.state import Service

    app = from_env()
    service: Service = app.state.service
    found: dict[str, TokenActor | None] = {}
    lookup = service.actor

    def actor(token: str) -> TokenActor | None:
        if token not in found:
            found[token] = lookup(token)
        return found[token]

    service.actor = actor  # type: ignore[method-assign]
    return app


def serve_variant(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["LEDGER_DATABASE_URL"] = args.pg_url
    sys.path.insert(0, str(HERE))
    uvicorn.run(f"service:{args.serve_variant}", factory=True, host="127.0.0.1",
                port=args.port, workers=args.workers, access_log=False, log_level="warning",
                app_dir=str(HERE))
    return 0


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan(args.clients, args.sellers)
    log(f"issuing {args.sellers + 2} tokens, database {args.pg_url}")
    stores = Stores(args.pg_url, plan)
    log(f"  {stores.issue_seconds:.1f} s")
    rows: list[Row] = []
    folder = Path(tempfile.mkdtemp(prefix="ledger-service-bench-"))

    def both_loops(mode: str, sender: Callable[[], Send], server: Server | None) -> None:
        """The closed loop, then the open loop at a fraction of its rate (same store:
        the open loop goes on with new sellers and new reports)."""
        counter = SellerCounter(plan.sellers)
        closed = measure(mode, plan, sender, server, args, counter, None)
        rows.append(closed)
        if args.open_loop and closed.per_s > 0:
            rows.append(measure(mode, plan, sender, server, args, counter,
                                args.open_fraction * closed.per_s))

    log("in-process: Ledger.send")
    inproc = InProcess(stores.fresh("inprocess"), args.clients)
    try:
        both_loops("in-process", inproc.sender, None)
    finally:
        inproc.close()

    modes = [(w, "") for w in args.workers]
    if args.token_variant:
        modes.append((max(args.workers), "cached_tokens_app"))
    for workers, variant in modes:
        mode = f"serve workers={workers}" + (", tokens cached" if variant else "")
        log(mode)
        url = stores.fresh(f"serve{workers}{'_cached' if variant else ''}")
        with serving_workers(url, workers, folder, variant) as server:
            http = OverHttp(server.base, stores.token_of)
            try:
                if variant:
                    rows.append(measure(mode, plan, http.sender, server, args,
                                        SellerCounter(plan.sellers), None))
                else:
                    both_loops(mode, http.sender, server)
            finally:
                http.close()
    lookup = time_token_lookups(stores.tokens_url, stores.token_of)
    base = next(r.per_s for r in rows if r.mode == "in-process" and r.loop == "closed")
    for row in rows:
        if row.loop == "closed":
            row.ratio = row.per_s / base if base else None
    for log_file in folder.iterdir():
        log_file.unlink()
    folder.rmdir()
    with psycopg.connect(stores.backend.store.conninfo()) as conn:
        pg_settings = {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))
                                              ).fetchone()[0])  # type: ignore[index]
                       for name in ("synchronous_commit", "max_connections")}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "store": stores.backend.describe(),
        "postgres": pg_settings,
        "config": {k: v for k, v in vars(args).items() if k not in ("serve_variant", "port")},
        "rows": [asdict(r) for r in rows],
        "token_lookup": lookup,
    }


# Output --------------------------------------------------------------------------------------

def cpu_cells(r: Row) -> str:
    """Cores used by client/server/postgres/other work, and the CPU milliseconds that
    client + server + postgres spent per accepted command."""
    ours = r.cpu_client + r.cpu_server + r.cpu_postgres
    per_command = 1000 * ours / r.per_s if r.per_s else float("nan")
    return (f"{r.cpu_client:4.2f}/{r.cpu_server:4.2f}/{r.cpu_postgres:4.2f}/"
            f"{r.cpu_other:4.2f} {per_command:>7.1f}")


def table(report: dict[str, Any]) -> str:
    rows = [Row(**r) for r in report["rows"]]
    config = report["config"]
    cpu_head = f"{'cores c/s/pg/other':>19} {'CPU ms':>7}"
    out = [f"{report['date']}  {report['cpus']} CPUs  Python {report['python']}  "
           f"{report['store']} ({', '.join(f'{k}={v}' for k, v in report['postgres'].items())})",
           f"{config['clients']} clients, {config['duration']:g} s windows after "
           f"{config['warmup']:g} s warm-up. load1: 1-minute load average at the window's end."
           " cores: CPU used in the window by the client process / server processes / "
           "PostgreSQL / other work on the machine; CPU ms: client+server+PostgreSQL CPU per "
           "accepted command.", "",
           "Sustained throughput (closed loop: each client sends as soon as it has an answer)",
           "",
           f"{'mode':<31} {'commands':>8} {'accepted/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
           f"{'vs in-process':>13} {'load1':>6} {cpu_head}"]
    for r in (r for r in rows if r.loop == "closed"):
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        mark = "" if r.mode == "in-process" or r.ratio is None else (
            " ok" if r.ratio >= RATIO_AIM else " <0.70")
        out.append(f"{r.mode:<31} {r.commands:>8} {r.per_s:>10.0f} {r.p50_ms:>7.1f} "
                   f"{r.p99_ms:>7.1f} {ratio + mark:>13} {r.load1:>6.2f} {cpu_cells(r)}"
                   + (" (ran out of sellers)" if r.exhausted else ""))
    opened = [r for r in rows if r.loop == "open"]
    if opened:
        out += ["", f"Open loop at {config['open_fraction']:.0%} of each mode's peak (Poisson "
                    f"arrivals; latency from arrival; aim p99 < {OPEN_LOOP_AIM_MS:g} ms)", "",
                f"{'mode':<31} {'target/s':>8} {'achieved/s':>10} {'p50 ms':>7} "
                f"{'p99 ms':>7} {'aim':>13} {'load1':>6} {cpu_head}"]
        for r in opened:
            aim = "ok" if r.p99_ms < OPEN_LOOP_AIM_MS else "above"
            out.append(f"{r.mode:<31} {r.target_per_s or 0:>8.0f} {r.per_s:>10.0f} "
                       f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {aim:>13} {r.load1:>6.2f} "
                       f"{cpu_cells(r)}" + (" (ran out of sellers)" if r.exhausted else ""))
    lookup = report.get("token_lookup")
    if lookup:
        out += ["", f"One token look-up alone (tokens.find, in-process, one at a time, "
                    f"{lookup['count']} of them): median {lookup['median_ms']:.2f} ms, "
                    f"p99 {lookup['p99_ms']:.2f} ms, {lookup['cpu_ms']:.2f} ms client CPU each"]
    refusals = [f"{r.mode} ({r.loop}): {r.refused}" for r in rows if r.refused]
    if refusals:
        out += ["", "Refused or replayed inside the windows (the mix expects none):",
                *refusals]
    return "\n".join(out)


def time_token_lookups(url: str, token_of: dict[str, str], count: int = 1000
                       ) -> dict[str, float]:
    """What one `tokens.find` (the service's per-request look-up) costs, unloaded."""
    chosen = list(token_of.values())[:count]
    seconds: list[float] = []
    with Ledger.open(url) as ledger:
        store = ledger.app.store
        cpu = own_cpu()
        for token in chosen:
            began = time.perf_counter()
            if tokens.find(store, token) is None:
                raise RuntimeError("an issued token was not found")
            seconds.append(time.perf_counter() - began)
        cpu = own_cpu() - cpu
    ms = sorted(1000 * s for s in seconds)
    return {"count": len(ms), "median_ms": statistics.median(ms),
            "p99_ms": ms[int(0.99 * (len(ms) - 1))], "cpu_ms": 1000 * cpu / len(ms)}


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pg-url",
                        default="postgresql://postgres@127.0.0.1:5432/ledger_service_bench",
                        help="PostgreSQL database to DROP and create again for the run")
    add_load_options(parser)
    parser.add_argument("--workers", default="1,2,4",
                        help="comma-separated worker counts for `ledger serve` (1,2,4)")
    parser.add_argument("--no-token-variant", dest="token_variant", action="store_false",
                        help="skip the run with the token look-up cached")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 s windows, 1 s warm-up, workers 1,2")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--serve-variant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 5.0), min(args.warmup, 1.0)
        args.workers = "1,2" if args.workers == "1,2,4" else args.workers
        args.sellers = min(args.sellers, 1500)
    if not args.serve_variant:
        args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    else:
        args.workers = int(args.workers)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_variant:
        return serve_variant(args)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
