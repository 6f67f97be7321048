"""Soak: mixed commands through `ledger serve` on PostgreSQL for 10 minutes, with a fault
injected every minute. Nothing the clients were told was accepted may be lost, and nothing
may be stored twice.

What runs, on a fresh schema of a database this script drops and creates again:

- `ledger serve --workers 2` (the real command, on a free loopback port) and
  `ledger projections run` (the read models' follower), each restarted by this script if
  it dies, as a process supervisor would;
- `--clients` (8) client threads sending `--rate` (60) commands/s in all, each command
  POSTed to `/v1/commands` with its actor's bearer token. The mix is bench/service.py's
  (per seller: register, add_session, approve, withdraw every 5th, two performance
  reports), with refusals mixed in on purpose: the same account registered again
  (`already_registered`), an approve of a decided registration (`invalid_transition`) and
  a session overlapping one already held (`session_overlap`). A client that gets a 503 or
  a connection error sends the same command (same `command_id`) again after a short
  back-off, until it gets an answer (or gives up after `--give-up` seconds);
- a fault every `--fault-every` seconds (60), taking turns:
  `terminate` (pg_terminate_backend on every connection to the database),
  `kill-worker` (SIGKILL to one uvicorn worker; uvicorn starts another),
  `outage` (the database refuses connections for 10 s: ALLOW_CONNECTIONS off),
  `kill-projector` (SIGKILL to the follower; restarted 1 s later),
  `read-only` (default_transaction_read_only for 10 s, as a standby after a failover),
  `restart` (the PostgreSQL server restarted with pg_ctlcluster; needs root, and stops
  every other user of that server for a few seconds);
- `/readyz` polled every second for the read models' lag.

When the time is up the clients finish what they are sending, the read models are left to
catch up, and the store itself is read: every command answered `ok` must have its
`ledger_commands` row with the same result (else it is **lost**); per aggregate, the events
stored must be exactly those of its command rows, versions 1..n (more is **duplicated**,
fewer is lost); a command answered with a refusal must have left nothing (else it is a
**phantom**); and `ledger audit verify` must be clean.

    python bench/soak.py                         # 10 minutes, every fault
    python bench/soak.py --minutes 2 --fault-every 15 --faults terminate,kill-worker

Options: `--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_soak: DROPPED and
created again), `--minutes` (10), `--fault-every` (60), `--faults` (all six, in the order
above), `--clients` (8), `--rate` (60), `--workers` (2), `--give-up` (120), `--json`.
Exit status 1 if anything was lost, duplicated, phantom or unexpected, or verify failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from common import interrupt, log, serving, stat_of
from psycopg import sql
from workload import Plan, PostgresBackend, SellerCounter

from ledger import Ledger
from ledger.audit import chain
from ledger.store import tokens

FAULTS = ("terminate", "kill-worker", "outage", "kill-projector", "read-only", "restart")
EXPECTED_REFUSALS = {"already_registered", "invalid_transition", "session_overlap"}
WINDOW = 10.0  # seconds an outage or a read-only spell lasts
CATCH_UP = 120.0  # seconds the read models get to catch up at the end
Json = dict[str, Any]


# The command stream: bench/service.py's mix, with refusals mixed in -------------------------

def with_refusals(commands: Iterator[Json]) -> Iterator[Json]:
    """After some sellers' commands, one the rules must refuse (a new command_id each)."""
    held: dict[int, Json] = {}  # a seller's first session, from its register
    for command in commands:
        yield command
        name, command_id = command["command"], command["command_id"]
        if not command_id.startswith("seller-"):
            continue  # the performance reports
        index = int(command_id.rsplit("-", 1)[1])
        if name == "register":
            held[index] = command["payload"]["sessions"][0]
            if index % 9 == 0:
                yield {**command, "command_id": f"{command_id}-again"}  # already_registered
        elif name == "approve" and index % 11 == 0:
            yield {**command, "command_id": f"{command_id}-again"}  # invalid_transition
        elif name == "add_session" and index % 13 == 0:
            session = held.pop(index, None)
            if session is not None:  # session_overlap
                yield {**command, "command_id": f"{command_id}-overlap",
                       "payload": {**command["payload"], **session}}


# Clients --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    command_id: str
    name: str
    ok: bool
    code: str  # refusal code, or "" when accepted
    replayed: bool
    attempts: int
    sent_at: float  # monotonic, first attempt
    answered_at: float
    result: Json = field(default_factory=dict)


