"""The event log's Parquet export, measured against the floor of reading the store.

For each backend (SQLite, PostgreSQL) and store size (100k and 1M events by default:
bench/rebuild.py's synthetic season, its `make_stores`), in child processes:

- (a) the floor: `select_notifications` pages of 1,000 and `mapper.to_domain_event` each;
- (b) `ledger export events --format parquet` into an empty folder (`Ledger.export_events`,
  what the command runs): rows/s, its ratio to (a), its peak RSS (the aim: flat from
  100k to 1M, since it reads in pages and writes row groups), the files and bytes written;
- (c) the same export again: nothing new (the incremental run's fixed cost);
- (d) DuckDB over the export: the GMV per campaign (`ledger sql`'s views), its seconds,
  and a check that the sum equals the sum of the store's reports (exact decimals).

    python bench/export.py                     # 100k and 1M, both backends
    python bench/export.py --quick             # 100k only
    python bench/export.py --backends sqlite --events 300000 --json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import (
    Progress,
    add_store_options,
    emit,
    environment,
    in_child,
    log,
    peak_rss_mb,
    rss_mb,
    store_plan,
)
from season import make_stores, measure_floor  # the synthetic store generator

from ledger import Ledger


def measure_export(url: str, folder: str) -> dict[str, Any]:
    """(b) or (c): export the events after the folder's state, timed, RSS sampled."""
    load = os.getloadavg()[0]
    progress = Progress()
    with Ledger.open(url) as ledger:
        rss_start = rss_mb()
        started = time.perf_counter()
        summary = ledger.export_events(Path(folder), progress=progress)
        seconds = time.perf_counter() - started
    files = list(Path(folder).rglob("*.parquet"))
    return {"rows": summary.rows, "position": summary.position, "seconds": seconds,
            "files": len(files), "bytes": sum(f.stat().st_size for f in files),
            "peak_rss_mb": peak_rss_mb(), "rss_mb_start": rss_start,
            "rss_mb_by_position": progress.samples, "load": load}


def measure_sql(url: str, folder: str) -> dict[str, Any]:
    """(d): GMV per campaign over the export, and the store's own sum to compare."""
    from ledger.exports.sql import connect, run

    started = time.perf_counter()
    con, _views = connect(Path(folder).parent)
    _columns, rows = run(con, "SELECT campaign, sum(gmv) AS gmv FROM events "
                              "WHERE event_type = 'PerformanceRecorded' GROUP BY 1")
    per_campaign = {r["campaign"]: r["gmv"] for r in rows}
    seconds = time.perf_counter() - started
    total = Decimal(0)
    with Ledger.open(url) as ledger:
        app, start = ledger.app, 0
        topic = "ledger.aggregates.registration_events:PerformanceRecorded"
        while page := app.recorder.select_notifications(start, 5_000, topics=[topic],
                                                        inclusive_of_start=False):
            total += sum((app.mapper.to_domain_event(n).gmv for n in page), Decimal(0))
            start = page[-1].id
    return {"seconds": seconds, "campaigns": len(per_campaign),
            "gmv_export": str(sum(per_campaign.values(), Decimal(0))), "gmv_store": str(total),
            "equal": sum(per_campaign.values(), Decimal(0)) == total}


def print_report(report: dict[str, Any]) -> None:
    print()
    print("events -> Parquet vs floor (events/s; peak RSS of each child process; 1-minute "
          f"load when (a) / (b) started, on {report['environment']['cpus']} CPUs)")
    print()
    print(f"{'backend':<9} {'store':>5} {'events':>10} {'floor ev/s':>11} {'export ev/s':>12} "
          f"{'(b)/(a)':>8} {'files':>6} {'MB':>7} {'again s':>8} {'sql s':>6} "
          f"{'sums equal':>10} {'peak RSS a/b MB':>15} {'load':>9}")
    for row in report["rows"]:
        print(f"{row['backend']:<9} {row['store']:>5} {row['events']:>10,} "
              f"{row['floor_eps']:>11,.0f} {row['export_eps']:>12,.0f} "
              f"{row['ratio']:>7.2f}x {row['files']:>6,} {row['mb']:>7.1f} "
              f"{row['again_s']:>8.2f} {row['sql_s']:>6.2f} {row['sums_equal']!s:>10} "
              f"{row['rss_mb'][0]:>7.0f}/{row['rss_mb'][1]:<7.0f} "
              + "/".join(f"{x:.1f}" for x in row["load_1min"]))
    print("\n(a) floor: read and decode every event; (b) export every event to Parquet; "
          "again: the incremental run with nothing new;\nsql: DuckDB's GMV per campaign over "
          "the files; sums equal: that sum is the store's own, exactly.")
    for backend in sorted({r["backend"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["backend"] == backend]
        print(f"peak RSS of the export, {backend}: " + " -> ".join(
            f"{r['rss_mb'][1]:.0f} MB at {r['store']}" for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_store_options(parser, "ledger_export_bench", "the small store's events")
    args = parser.parse_args(argv)
    backends, sizes, tmp = store_plan(args, "export-")
    out = Path(tempfile.mkdtemp(prefix="export-out-"))
    report: dict[str, Any] = {
        "environment": environment(),
        "command": " ".join(["python", "bench/export.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "rows": [], "stores": []}
    try:
        stores = make_stores(args, backends, sizes, tmp)
        report["stores"] = [asdict(s) for of_size in stores for s in of_size]
        for backend in backends:
            for of_size in stores:
                store = next(s for s in of_size if s.backend == backend)
                folder = out / f"{backend}-{store.label}" / "events"
                floor = in_child(measure_floor, store.url)
                exported = in_child(measure_export, store.url, str(folder))
                again = in_child(measure_export, store.url, str(folder))
                sql = in_child(measure_sql, store.url, str(folder))
                if exported["rows"] != store.events or again["rows"] != 0:
                    raise RuntimeError(f"{backend} {store.label}: exported "
                                       f"{exported['rows']} then {again['rows']} of "
                                       f"{store.events} events")
                row = {
                    "backend": backend, "store": store.label, "events": store.events,
                    "floor_s": floor["seconds"], "export_s": exported["seconds"],
                    "floor_eps": store.events / floor["seconds"],
                    "export_eps": store.events / exported["seconds"],
                    "ratio": floor["seconds"] / exported["seconds"],
                    "files": exported["files"], "mb": exported["bytes"] / 2**20,
                    "again_s": again["seconds"], "sql_s": sql["seconds"],
                    "sums_equal": sql["equal"], "gmv": sql["gmv_store"],
                    "rss_mb": [floor["peak_rss_mb"], exported["peak_rss_mb"]],
                    "export_rss_mb_by_position": exported["rss_mb_by_position"],
                    "load_1min": [floor["load"], exported["load"]],
                }
                report["rows"].append(row)
                log(f"{backend} {store.label}: floor {row['floor_eps']:,.0f} ev/s, export "
                    f"{row['export_eps']:,.0f} ev/s ({row['ratio']:.2f}x), peak RSS "
                    f"{row['rss_mb'][1]:.0f} MB, sums equal {row['sums_equal']}", args)
                shutil.rmtree(folder.parent, ignore_errors=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not args.sqlite_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    emit(args, report, print_report)
    return 0 if all(r["sums_equal"] for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
