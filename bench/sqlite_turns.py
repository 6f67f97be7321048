"""Writers of one SQLite file taking turns (ledger/store/turns.py) against SQLite's busy
handler alone: several processes writing one file, side by side in one run.

Two levels, each in rounds that alternate the two ways (same machine, same minute):

- **store**: `--writers` processes, each making `--transactions` write transactions of
  one row that hold the write lock `--hold-ms` and then pause half that; the library's
  `SQLiteDatastore` (the busy handler only) against the ledger's `TurnTakingDatastore`.
- **ledger**: `--writers` processes, each sending its own sellers' `register` commands
  one at a time (`Ledger.send`: one transaction each, the hash chain and the command row
  with it) into one store; the application on the library's plain SQLite factory against
  the ledger's (`LedgerSQLiteFactory`, as shipped).

Printed per level and way: transactions/s from the first write to the last, and each write's latency
(asking to commit, ms): p50, p99 and the worst. The busy handler sleeps 1, 2, 5, 10, 15,
20, 25 ms... between its tries, so its waiters come late and sometimes starve.

    python bench/sqlite_turns.py                  # both levels, 2 and 4 writers, ~1 minute
    python bench/sqlite_turns.py --quick          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from common import IN_WINDOW, campaign_command, environment, log
from workload import Seller

from ledger import FixedClock, Ledger
from ledger.store.application import LedgerApplication, library_env
from ledger.store.turns import TurnTakingDatastore
from ledger.store.urls import parse_url

WAYS = ("busy handler", "turns")
Timed = tuple[list[float], float, float]  # latencies (ms), first began, last ended
CAMPAIGN = "bench-live-1"


def store_writer(way: str, path: str, transactions: int, hold: float) -> Timed:
    """One process's write transactions on the datastore of `way`: each one's latency (ms),
    and when the first began and the last ended."""
    from eventsourcing.sqlite import SQLiteDatastore

    kind = TurnTakingDatastore if way == "turns" else SQLiteDatastore
    datastore = kind(path, lock_timeout=30)
    latencies = []
    began = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in every process
    for i in range(transactions):
        asked = time.perf_counter()
        with datastore.transaction(commit=True) as c:
            c.execute("INSERT INTO t(v) VALUES (?)", (i,))
            time.sleep(hold)  # work done under the write lock (a group's decisions)
        latencies.append((time.perf_counter() - asked) * 1000)
        time.sleep(hold / 2)
    ended = time.perf_counter()
    datastore.close()
    return latencies, began, ended


def ledger_writer(way: str, path: str, transactions: int, first: int) -> Timed:
    """One process's `register` commands, one per transaction: each one's latency (ms),
    and when the first began and the last ended."""
    env = library_env(parse_url(f"sqlite:///{path}"))
    if way != "turns":
        env["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"  # the library's own factory
    ledger = Ledger(LedgerApplication(env=env), FixedClock(IN_WINDOW), f"sqlite:///{path}")
    latencies = []
    began = time.perf_counter()
    for index in range(first, first + transactions):
        command = Seller(index, CAMPAIGN).register().command
        asked = time.perf_counter()
        result = ledger.send(command)
        latencies.append((time.perf_counter() - asked) * 1000)
        assert result["ok"] or result["error"]["code"] == "criteria_not_met", result
    ended = time.perf_counter()
    ledger.close()
    return latencies, began, ended


def fresh_store(folder: str, name: str, level: str) -> str:
    path = os.path.join(folder, f"{name}.db")
    if level == "store":
        with sqlite3.connect(path) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE t(v)")
        c.close()
    else:
        ledger = Ledger.open(f"sqlite:///{path}", clock=FixedClock(IN_WINDOW))
        assert ledger.send(campaign_command(CAMPAIGN))["ok"]
        ledger.close()
    return path


def measure(level: str, way: str, writers: int, args: argparse.Namespace,
            folder: str, label: str) -> dict[str, Any]:
    path = fresh_store(folder, label, level)
    task: Callable[..., Timed]
    if level == "store":
        task, jobs = store_writer, [(way, path, args.transactions, args.hold_ms / 1000)] * writers
    else:
        task = ledger_writer
        jobs = [(way, path, args.transactions, w * args.transactions) for w in range(writers)]
    with multiprocessing.get_context("spawn").Pool(writers) as pool:
        results = pool.starmap(task, jobs)
    # From the first write of any writer to the last (not the writers' start-up).
    wall = max(ended for _, _, ended in results) - min(began for _, began, _ in results)
    latencies = sorted(ms for one, _, _ in results for ms in one)
    return {"level": level, "way": way, "writers": writers,
            "per_s": round(len(latencies) / wall), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[int(0.99 * len(latencies))], 2),
            "max_ms": round(latencies[-1], 2)}


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'level':7} {'writers':>7}  {'way':13} {'round':>5} {'tx/s':>6} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'max ms':>7}")
    lines = [head]
    for row in rows:
        lines.append(f"{row['level']:7} {row['writers']:>7}  {row['way']:13} {row['round']:>5} "
                     f"{row['per_s']:>6} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                     f"{row['max_ms']:>7.2f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--levels", default="store,ledger", help="store, ledger (both)")
    parser.add_argument("--writers", default="2,4", help="processes writing at once (2,4)")
    parser.add_argument("--transactions", type=int, default=300,
                        help="write transactions per process (300)")
    parser.add_argument("--hold-ms", type=float, default=2.0,
                        help="store level: ms each transaction holds the lock (2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both ways (2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 transactions, 1 round")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--verbose", action="store_true", help="progress lines with --json")
    args = parser.parse_args(argv)
    if args.quick:
        args.transactions, args.rounds = min(args.transactions, 50), 1
    args.levels = [x.strip() for x in args.levels.split(",") if x.strip()]
    if set(args.levels) - {"store", "ledger"}:
        parser.error(f"unknown level(s) in {args.levels}")
    args.writers = [int(x) for x in args.writers.split(",") if x.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ledger-turns-") as folder:
        for level in args.levels:
            for writers in args.writers:
                for number in range(1, args.rounds + 1):
                    ways = WAYS if number % 2 else WAYS[::-1]  # alternate who goes first
                    for way in ways:
                        row = measure(level, way, writers, args, folder,
                                      f"{level}-{writers}-{number}-{way.replace(' ', '_')}")
                        row["round"] = number
                        log(f"{level}, {writers} writers, {way}: {row['per_s']} tx/s, "
                            f"p99 {row['p99_ms']} ms", args)
                        rows.append(row)
    report = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **environment(),
              "transactions": args.transactions, "hold_ms": args.hold_ms, "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['at']}  {report['cpus']} CPUs  commit {report.get('commit')}  "
              f"{args.transactions} write transactions per process")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