@dataclass
class Tally:
    """What the clients saw, gathered under a lock."""

    outcomes: list[Outcome] = field(default_factory=list)
    transient: Counter[str] = field(default_factory=Counter)  # 503 codes, connection errors
    gave_up: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver(http: httpx.Client, headers: dict[str, str], command: Json, tally: Tally,
            give_up: float, rng: random.Random) -> Outcome | None:
    """POST until the service answers with a result; 503s and connection errors are
    retried with the same command_id (that is what makes retrying safe)."""
    body = json.dumps(command)
    sent = time.monotonic()
    attempts, backoff = 0, 0.1
    while True:
        attempts += 1
        transient = ""
        try:
            response = http.post("/v1/commands", content=body, headers=headers)
            if response.status_code == 503:
                transient = "503 " + str(response.json().get("error", {}).get("code"))
            else:
                result: Json = response.json()
                if "ok" not in result:
                    raise ValueError(f"HTTP {response.status_code} without a result: "
                                     f"{response.text[:200]}")
                error = result.get("error") or {}
                return Outcome(command["command_id"], command["command"], bool(result["ok"]),
                               "" if result["ok"] else str(error.get("code")),
                               bool(result.get("replayed")), attempts, sent,
                               time.monotonic(), result)
        except httpx.TransportError as e:
            transient = type(e).__name__
        with tally.lock:
            tally.transient[transient] += 1
        if time.monotonic() - sent > give_up:
            with tally.lock:
                tally.gave_up.append(command["command_id"])
            return None
        time.sleep(backoff * (0.5 + rng.random()))
        backoff = min(2.0, backoff * 2)


def client(number: int, base: str, plan: Plan, counter: SellerCounter, token_of: dict[str, str],
           rate: float, stop: threading.Event, tally: Tally, give_up: float) -> None:
    rng = random.Random(number)
    headers = {actor: {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
               for actor, token in token_of.items()}
    interval = plan.clients / rate
    due = time.monotonic()
    try:
        with httpx.Client(base_url=base, timeout=30,
                          limits=httpx.Limits(max_connections=1)) as http:
            for command in with_refusals(plan.stream(number, counter)):
                if stop.is_set():
                    break
                due = max(due + interval * (0.5 + rng.random()), time.monotonic() - 1.0)
                time.sleep(max(0.0, due - time.monotonic()))
                outcome = deliver(http, headers[command["actor"]["id"]], command, tally,
                                  give_up, rng)
                if outcome is not None:
                    with tally.lock:
                        tally.outcomes.append(outcome)
    except BaseException as e:  # shown in the report; the other clients go on
        with tally.lock:
            tally.errors.append(f"client {number}: {type(e).__name__}: {e}")


# Processes the script supervises --------------------------------------------------------------

class Projector:
    """`ledger projections run`, started again whenever it exits (as systemd would)."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.log_path = url, folder / "projections.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []  # exit codes of the runs that ended on their own
        self.killed = False
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ledger", "--db", self.url, "projections", "run"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def watch(self) -> None:
        """Restart it if it ended; an end we did not cause is counted."""
        with self.lock:
            if self.process is not None and self.process.poll() is not None:
                if not self.killed:
                    self.exits.append(self.process.returncode)
                self.killed = False
                time.sleep(1.0)
                self.start()

    def kill(self) -> None:
        with self.lock:
            if self.process is not None:
                self.killed = True
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def stop(self) -> None:
        with self.lock:
            if self.process is not None:
                interrupt(self.process)


def workers_of(server_pid: int) -> list[int]:
    """The uvicorn worker processes: children of `ledger serve` running Python."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = stat_of(int(entry.name))
        if fields and int(fields[1]) == server_pid and fields[0] != "Z":
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                found.append(int(entry.name))
    return found


# Faults ---------------------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str
    at: float  # seconds since the load started
    began: float  # monotonic
    ended: float
    note: str = ""
    recovered_s: float | None = None  # until the first command sent after it was accepted
    retried: int = 0  # commands that needed a retry to get through it


class Faults:
    def __init__(self, admin: str, dbname: str, projector: Projector, server_pid: int) -> None:
        self.admin, self.dbname = admin, dbname
        self.projector, self.server_pid = projector, server_pid
        self.db = sql.Identifier(dbname)

    def sql(self, *statements: sql.Composable | str) -> None:
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=10) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def terminate(self) -> str:
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,)).fetchone()
        return f"{rows[0] if rows else 0} connections terminated"

    def inject(self, kind: str) -> str:
        if kind == "terminate":
            return self.terminate()
        if kind == "kill-worker":
            workers = workers_of(self.server_pid)
            if not workers:
                return "no worker found"
            victim = random.choice(workers)
            os.kill(victim, signal.SIGKILL)
            return f"worker {victim} killed ({len(workers)} running)"
        if kind == "kill-projector":
            self.projector.kill()
            return "follower killed"
        if kind == "outage":
            self.sql(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(self.db))
            try:
                note = self.terminate()
                time.sleep(WINDOW)
            finally:
                self.sql(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(self.db))
            return f"{note}; no connections for {WINDOW:.0f} s"
        if kind == "read-only":
            self.sql(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                     .format(self.db))
            try:
                note = self.terminate()
                time.sleep(WINDOW)
            finally:
                self.sql(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only")
                         .format(self.db))
                # Connections made meanwhile keep the setting: a failover back drops them.
                self.terminate()
            return f"{note}; read-only for {WINDOW:.0f} s"
        if kind == "restart":
            cluster = sorted(os.listdir("/etc/postgresql"))[0]
            started = time.monotonic()
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main",
                            "restart"], check=True, capture_output=True)
            return f"PostgreSQL {cluster} restarted in {time.monotonic() - started:.1f} s"
        raise ValueError(kind)


