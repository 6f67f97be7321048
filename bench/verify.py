"""`ledger audit verify` and `ledger audit seal`, measured against the floor of reading the store.

For each backend (SQLite, PostgreSQL) the script builds a 100k-event and a 1M-event store
with bench/season.py's synthetic season (its `make_stores`: the same generator, the same
sinks, which also write every event's hash row, chained as a save chains them). Then, in
fresh child processes (so that generation does not pollute peak RSS), it times:

- (a) the floor: every stored event read a page at a time and decoded, nothing else
  (bench/season.py's `measure_floor`, as bench/rebuild.py's);
- (b) `verify`: `ledger.audit.chain.verify(store, progress=...)`, the function
  `ledger audit verify` calls, with a progress callback that samples RSS;
- (c) `seal`: `ledger.audit.chain.seal` (a verify pass that also collects every
  aggregate's head, then writes the seal and its heads);
- (d) `verify` again, now that the store holds a seal (it also checks the seal's root and
  every sealed head).

It prints events/s, the ratios (b)/(a) and (c)/(a), and the peak RSS of each child at
100k and at 1M (the aim: flat memory as the store grows). Every verify must be clean (0
findings), or the script fails. Last, on each 100k store, it alters one byte of one
stored event (a `PerformanceRecorded` payload, in the middle of the store), shows that
verify reports exactly that event (aggregate, version, kind), and puts the byte back.

    python bench/verify.py                       # 100k and 1M, both backends (6-9 min)
    python bench/verify.py --quick               # 100k only, both backends (1-2 min)
    python bench/verify.py --backends sqlite --events 300000 --json

`--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_verify_bench): this
database is DROPPED and created again on every run (one schema per store size).
`--sqlite-dir` (default: a temporary folder, removed afterwards) keeps the SQLite files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

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
from ledger.audit import chain


def measured(url: str, run: Callable[[Ledger, Progress], Any]) -> tuple[Any, dict[str, Any]]:
    """`run` on a Ledger at `url`, timed, with its progress sampled; (its result, figures)."""
    load = os.getloadavg()[0]
    progress = Progress()
    with Ledger.open(url) as ledger:
        rss_start = rss_mb()
        started = time.perf_counter()
        result = run(ledger, progress)
        seconds = time.perf_counter() - started
    return result, {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "load": load,
                    "rss_mb_start": rss_start, "rss_mb_end": rss_mb(),
                    "rss_mb_by_position": progress.samples, "progress_calls": progress.calls,
                    "progress_last": progress.last}


def measure_verify(url: str) -> dict[str, Any]:
    """(b) and (d): `chain.verify`, as `ledger audit verify` runs it."""
    report, figures = measured(url, lambda ledger, progress: chain.verify(
        ledger.app.store, progress=progress))
    return {"events": report.events, "aggregates": report.aggregates, "seals": report.seals,
            "position": report.position, "findings": [f.as_dict() for f in report.findings],
            **figures}


def measure_seal(url: str) -> dict[str, Any]:
    """(c): `chain.seal`, as `ledger audit seal` runs it."""
    (report, sealed), figures = measured(url, lambda ledger, progress: chain.seal(
        ledger.app.store, datetime.now(UTC), progress=progress))
    return {"events": report.events, "aggregates": report.aggregates,
            "findings": [f.as_dict() for f in report.findings],
            "seal": asdict(sealed) if sealed else None, **figures}


# Tampering ----------------------------------------------------------------------------------

def as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _digit_after(state: bytes, start: int) -> int:
    """The offset of the first digit at or after `start` in a stored state."""
    return next(i for i in range(start, len(state)) if 48 <= state[i] <= 57)


def tamper(url: str) -> dict[str, Any]:
    """Change one digit of the `gmv` of the PerformanceRecorded event in the middle of the
    store, through the store's own tables (as someone with database access could)."""
    with Ledger.open(url) as ledger:
        store = ledger.app.store
        p = store.p
        with store.snapshot() as curs:
            curs.execute(f"SELECT COUNT(*) AS n FROM {store.events_table}")
            middle = int(curs.fetchone()["n"]) // 2
            curs.execute(
                f"SELECT originator_id, originator_version, topic, state, "
                f"{store.position_column} AS position FROM {store.events_table} "
                f"WHERE {store.position_column} >= {p} AND topic LIKE {p} "
                f"ORDER BY {store.position_column} LIMIT 1",
                (middle, "%PerformanceRecorded%"))
            row = curs.fetchone()
        state = bytes(row["state"])
        key = state.index(b'"gmv"')
        at = _digit_after(state, key)
        changed = state[:at] + bytes([48 + (state[at] - 48 + 1) % 10]) + state[at + 1:]
        _set_state(store, row["originator_id"], row["originator_version"], changed)
    return {"aggregate_id": str(as_uuid(row["originator_id"])),
            "version": row["originator_version"], "position": row["position"],
            "topic": row["topic"], "state": state.hex(),
            "before": state[key:at + 8].decode(errors="replace"),
            "after": changed[key:at + 8].decode(errors="replace")}


