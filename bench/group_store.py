"""The store side of group commit: how fast one transaction writes many commands.

A realistic season (bench/commands.py's mix: campaigns, registrations, sessions, approvals,
withdrawals, then performance reports) is sent once through `Ledger.send` into a scratch
SQLite store; what each command wrote (its events, its `ledger_commands` row, its index
rows) is read back (`common.steps_of`). Then, for each backend, in one run and each in a
fresh store, the same writes are made again:

- **floor**: one durable one-row transaction per command (a bare `INSERT` of a 200-byte
  row, committed; WAL with the library's settings on SQLite): what one command per
  transaction cannot beat;
- **per command**: one `Application.save` per command (today's write of one command);
- **group, INSERT**: one save per group of `--group` commands through the library's insert
  (PostgreSQL: `INSERT ... unnest(...)`, pipelined; SQLite: one `execute` per event, the
  only path there): what a group save did before this work;
- **group, COPY** (PostgreSQL): the same saves through binary COPY.

Rows are events + hash links + command rows + index rows. The `insert only` lines of each
backend time the recorder alone (`insert_events` of events already encoded): the part of
a save that this path changes; the save's figures also hold the library's JSON encoding.
Then it loads every aggregate of the season, one `get` each and by `get_many` (200 ids a
call). On PostgreSQL it then saves groups of 1 to 64 commands both ways, the measurement behind
the size from which a save uses COPY (`ledger/store/copying.py: COPY_MIN_ROWS`).

    python bench/group_store.py                     # both backends, 5-10 minutes
    python bench/group_store.py --sellers 200 --backends postgres
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
from common import Step, emit, environment, group_save, log, steps_of
from psycopg import sql
from workload import plan_mix

from ledger import FixedClock, Ledger
from ledger.store.application import LedgerApplication
from ledger.store.hashing import as_uuid
from ledger.store.recorders import LedgerPostgresRecorder

THRESHOLD_SIZES = (1, 2, 4, 8, 16, 64)  # commands per save, for the COPY threshold
FEW = ("floor (1-row tx per command)", "per command (1 save each)")  # on --single commands


def season(directory: Path, sellers: int, reports: int) -> list[Step]:
    """What a season's commands wrote, sent one by one into a scratch SQLite store."""
    url = f"sqlite:///{directory / 'season.db'}"
    clock = FixedClock(plan_mix(1, 1, 1, 5)[0].at)
    with Ledger.open(url, clock=clock) as ledger:
        for phase in plan_mix(sellers, campaigns=2, reports=reports, withdraw_every=5):
            clock.set(phase.at)
            for op in phase.ops:
                result = ledger.send(op.command)
                if not result["ok"]:
                    raise SystemExit(f"the season's command was refused: {result}")
    return steps_of(url)


# Stores --------------------------------------------------------------------------------------

class Stores:
    """Fresh stores: SQLite files in a folder, schemas in a PostgreSQL database."""

    def __init__(self, directory: Path, pg_url: str) -> None:
        self.directory = directory
        self.pg_url = pg_url

    def new(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.directory / f'{uuid4().hex[:8]}.db'}"
        schema = f"g_{uuid4().hex[:10]}"
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return f"{self.pg_url}?schema={schema}"


@contextmanager
def opened(url: str, *, copy: bool = True) -> Iterator[LedgerApplication]:
    """The application on a store; `copy=False`: PostgreSQL saves keep the library's INSERT."""
    with Ledger.open(url, pool_size=2) as ledger:
        if not copy and isinstance(ledger.app.recorder, LedgerPostgresRecorder):
            ledger.app.recorder.bulk_min_rows = sys.maxsize
        yield ledger.app


# The runs --------------------------------------------------------------------------------------

