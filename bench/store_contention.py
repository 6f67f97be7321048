"""The store path of small groups under contention: what `ledger serve` writes, without HTTP.

`ledger serve` coalesces the requests that arrive together into small groups (3-5
commands under 16 clients) and writes them from several threads of several worker
processes at once. This bench measures that write path alone, on PostgreSQL: for each
layout `PxT` (P processes of T threads each), a fresh schema with `--registrations`
approved registrations (bench/workload.py's feed set-up, not timed), then every thread
sends performance reports of its own registrations (none shared, so no conflicts) in
groups of `--group` through `Ledger.group_sender` for `--duration` seconds.

It prints accepted commands/s and the processes' CPU per command. Comparing layouts shows
what limits a small group: threads of one process share its interpreter lock, processes
do not; the table lock is shared by all.

    python bench/store_contention.py                        # 1x1, 2x1, 2x2, 4x1; ~1 minute
    python bench/store_contention.py --layouts 2x2 --group 3 --duration 8

`--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_store_contention_bench)
is DROPPED and created again.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from typing import Any

from common import AFTER_CAMPAIGN, IN_WINDOW, add_report_options, emit, environment, log
from workload import PostgresBackend, feed, feed_setup, lines, set_up

from ledger import FixedClock, Ledger

REPORTS_PER_REGISTRATION = 60  # more than any thread sends in a run of --duration


def writer(url: str, process: int, processes: int, threads: int, group: int,
           seconds: float, registrations: int, results: Queue[tuple[int, float, float]]
           ) -> None:
    """One process: `threads` threads, each sending its registrations' reports."""
    mine = [line for number, line in enumerate(
        lines(feed(registrations, registrations * REPORTS_PER_REGISTRATION)))
        if (number % registrations) % processes == process]
    counts = [0] * threads
    with Ledger.open(url, clock=FixedClock(AFTER_CAMPAIGN), pool_size=threads + 2) as ledger:
        stop = time.monotonic() + seconds

        def run(thread: int) -> None:
            send = ledger.group_sender()
            own = [line for number, line in enumerate(mine) if
                   ((number % (registrations // processes)) % threads) == thread]
            for start in range(0, len(own), group):
                if time.monotonic() >= stop:
                    return
                results = send(own[start:start + group])
                counts[thread] += sum(1 for result in results if result["ok"])

        running = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        cpu, began = time.process_time(), time.monotonic()
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
        results.put((sum(counts), time.monotonic() - began, time.process_time() - cpu))


def measure(url: str, processes: int, threads: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results: Queue[tuple[int, float, float]] = context.Queue()
    workers = [context.Process(target=writer, args=(
        url, p, processes, threads, args.group, args.duration, args.registrations, results))
        for p in range(processes)]
    for worker in workers:
        worker.start()
    found = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    accepted = sum(f[0] for f in found)
    wall = max(f[1] for f in found)
    cpu = sum(f[2] for f in found)
    return {"layout": f"{processes}x{threads}", "accepted": accepted,
            "per_second": accepted / wall, "cpu_us_per_command": cpu / accepted * 1e6}


def print_tables(report: dict[str, Any]) -> None:
    print(f"small groups on the store (groups of {report['group']}, "
          f"{report['registrations']:,} registrations, {report['duration']} s), "
          f"{report['environment']['cpus']} CPUs, commit {report['environment']['commit']}")
    print()
    print(f"{'layout':<8} {'accepted/s':>11} {'CPU us/cmd':>11}")
    for row in report["rows"]:
        print(f"{row['layout']:<8} {row['per_second']:>11,.0f} {row['cpu_us_per_command']:>11,.0f}")
    print("  layout PxT: P processes of T threads; CPU: the writing processes' own, "
          "PostgreSQL's not included")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url",
                        default="postgresql://postgres@127.0.0.1:5432/"
                                "ledger_store_contention_bench",
                        help="a database to DROP and create again")
    parser.add_argument("--layouts", default="1x1,2x1,2x2,4x1",
                        help="processes x threads, comma-separated (1x1,2x1,2x2,4x1)")
    parser.add_argument("--group", type=int, default=3, help="commands per group (3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per layout (8)")
    parser.add_argument("--registrations", type=int, default=1000,
                        help="approved registrations set up first (1000)")
    add_report_options(parser)
    args = parser.parse_args()
    layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
    backend = PostgresBackend(args.pg_url)
    rows = []
    for processes, threads in layouts:
        if args.registrations % processes:
            parser.error("--registrations must divide among the processes")
        url = backend.url(f"contention_{processes}x{threads}")
        log(f"{processes}x{threads}: set-up ({args.registrations:,} registrations)", args)
        set_up(url, IN_WINDOW, feed_setup(args.registrations))
        log(f"{processes}x{threads}: groups of {args.group} for {args.duration} s", args)
        rows.append(measure(url, processes, threads, args))
        log(f"  {rows[-1]['per_second']:,.0f}/s", args)
    report = {"environment": environment(), "backend": backend.describe(),
              "group": args.group, "registrations": args.registrations,
              "duration": args.duration, "rows": rows,
              "at": datetime.now(UTC).isoformat()}
    emit(args, report, print_tables)


if __name__ == "__main__":
    main()