def untamper(url: str, tampered: dict[str, Any]) -> None:
    with Ledger.open(url) as ledger:
        store = ledger.app.store
        oid = store.db_id(UUID(tampered["aggregate_id"]))
        _set_state(store, oid, tampered["version"], bytes.fromhex(tampered["state"]))


def _set_state(store: Any, originator_id: Any, version: int, state: bytes) -> None:
    p = store.p
    with store.writing() as curs:
        curs.execute(f"UPDATE {store.events_table} SET state = {p} "
                     f"WHERE originator_id = {p} AND originator_version = {p}",
                     (state, originator_id, version))


# Report -------------------------------------------------------------------------------------

def print_report(report: dict[str, Any]) -> None:
    print()
    print("verify and seal vs floor (events/s; peak RSS of each child process; 1-minute load "
          f"average when (a) / (b) / (c) / (d) started, on {report['environment']['cpus']} "
          "CPUs)")
    print()
    print(f"{'backend':<9} {'store':>5} {'events':>10} {'aggs':>7} {'floor ev/s':>11} "
          f"{'verify ev/s':>12} {'(b)/(a)':>8} {'seal ev/s':>10} {'(c)/(a)':>8} "
          f"{'sealed v ev/s':>14} {'peak RSS a/b/c/d MB':>19} {'RSS in (b) MB':>13} "
          f"{'findings':>8} {'load':>19}")
    for row in report["rows"]:
        load = "/".join(f"{x:.1f}" for x in row["load_1min"])
        rss = "/".join(f"{x:.0f}" for x in row["rss_mb"])
        inside = f"{row['verify_rss_mb_start']:.0f} -> {row['verify_rss_mb_max']:.0f}"
        print(f"{row['backend']:<9} {row['store']:>5} {row['events']:>10,} "
              f"{row['aggregates']:>7,} {row['floor_eps']:>11,.0f} {row['verify_eps']:>12,.0f} "
              f"{row['verify_ratio']:>7.2f}x {row['seal_eps']:>10,.0f} "
              f"{row['seal_ratio']:>7.2f}x {row['sealed_verify_eps']:>14,.0f} {rss:>19} "
              f"{inside:>13} {row['findings']:>8} {load:>19}")
    print("\n(a) floor: read and decode every event; (b) verify; (c) seal (a verify pass, then "
          "the seal's rows);\n(d) verify of the sealed store (also checks the seal). "
          "Ratios > 1x: faster than the floor.\nPeak RSS: VmHWM of each child process; "
          "RSS in (b): the verify child's RSS once the store is open -> the most it reached "
          "during verify (sampled at every tenth).")
    for backend in sorted({r["backend"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["backend"] == backend]
        for i, name in ((1, "verify"), (2, "seal")):
            print(f"peak RSS of {name}, {backend}: " + " -> ".join(
                f"{r['rss_mb'][i]:.0f} MB at {r['store']}" for r in rows))
        big = rows[-1]
        print(f"RSS through the {big['store']} verify ({backend}), MB at each tenth: "
              + " ".join(f"{mb:.0f}" for _pos, mb in big["verify_rss_mb_by_position"]))
    for t in report["tamper"]:
        found = "; ".join(f"{f['kind']} {f['aggregate_id']} v{f['version']}"
                          for f in t["findings"])
        print(f"\ntampered {t['backend']} {t['store']}: aggregate {t['aggregate_id']} "
              f"version {t['version']} (position {t['position']:,}, "
              f"{t['topic'].rsplit(':', 1)[-1]}): '{t['before']}' -> '{t['after']}'")
        print(f"  verify found {len(t['findings'])}: {found} "
              f"({'exactly it' if t['exact'] else 'NOT exactly it'}); byte restored, verify "
              f"clean again: {t['clean_after']}")
        for f in t["findings"]:
            print(f"  aggregate {f['aggregate_id']} version {f['version']}: {f['kind']}: "
                  f"{f['detail']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_store_options(parser, "ledger_verify_bench",
                      "the small store's events, for RSS vs size and tampering")
    parser.add_argument("--no-tamper", action="store_true", help="skip the tamper check")
    args = parser.parse_args(argv)

    backends, sizes, tmp = store_plan(args, "verify-")
    report: dict[str, Any] = {
        "environment": environment(),
        "command": " ".join(["python", "bench/verify.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "rows": [], "tamper": [], "stores": []}
    try:
        stores = make_stores(args, backends, sizes, tmp)
        report["stores"] = [asdict(s) for of_size in stores for s in of_size]
        for backend in backends:
            for of_size in stores:
                store = next(s for s in of_size if s.backend == backend)
                floor = in_child(measure_floor, store.url)
                verified = in_child(measure_verify, store.url)
                sealed = in_child(measure_seal, store.url)
                again = in_child(measure_verify, store.url)
                for name, run in (("floor", floor), ("verify", verified), ("seal", sealed),
                                  ("sealed verify", again)):
                    if run["events"] != store.events:
                        raise RuntimeError(f"{backend} {store.label} {name}: read "
                                           f"{run['events']} of {store.events} events")
                for name, run in (("verify", verified), ("seal", sealed),
                                  ("sealed verify", again)):
                    if run["findings"]:
                        raise RuntimeError(f"{backend} {store.label} {name} is not clean: "
                                           f"{run['findings'][:5]}")
                if again["seals"] != 1 or sealed["seal"] is None:
                    raise RuntimeError(f"{backend} {store.label}: the seal was not recorded")
                row = {
                    "backend": backend, "store": store.label, "events": store.events,
                    "aggregates": verified["aggregates"], "store_mb": store.bytes / 2**20,
                    "generate_s": store.generate_seconds,
                    "floor_s": floor["seconds"], "verify_s": verified["seconds"],
                    "seal_s": sealed["seconds"], "sealed_verify_s": again["seconds"],
                    "floor_eps": store.events / floor["seconds"],
                    "verify_eps": store.events / verified["seconds"],
                    "seal_eps": store.events / sealed["seconds"],
                    "sealed_verify_eps": store.events / again["seconds"],
                    "verify_ratio": floor["seconds"] / verified["seconds"],
                    "seal_ratio": floor["seconds"] / sealed["seconds"],
                    "rss_mb": [floor["peak_rss_mb"], verified["peak_rss_mb"],
                               sealed["peak_rss_mb"], again["peak_rss_mb"]],
                    "verify_rss_mb_start": verified["rss_mb_start"],
                    "verify_rss_mb_max": max(mb for _pos, mb in
                                             [(0, verified["rss_mb_end"]),
                                              *verified["rss_mb_by_position"]]),
                    "verify_rss_mb_by_position": verified["rss_mb_by_position"],
                    "seal_rss_mb_by_position": sealed["rss_mb_by_position"],
                    "progress_calls": verified["progress_calls"],
                    "progress_last": verified["progress_last"],
                    "findings": len(verified["findings"]) + len(again["findings"]),
                    "seal": sealed["seal"],
                    "load_1min": [floor["load"], verified["load"], sealed["load"],
                                  again["load"]],
                }
                report["rows"].append(row)
                log(f"{backend} {store.label}: floor {row['floor_eps']:,.0f} ev/s, verify "
                    f"{row['verify_eps']:,.0f} ev/s ({row['verify_ratio']:.2f}x), seal "
                    f"{row['seal_eps']:,.0f} ev/s, RSS "
                    + "/".join(f"{x:.0f}" for x in row["rss_mb"]) + " MB", args)
                if not args.no_tamper and store.label == stores[0][0].label:
                    report["tamper"].append(check_tamper(store.url, backend, store.label))
    finally:
        if not args.sqlite_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    emit(args, report, print_report)
    exact = all(t["exact"] and t["clean_after"] for t in report["tamper"])
    return 0 if exact else 1


def check_tamper(url: str, backend: str, label: str) -> dict[str, Any]:
    """Alter one event, verify (in a child), restore it, verify again."""
    tampered = tamper(url)
    try:
        found = in_child(measure_verify, url)
    finally:
        untamper(url, tampered)
    after = in_child(measure_verify, url)
    findings = found["findings"]
    exact = (len(findings) == 1 and findings[0]["aggregate_id"] == tampered["aggregate_id"]
             and findings[0]["version"] == tampered["version"]
             and findings[0]["kind"] == "altered")
    return {"backend": backend, "store": label, **{k: v for k, v in tampered.items()
                                                   if k != "state"},
            "findings": findings, "exact": exact, "clean_after": not after["findings"],
            "verify_s": found["seconds"]}


if __name__ == "__main__":
    sys.exit(main())