@dataclass
class Timing:
    """Wall-clock seconds, and this process's CPU seconds (on PostgreSQL the server's are
    not in them): with the disk shared, the CPU figure is the steadier one."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timing() -> Iterator[Timing]:
    taken = Timing()
    wall, cpu = time.perf_counter(), time.process_time()
    yield taken
    taken.wall, taken.cpu = time.perf_counter() - wall, time.process_time() - cpu


def floor(backend: str, stores: Stores, commands: int) -> Timing:
    """Seconds for `commands` durable one-row transactions."""
    row = b"x" * 200
    if backend == "sqlite":
        path = stores.new("sqlite").removeprefix("sqlite:///")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
        with timing() as taken:
            for i in range(commands):
                conn.execute("BEGIN")
                conn.execute("INSERT INTO t VALUES (?, ?)", (i, row))
                conn.execute("COMMIT")
        conn.close()
        return taken
    with psycopg.connect(stores.pg_url, autocommit=True) as conn:
        table = f"floor_{uuid4().hex[:8]}"
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, payload bytea)")
                     .format(sql.Identifier(table)))
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table))
        with timing() as taken:
            for i in range(commands):
                conn.execute(insert, (i, row), prepare=True)
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        return taken


def groups(steps: Sequence[Step], size: int) -> list[Sequence[Step]]:
    return [steps[i:i + size] for i in range(0, len(steps), size)]


def timed_saves(url: str, steps: Sequence[Step], size: int, *, copy: bool,
                copy_min_rows: int | None = None) -> Timing:
    """Seconds to save `steps` in groups of `size` commands, one transaction each (the
    events decoded before the clock starts: a group commit has them as objects)."""
    with opened(url, copy=copy) as app:
        if copy_min_rows is not None and isinstance(app.recorder, LedgerPostgresRecorder):
            app.recorder.bulk_min_rows = copy_min_rows
        saves = [group_save(app, group) for group in groups(steps, size)]
        with timing() as taken:
            for events, plan in saves:
                app.save(*events, plan=plan)
        return taken


def timed_inserts(url: str, steps: Sequence[Step], size: int, *, copy: bool) -> Timing:
    """Seconds for the recorder alone to insert `steps` in groups of `size` (the events
    already encoded): the part of a save this work changes."""
    with opened(url, copy=copy) as app:
        inserts = [([e for s in group for e in s.events], group_save(app, group)[1])
                   for group in groups(steps, size)]
        with timing() as taken:
            for stored, plan in inserts:
                app.recorder.insert_events(stored, plan=plan)
        return taken


def measure(backend: str, stores: Stores, steps: list[Step], size: int,
            repeat: int, single: int) -> dict[str, Any]:
    """Commands/s and rows/s of each way, side by side on one backend: the ways take turns,
    `repeat` rounds, and each figure is the median round (drift hits every way alike)."""
    rows = sum(s.rows for s in steps)
    few = steps[:single]  # one transaction per command: a rate, measured on fewer commands
    runs: dict[str, Callable[[], Timing]] = {
        "floor (1-row tx per command)": lambda: floor(backend, stores, len(few)),
        "per command (1 save each)": lambda: timed_saves(stores.new(backend), few, 1,
                                                         copy=False),
        f"group of {size}, INSERT": lambda: timed_saves(stores.new(backend), steps, size,
                                                        copy=False),
        f"group of {size}, COPY": lambda: timed_saves(stores.new(backend), steps, size,
                                                      copy=True),
        "  insert only, INSERT": lambda: timed_inserts(stores.new(backend), steps, size,
                                                       copy=False),
        "  insert only, COPY": lambda: timed_inserts(stores.new(backend), steps, size,
                                                     copy=True),
    }
    if backend == "sqlite":  # one path: the library's INSERT, one `execute` per event
        for name in (f"group of {size}, COPY", "  insert only, COPY"):
            del runs[name]
    seconds: dict[str, list[Timing]] = {name: [] for name in runs}
    for round_ in range(repeat):
        for name, run in runs.items():
            seconds[name].append(run())
            commands = len(few) if name in FEW else len(steps)
            log(f"{backend}: round {round_ + 1}: {name}: "
                f"{commands / seconds[name][-1].wall:,.0f} commands/s")
    figures = {}
    for name, taken in seconds.items():
        median = statistics.median(t.wall for t in taken)
        cpu = statistics.median(t.cpu for t in taken)
        commands = len(few) if name in FEW else len(steps)
        written = (commands if name.startswith("floor") else
                   sum(s.rows for s in few) if name in FEW else rows)
        figures[name] = {"seconds": [t.wall for t in taken], "commands": commands,
                         "commands_per_s": commands / median, "rows_per_s": written / median,
                         "cpu_us_per_command": cpu / commands * 1e6}
    return figures


def loads(backend: str, stores: Stores, steps: list[Step], repeat: int) -> dict[str, float]:
    """Aggregates/s loaded one `get` each and by `get_many` (groups of 200 ids), taking
    turns, on a store holding the season (the median of `repeat` rounds)."""
    url = stores.new(backend)
    with opened(url) as app:
        for group in groups(steps, 200):
            events, plan = group_save(app, group)
            app.save(*events, plan=plan)
        ids = list(dict.fromkeys(as_uuid(e.originator_id) for s in steps for e in s.events))
        taken: dict[str, list[float]] = {"get": [], "get_many": []}
        for _ in range(repeat):
            with timing() as one:
                for oid in ids:
                    app.get(oid)
            taken["get"].append(one.wall)
            with timing() as many:
                for start in range(0, len(ids), 200):
                    app.get_many(ids[start:start + 200])
            taken["get_many"].append(many.wall)
    found = {way: len(ids) / statistics.median(t) for way, t in taken.items()}
    log(f"{backend}: loads of {len(ids):,} aggregates: get {found['get']:,.0f}/s, "
        f"get_many {found['get_many']:,.0f}/s")
    return found


def threshold(stores: Stores, steps: list[Step], repeat: int) -> dict[int, dict[str, float]]:
    """PostgreSQL: commands/s of saves of 1..64 commands, INSERT and COPY taking turns
    (the median of `repeat` rounds)."""
    found: dict[int, dict[str, float]] = {}
    for size in THRESHOLD_SIZES:
        part = steps[:max(size * 20, 100)]
        taken: dict[str, list[float]] = {"INSERT": [], "COPY": []}
        for _ in range(repeat):
            for way, copy in (("INSERT", False), ("COPY", True)):
                taken[way].append(timed_saves(stores.new("postgres"), part, size, copy=copy,
                                              copy_min_rows=1 if copy else None).wall)
        found[size] = {way: len(part) / statistics.median(t) for way, t in taken.items()}
        log(f"postgres: groups of {size}: INSERT {found[size]['INSERT']:,.0f}, "
            f"COPY {found[size]['COPY']:,.0f} commands/s")
    return found


def print_tables(report: dict[str, Any]) -> None:
    steps = report["workload"]
    env = report["environment"]
    print(f"\n{env['cpus']} CPUs, load average {report['load_average_before'][0]:.1f} before, "
          f"{report['load_average_after'][0]:.1f} after; commit {env['commit']}")
    print(f"Workload: {steps['commands']:,} commands writing {steps['events']:,} events "
          f"({steps['rows']:,} rows with hash links, command and index rows); "
          f"groups of {report['group']} commands; the floor and per-command ways on the "
          f"first {report['single']:,}; medians of {report['repeat']} rounds")
    print(f"{'backend':<9} {'way':<30} {'commands/s':>11} {'rows/s':>9} {'vs floor':>9} "
          f"{'CPU us/cmd':>11}")
    for backend, figures in report["backends"].items():
        base = next(iter(figures.values()))["commands_per_s"]
        for name, f in figures.items():
            print(f"{backend:<9} {name:<30} {f['commands_per_s']:>11,.0f} "
                  f"{f['rows_per_s']:>9,.0f} {f['commands_per_s'] / base:>8.2f}x "
                  f"{f['cpu_us_per_command']:>11,.0f}")
    print("\nLoading every aggregate of the season: aggregates/s")
    print(f"{'backend':<9} {'get (one each)':>15} {'get_many (200)':>15} {'ratio':>7}")
    for backend, f in report["loads"].items():
        print(f"{backend:<9} {f['get']:>15,.0f} {f['get_many']:>15,.0f} "
              f"{f['get_many'] / f['get']:>6.2f}x")
    if report.get("threshold"):
        print("\nPostgreSQL, commands per save: commands/s by the library's INSERT and by COPY")
        print(f"{'commands':>8} {'INSERT':>9} {'COPY':>9} {'COPY/INSERT':>12}")
        for size, f in report["threshold"].items():
            print(f"{size:>8} {f['INSERT']:>9,.0f} {f['COPY']:>9,.0f} "
                  f"{f['COPY'] / f['INSERT']:>11.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sellers", type=int, default=400,
                        help="sellers in the season (default 400: ~2,500 commands)")
    parser.add_argument("--reports", type=int, default=3, help="reports per seller")
    parser.add_argument("--group", type=int, default=200, help="commands per group save")
    parser.add_argument("--single", type=int, default=500,
                        help="commands of the one-transaction-per-command ways (default 500)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds, the ways taking turns; figures are medians (default 3)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/ledger_group_bench",
                        help="this database is DROPPED and created again on every run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", default=None, help="also write the JSON figures to this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="group-store-") as folder:
        directory = Path(folder)
        log(f"sending the season ({args.sellers} sellers) into a scratch store")
        steps = season(directory, args.sellers, args.reports)
        if "postgres" in backends:
            recreate(args.pg_url)
        stores = Stores(directory, args.pg_url)
        report: dict[str, Any] = {
            "environment": environment(), "group": args.group,
            "load_average_before": os.getloadavg(), "repeat": args.repeat,
            "single": min(args.single, len(steps)),
            "workload": {"commands": len(steps), "events": sum(len(s.events) for s in steps),
                         "rows": sum(s.rows for s in steps)},
            "backends": {b: measure(b, stores, steps, args.group, args.repeat, args.single)
                         for b in backends},
        }
        report["loads"] = {b: loads(b, stores, steps, args.repeat) for b in backends}
        if "postgres" in backends:
            report["threshold"] = threshold(stores, steps, args.repeat)
        report["load_average_after"] = os.getloadavg()
    emit(args, report, print_tables)
    return 0


def recreate(url: str) -> None:
    """Drop and create the bench's PostgreSQL database."""
    admin, name = url.rsplit("/", 1)
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


if __name__ == "__main__":
    sys.exit(main())
