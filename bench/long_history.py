"""One registration with a long history of reports: what its snapshots weigh and what a
command on it costs, as the history grows (docs/design.md, "Reports seen").

For each `--reports` count, a fresh SQLite store gets a campaign, one approved
registration and that many reports (`Ledger.send_many`, untimed); then it prints the
stored bytes of the registration's snapshots and events, the file's size, and the CPU
per command of `--probe` more reports sent one at a time (`Ledger.send`, each a load of
the registration, a decision and a commit). Before `ledger_reports`, a registration kept
every report_id in its state, so each snapshot (one per 50 events, all kept) grew with
the history. Run it in another checkout (`PYTHONPATH=/tmp/base python
bench/long_history.py`) for the figures of another version, in the same session.

    python bench/long_history.py                          # 1,000 and 4,000 reports
    python bench/long_history.py --reports 1000,4000,10000 --json
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from common import AFTER_CAMPAIGN, IN_WINDOW, emit, environment, log
from workload import feed, feed_setup, set_up

from ledger import FixedClock, Ledger


def measure(folder: Path, reports: int, probe: int) -> dict[str, Any]:
    path = folder / f"long-{reports}.db"
    url = f"sqlite:///{path}"
    set_up(url, IN_WINDOW, feed_setup(1))
    commands = list(feed(1, reports + probe))
    with Ledger.open(url, clock=FixedClock(AFTER_CAMPAIGN), pool_size=1) as ledger:
        for result in ledger.send_many(commands[:reports]):
            if not result["ok"]:
                raise RuntimeError(f"refused: {result}")
        started = time.process_time()
        for command in commands[reports:]:
            if not ledger.send(command)["ok"]:
                raise RuntimeError(f"refused: {command}")
        per_command = (time.process_time() - started) / probe
    with closing(sqlite3.connect(path)) as db:
        snapshots, snapshot_bytes, largest = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(state)), 0), COALESCE(MAX(LENGTH(state)), 0) "
            "FROM stored_snapshots").fetchone()
        event_bytes = db.execute("SELECT SUM(LENGTH(state)) FROM stored_events").fetchone()[0]
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"reports": reports, "snapshots": snapshots, "snapshot_mb": snapshot_bytes / 1e6,
            "largest_snapshot_kb": largest / 1e3, "event_mb": event_bytes / 1e6,
            "file_mb": os.path.getsize(path) / 1e6, "ms_per_command": per_command * 1e3}


def print_tables(report: dict[str, Any]) -> None:
    print(f"{'reports':>8}  {'snapshots':>9}  {'snapshot MB':>11}  {'largest KB':>10}  "
          f"{'events MB':>9}  {'file MB':>7}  {'CPU ms/command':>14}")
    for row in report["rows"]:
        print(f"{row['reports']:>8,}  {row['snapshots']:>9}  {row['snapshot_mb']:>11.2f}  "
              f"{row['largest_snapshot_kb']:>10.1f}  {row['event_mb']:>9.2f}  "
              f"{row['file_mb']:>7.2f}  {row['ms_per_command']:>14.2f}")
    print(f"(one registration; CPU per command of {report['probe']} more reports sent one at "
          f"a time; {report['environment']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default="1000,4000",
                        help="history lengths to measure, comma-separated")
    parser.add_argument("--probe", type=int, default=200,
                        help="reports sent one at a time after the history, timed")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", help="also write the JSON figures to this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-long-") as folder:
        for count in (int(n) for n in args.reports.split(",")):
            log(f"{count:,} reports on one registration", args)
            rows.append(measure(Path(folder), count, args.probe))
    emit(args, {"rows": rows, "probe": args.probe, "environment": environment()},
         print_tables)


if __name__ == "__main__":
    main()