def can_restart() -> str:
    """Why the `restart` fault cannot run here ("" if it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        return "needs pg_ctlcluster"
    return ""


# The store, read at the end -------------------------------------------------------------------

@dataclass
class Audit:
    accepted: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    events: int = 0
    command_rows: int = 0
    verify: str = ""


def audit_store(url: str, outcomes: Sequence[Outcome]) -> Audit:
    """Compare what the clients were told with what the store holds."""
    found = Audit()
    with Ledger.open(url, pool_size=1) as ledger:
        store = ledger.app.store
        report = chain.verify(store)
        found.verify = ("clean" if report.clean else
                        f"{len(report.findings)} findings: {report.findings[:3]}")
        with store.snapshot() as curs:
            curs.execute(f"SELECT command_id, aggregate_id, version, result "
                         f"FROM {store.t}ledger_commands")
            rows = {str(r["command_id"]): (UUID(str(r["aggregate_id"])), json.loads(r["result"]))
                    for r in curs.fetchall()}
            curs.execute(f"SELECT originator_id, count(*) AS n, max(originator_version) AS top "
                         f"FROM {store.events_table} GROUP BY originator_id")
            stored = {UUID(str(r["originator_id"])): (int(r["n"]), int(r["top"]))
                      for r in curs.fetchall()}
    found.command_rows, found.events = len(rows), sum(n for n, _ in stored.values())
    for outcome in outcomes:
        row = rows.get(outcome.command_id)
        if outcome.ok:
            found.accepted += 1
            same = ("aggregate_id", "version", "events")
            if row is None or any(row[1].get(k) != outcome.result.get(k) for k in same):
                found.lost.append(outcome.command_id)
        elif row is not None:
            found.phantom.append(outcome.command_id)
    expected: Counter[UUID] = Counter()
    top: dict[UUID, int] = {}
    for aggregate, result in rows.values():
        expected[aggregate] += len(result.get("events") or [])
        top[aggregate] = max(top.get(aggregate, 0), int(result.get("version") or 0))
    for aggregate in set(expected) | set(stored):
        n, last = stored.get(aggregate, (0, 0))
        if n > expected[aggregate] or last > top.get(aggregate, 0):
            found.duplicated.append(str(aggregate))
        elif n < expected[aggregate] or n != last:
            found.lost.append(f"events of {aggregate}")
    return found


# The run --------------------------------------------------------------------------------------

def lag_of(base: str) -> int | None:
    try:
        response = httpx.get(f"{base}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    return max((m["lag"] for m in response.json()["read_models"]), default=0)


def run(args: argparse.Namespace) -> Json:
    kinds = [k for k in args.faults if k != "restart" or not can_restart()]
    skipped = {k: can_restart() for k in args.faults if k not in kinds}
    seconds = 60 * args.minutes
    sellers = int(args.rate * seconds / 5) + 200
    plan = Plan(args.clients, sellers)
    backend = PostgresBackend(args.pg_url)
    url = backend.url("soak")
    admin = psycopg.conninfo.make_conninfo(backend.store.conninfo(), dbname="postgres")
    log(f"soak: {args.minutes} min, {args.clients} clients at {args.rate}/s, faults every "
        f"{args.fault_every:.0f} s: {', '.join(kinds)}"
        + "".join(f" ({k} skipped: {why})" for k, why in skipped.items()))
    log(f"setting up {url}: campaigns, {sellers + 2} tokens")
    plan.setup(url)
    with Ledger.open(url) as ledger:
        now = datetime.now(UTC)
        token_of = {a.id: tokens.issue(ledger.app.store, a, now) for a in plan.actors()}
    folder = Path(tempfile.mkdtemp(prefix="ledger-soak-"))
    projector = Projector(url, folder)
    projector.start()
    tally, faults_done, lags = Tally(), [], []
    stop = threading.Event()
    with serving(url, folder / f"serve-{args.workers}.log", "--workers",
                 str(args.workers)) as server:
        faults = Faults(admin, backend.store.dbname, projector, server.process.pid)
        counter = SellerCounter(plan.sellers)
        threads = [threading.Thread(target=client, daemon=True, args=(
            n, server.base, plan, counter, token_of, args.rate, stop, tally, args.give_up))
            for n in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        schedule = itertools.cycle(kinds)
        next_fault = started + args.fault_every
        while (now_s := time.monotonic()) < started + seconds:
            lags.append((now_s - started, lag_of(server.base)))
            projector.watch()
            if kinds and now_s >= next_fault and now_s < started + seconds - 10:
                kind = next(schedule)
                log(f"  {now_s - started:5.0f} s  {kind}")
                began = time.monotonic()
                try:
                    note = faults.inject(kind)
                except Exception as e:  # the fault itself failed: say so, go on
                    note = f"could not inject: {type(e).__name__}: {e}"
                faults_done.append(Fault(kind, began - started, began, time.monotonic(), note))
                next_fault += args.fault_every
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now_s)))
        stop.set()
        log("load stopped; clients finishing what they were sending")
        for thread in threads:
            thread.join(args.give_up + 60)
        load_seconds = time.monotonic() - started
        head_wait = time.monotonic()
        caught_up = None
        while time.monotonic() - head_wait < CATCH_UP:
            projector.watch()
            lag = lag_of(server.base)
            if lag == 0:
                caught_up = time.monotonic() - head_wait
                break
            time.sleep(0.5)
        projector.stop()
    for fault in faults_done:
        after = [o.answered_at for o in tally.outcomes if o.ok and o.sent_at >= fault.ended]
        fault.recovered_s = (min(after) - fault.began) if after else None
        until = fault.began + (fault.recovered_s or 0.0)
        fault.retried = sum(1 for o in tally.outcomes
                              if o.attempts > 1 and fault.began - 30 <= o.sent_at <= until
                              and o.answered_at >= fault.began)
    log("reading the store")
    found = audit_store(url, tally.outcomes)
    serve_log = (folder / next(p.name for p in folder.iterdir() if p.name.startswith("serve"))
                 ).read_text(errors="replace")
    tracebacks = serve_log.count("Traceback")
    shutil.rmtree(folder, ignore_errors=True)
    outcomes = tally.outcomes
    refused = Counter(o.code for o in outcomes if not o.ok)
    unexpected = sorted(f"{o.command_id}: {o.code}" for o in outcomes
                        if not o.ok and o.code not in EXPECTED_REFUSALS)
    unexpected += [f"{o.command_id}: replayed without a retry" for o in outcomes
                   if o.ok and o.replayed and o.attempts == 1]
    first_try = [1000 * (o.answered_at - o.sent_at) for o in outcomes if o.attempts == 1]
    observed = [lag for _, lag in lags if lag is not None]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "store": backend.describe(),
        "config": {"minutes": args.minutes, "fault_every": args.fault_every,
                   "faults": kinds, "skipped": skipped, "clients": args.clients,
                   "rate": args.rate, "workers": args.workers},
        "load_seconds": round(load_seconds, 1),
        "sent": len(outcomes) + len(tally.gave_up),
        "accepted": found.accepted,
        "accepted_after_retry": sum(1 for o in outcomes if o.ok and o.attempts > 1),
        "replayed_on_retry": sum(1 for o in outcomes if o.ok and o.replayed and o.attempts > 1),
        "refused": dict(refused.most_common()),
        "retried_commands": sum(1 for o in outcomes if o.attempts > 1),
        "retries": sum(o.attempts - 1 for o in outcomes),
        "transient": dict(tally.transient.most_common()),
        "gave_up": len(tally.gave_up),
        "lost": found.lost, "duplicated": found.duplicated, "phantom": found.phantom,
        "unexpected": unexpected, "client_errors": tally.errors,
        "command_rows": found.command_rows, "events": found.events,
        "verify": found.verify,
        "server_tracebacks": tracebacks,
        "projector_exits": projector.exits,
        "lag_max": max(observed, default=None),
        "lag_p99": (round(statistics.quantiles(observed, n=100)[98]) if len(observed) > 1
                    else None),
        "readyz_unanswered": sum(1 for _, lag in lags if lag is None),
        "caught_up_s": None if caught_up is None else round(caught_up, 1),
        "latency_ms": {
            "p50": round(statistics.median(first_try), 1) if first_try else None,
            "p99": (round(statistics.quantiles(first_try, n=100)[98], 1)
                    if len(first_try) > 1 else None),
            "max_with_retries": round(max((1000 * (o.answered_at - o.sent_at)
                                           for o in outcomes), default=0), 1),
        },
        "faults": [asdict(f) for f in faults_done],
        "lag_samples": [(round(at, 1), lag) for at, lag in lags],
    }


def failed(report: Json) -> bool:
    return bool(report["lost"] or report["duplicated"] or report["phantom"]
                or report["unexpected"] or report["client_errors"] or report["gave_up"]
                or report["verify"] != "clean" or report["caught_up_s"] is None)


def table(report: Json) -> str:
    c = report["config"]
    latency = report["latency_ms"]

    def listed(items: list[str]) -> str:
        return f"{len(items)}" + (f"  e.g. {', '.join(items[:3])}" if items else "")

    lines = [
        f"{report['date']}  {report['cpus']} CPUs  Python {report['python']}  {report['store']}",
        f"{report['load_seconds']:.0f} s of load: {c['clients']} clients at {c['rate']}/s "
        f"offered, ledger serve --workers {c['workers']}; a fault every "
        f"{c['fault_every']:.0f} s" + "".join(f"  ({k} skipped: {why})"
                                               for k, why in c["skipped"].items()),
        "",
        f"  commands sent            {report['sent']}",
        f"  accepted                 {report['accepted']}  ({report['accepted_after_retry']} "
        f"after a retry, {report['replayed_on_retry']} of them answered as replays)",
        "  refused by code          " + (", ".join(f"{k} {v}" for k, v in
                                                report["refused"].items()) or "none"),
        f"  retried                  {report['retries']} retries of "
        f"{report['retried_commands']} commands ("
        + ", ".join(f"{k} {v}" for k, v in report["transient"].items()) + ")",
        f"  gave up                  {report['gave_up']}",
        f"  lost                     {listed(report['lost'])}",
        f"  duplicated               {listed(report['duplicated'])}",
        f"  phantom (refused, yet stored) {listed(report['phantom'])}",
        f"  unexpected answers       {listed(report['unexpected'])}",
        f"  client errors            {listed(report['client_errors'])}",
        f"  audit verify             {report['verify']} ({report['events']} events, "
        f"{report['command_rows']} command rows)",
        f"  read models' lag         max {report['lag_max']} events, p99 {report['lag_p99']}"
        f" (1 s samples; {report['readyz_unanswered']} unanswered while the store was "
        f"down); caught up {report['caught_up_s']} s after the load stopped",
        f"  latency, first try       p50 {latency['p50']} ms, p99 {latency['p99']} ms; "
        f"longest with retries {latency['max_with_retries'] / 1000:.1f} s",
        f"  service tracebacks       {report['server_tracebacks']}; follower exits not "
        f"caused by us: {report['projector_exits'] or 'none'}",
        "",
        f"  {'at':>6}  {'fault':<15} {'recovered':>9}  {'retried':>7}  what happened"
        "   (recovered: until the first command sent after it was accepted; retried: "
        "commands that needed a retry to get through it)",
    ]
    for f in report["faults"]:
        recovered = "-" if f["recovered_s"] is None else f"{f['recovered_s']:.1f} s"
        lines.append(f"  {f['at']:>5.0f}s  {f['kind']:<15} {recovered:>9}  "
                     f"{f['retried']:>7}  {f['note']}")
    lines += ["", "FAILED: see above" if failed(report) else
              "nothing lost, nothing duplicated, every answer expected"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/ledger_soak",
                        help="PostgreSQL database to DROP and create again for the run")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load (10)")
    parser.add_argument("--fault-every", type=float, default=60.0,
                        help="seconds between faults (60)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"faults to take turns, comma-separated ({','.join(FAULTS)})")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--rate", type=float, default=60.0,
                        help="commands/s offered by all clients together (60)")
    parser.add_argument("--workers", type=int, default=2, help="ledger serve --workers (2)")
    parser.add_argument("--give-up", type=float, default=120.0,
                        help="seconds a client keeps retrying one command (120)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
