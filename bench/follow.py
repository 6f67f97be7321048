"""What it costs to keep read models current while commands arrive: the follower's small
catch-ups (`ledger serve`'s follower, `ledger projections run`), with the working sets
kept from one catch-up to the next and without, side by side in one run.

For each backend: two fresh stores set up alike (bench/workload.py's `Plan`, the command
mix `ledger serve` is measured with: registrations, sessions, reviews, withdrawals,
reports), their read models caught up. Then, `--rounds` times: the same `--per` commands
are sent to both stores (groups of 3, as `ledger serve` coalesces them), and each store's
projector catches up, the two taken in turn (which goes first alternates). One projector
keeps its working sets (`CatchUp.live_working_set`, 1,000 rows a table: the default); the
other keeps none (0: every catch-up reads the rows it needs again, as before round 13).

It prints, per backend and way, the statements and transactions a catch-up sends (counted
by wrapping the drivers' `execute` and the datastores' `transaction`: figures the
machine's load cannot move), the median CPU of this process per catch-up and per event,
the median wall time, and the ratio of the two ways. The database server's CPU is not
counted.

    python bench/follow.py                                # both backends, ~1 minute
    python bench/follow.py --backends sqlite --per 200 --rounds 20

`--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_follow_bench) is DROPPED
and created again.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from common import add_report_options, emit, environment, log
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore
from workload import Plan, PostgresBackend, SellerCounter, SQLiteBackend

from ledger import Ledger
from ledger.projections.catchup import LIVE_WORKING_SET
from ledger.projections.registry import projector

WAYS = {"kept": LIVE_WORKING_SET, "none": 0}  # rows a table kept between catch-ups


class Counted:
    """Statements and transactions this process sends while `on` (the drivers' `execute`
    and the library datastores' `transaction`, wrapped for the run): what a catch-up asks
    of the database, which the machine's load cannot move."""

    def __init__(self) -> None:
        self.on = False
        self.statements = self.transactions = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Counted:
        def wrap(cls: Any, name: str, field: str) -> None:
            method = getattr(cls, name)

            def counted(*args: Any, **kwargs: Any) -> Any:
                if self.on:
                    setattr(self, field, getattr(self, field) + 1)
                return method(*args, **kwargs)

            self._saved.append((cls, name, method))
            setattr(cls, name, counted)

        wrap(psycopg.Cursor, "execute", "statements")
        wrap(SQLiteCursor, "execute", "statements")
        wrap(PostgresDatastore, "transaction", "transactions")
        wrap(SQLiteDatastore, "transaction", "transactions")
        return self

    def __exit__(self, *_: Any) -> None:
        for cls, name, method in self._saved:
            setattr(cls, name, method)


def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan(1, args.sellers)
    commands = list(itertools.islice(plan.stream(0, SellerCounter(args.sellers)),
                                     args.per * args.rounds))
    ledgers = {way: Ledger.open(url) for way, url in urls.items()}
    try:
        projectors = {}
        for way, ledger in ledgers.items():
            p = projectors[way] = projector(ledger.app)
            p.live_working_set = WAYS[way]
            p.catch_up()
        cpu: dict[str, list[float]] = {way: [] for way in WAYS}
        wall: dict[str, list[float]] = {way: [] for way in WAYS}
        events: dict[str, int] = dict.fromkeys(WAYS, 0)
        asked = {way: [0, 0] for way in WAYS}  # statements, transactions
        with Counted() as counted:
            for r in range(args.rounds):
                batch = commands[r * args.per:(r + 1) * args.per]
                for ledger in ledgers.values():
                    for start in range(0, len(batch), 3):
                        ledger.send_group(batch[start:start + 3])
                order = list(WAYS) if r % 2 == 0 else list(reversed(WAYS))
                for way in order:
                    counted.statements = counted.transactions = 0
                    counted.on = True
                    began_cpu, began = time.process_time(), time.perf_counter()
                    done = projectors[way].catch_up()
                    cpu[way].append(time.process_time() - began_cpu)
                    wall[way].append(time.perf_counter() - began)
                    counted.on = False
                    events[way] += done
                    asked[way][0] += counted.statements
                    asked[way][1] += counted.transactions
        rows = []
        for way in WAYS:
            per_catch_up = events[way] / args.rounds
            rows.append({"way": way, "kept_rows_per_table": WAYS[way],
                         "events_per_catch_up": per_catch_up,
                         "statements": asked[way][0] / args.rounds,
                         "transactions": asked[way][1] / args.rounds,
                         "cpu_ms": statistics.median(cpu[way]) * 1e3,
                         "cpu_us_per_event": statistics.median(cpu[way]) / per_catch_up * 1e6,
                         "wall_ms": statistics.median(wall[way]) * 1e3})
        return {"rows": rows,
                "cpu_ratio": rows[1]["cpu_ms"] / rows[0]["cpu_ms"],
                "wall_ratio": rows[1]["wall_ms"] / rows[0]["wall_ms"]}
    finally:
        for ledger in ledgers.values():
            ledger.close()


def print_tables(report: dict[str, Any]) -> None:
    print(f"follower catch-ups: {report['per']} commands between two, {report['rounds']} "
          f"rounds, {report['environment']['cpus']} CPUs, commit "
          f"{report['environment']['commit']}")
    print()
    print(f"{'backend':<9} {'working sets':<22} {'events':>7} {'stmts':>6} {'txns':>5} "
          f"{'CPU ms':>7} {'CPU us/ev':>9} {'wall ms':>8}")
    for backend in report["backends"]:
        for row in backend["rows"]:
            way = ("kept (1,000 rows)" if row["way"] == "kept"
                   else "read again each time")
            print(f"{backend['backend']:<9} {way:<22} {row['events_per_catch_up']:>7.0f} "
                  f"{row['statements']:>6.1f} {row['transactions']:>5.1f} "
                  f"{row['cpu_ms']:>7.1f} {row['cpu_us_per_event']:>9.0f} "
                  f"{row['wall_ms']:>8.1f}")
        print(f"{'':<9} read again / kept: CPU {backend['cpu_ratio']:.2f}x, "
              f"wall {backend['wall_ratio']:.2f}x")
    print("  per catch-up: statements and transactions on average, CPU and wall the medians; "
          "CPU: this process's, the database server's not included")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgres,sqlite",
                        help="comma-separated: postgres, sqlite (both)")
    parser.add_argument("--pg-url",
                        default="postgresql://postgres@127.0.0.1:5432/ledger_follow_bench",
                        help="a database to DROP and create again")
    parser.add_argument("--per", type=int, default=60,
                        help="commands sent between two catch-ups (60: ~300/s at the "
                             "follower's 0.2 s poll)")
    parser.add_argument("--rounds", type=int, default=30, help="catch-ups per way (30)")
    parser.add_argument("--sellers", type=int, default=3000,
                        help="sellers the commands may come from (3000)")
    add_report_options(parser)
    args = parser.parse_args()
    report: dict[str, Any] = {"environment": environment(), "per": args.per,
                              "rounds": args.rounds, "backends": [],
                              "at": datetime.now(UTC).isoformat()}
    with tempfile.TemporaryDirectory(prefix="ledger-follow-") as folder:
        for name in args.backends.split(","):
            backend = (PostgresBackend(args.pg_url) if name == "postgres"
                       else SQLiteBackend(folder))
            urls = {way: backend.url(f"follow_{way}") for way in WAYS}
            log(f"{name}: set-up", args)
            for url in urls.values():
                Plan(1, args.sellers).setup(url)
            log(f"{name}: {args.rounds} rounds of {args.per} commands", args)
            found = measure(urls, args)
            report["backends"].append({"backend": name, **found})
            log(f"  read again / kept: CPU {found['cpu_ratio']:.2f}x", args)
    emit(args, report, print_tables)


if __name__ == "__main__":
    main()
