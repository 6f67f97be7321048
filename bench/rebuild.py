"""Read-model rebuild and catch-up, measured against the floor of reading the store.

For each backend (SQLite, PostgreSQL) the script builds bench/season.py's synthetic season
(~90% `PerformanceRecorded`, every other kind of event around it) at 100k and at 1M events.
Then, in child processes (so that generation does not pollute peak RSS), it times:

- (a) the floor: the library's `select_notifications` in pages of 1,000 and
  `mapper.to_domain_event` of each event, nothing else, one process;
- (b) `projector(app).rebuild()` of every read model in the registry, whatever it holds at
  run time (exactly what `ledger projections rebuild` runs, with its default `--jobs`);
- (b1) the same in one process,

and prints events/s, the ratio (b)/(a) for each store and backend (the aim: at least 1.5),
the CPU seconds each used (its own and its helpers': on a busy machine the wall-clock
figures swing, `--repeat N` keeps the best of N runs of each, taken in turn), and the peak
RSS of each child (the aim: flat as the store grows).

Last, on the big store, the catch-up lag: writer processes send `record_performance`
commands through `Ledger.send` at `--rate` commands/s (default 500) for `--duration`
seconds while another process runs `Projector.run`; it prints the rate reached, the
position lag (head minus projected position, sampled every 50 ms) and the time lag (from a
command's commit to the moment its position is projected): p50 / p99 / max.

    python bench/rebuild.py                      # 100k and 1M, both backends (~15 min)
    python bench/rebuild.py --quick --no-lag     # 100k only, both backends (~3 min)
    python bench/rebuild.py --backends sqlite --events 300000 --json
    python bench/rebuild.py --generate-only --quick --small 3000 --sqlite-dir /tmp/s
                                                 # a small store of each backend, kept;
                                                 # `ledger audit verify` passes on each
    python bench/rebuild.py --generate-only --sqlite-dir /tmp/s --pg-url URL
    python bench/rebuild.py --existing --no-lag --sqlite-dir /tmp/s --pg-url URL
                                                 # generate once, measure again and again
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from common import (
    FEED,
    Progress,
    add_store_options,
    cpu_seconds,
    emit,
    environment,
    in_child,
    iso,
    log,
    peak_rss_mb,
    store_plan,
)
from season import RegScript, Season, Store, head_of, make_stores, measure_floor

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.projections.registry import READ_MODELS, default_jobs, projector

SIZES_MB = 1024.0  # ru_maxrss is in KiB on Linux


def measure_rebuild(url: str, jobs: int) -> dict[str, Any]:
    """(b): rebuild every read model of the registry, as `ledger projections rebuild
    --jobs JOBS` does (its default: `default_jobs()`)."""
    progress = Progress()
    load = os.getloadavg()[0]
    with Ledger.open(url) as ledger:
        started, cpu = time.perf_counter(), cpu_seconds()
        p = projector(ledger.app, jobs=jobs)
        count = p.rebuild(progress=progress)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        status = p.status()
    # Helpers are this process's children: the peak of any one process counts.
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / SIZES_MB
    return {"events": count, "seconds": seconds, "cpu_seconds": cpu,
            "peak_rss_mb": max(peak_rss_mb(), helpers),
            "rss_mb_by_position": progress.samples, "read_models": list(READ_MODELS), "jobs": jobs,
            "lag_after": {s["name"]: s["lag"] for s in status}, "load": load}


def measure_in_turn(url: str, jobs: int, repeat: int
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The floor, a one-process rebuild and a `jobs` rebuild, each in a fresh child, taken
    in turn `repeat` times; the fastest run of each (the machine is shared: the slower
    runs are the ones other work got in the way of)."""
    runs: list[list[dict[str, Any]]] = [[], [], []]
    for _ in range(repeat):
        runs[0].append(in_child(measure_floor, url))
        runs[1].append(in_child(measure_rebuild, url, 1))
        if jobs > 1:
            runs[2].append(in_child(measure_rebuild, url, jobs))
    def fastest(of: list[dict[str, Any]]) -> dict[str, Any]:
        return min(of, key=lambda run: run["seconds"])

    return fastest(runs[0]), fastest(runs[1]), fastest(runs[2] or runs[1])


# Catch-up lag -----------------------------------------------------------------------------------

def projector_loop(url: str, stop: Any, ready: Any, interval: float) -> dict[str, Any]:
    """`Projector.run`, recording when each projected position was reached."""
    with Ledger.open(url) as ledger:
        p = projector(ledger.app)
        p.catch_up()
        names = [m.name for m in p.models]

        def projected() -> int:
            return min(p.view.position(name) for name in names)

        marks: list[tuple[float, int]] = [(time.time(), projected())]
        ready.set()
        p.run(interval=interval, should_stop=stop.is_set,
              on_advance=lambda _position: marks.append((time.time(), projected())))
    return {"marks": marks, "peak_rss_mb": peak_rss_mb()}


def writer_loop(url: str, at: datetime, targets: list[tuple[str, str | None, str, int]],
                rate: float, t0: float, duration: float, tag: str) -> dict[str, Any]:
    """Send record_performance commands at `rate`/s from wall time `t0` for `duration` s.
    Open loop: the k-th command is due at t0 + k/rate; a late writer sends at once, and
    stops at t0 + duration whatever it sent."""
    commits: list[tuple[float, int]] = []
    refused: Counter[str] = Counter()
    with Ledger.open(url, clock=FixedClock(at)) as ledger:
        k = 0
        while True:
            due = t0 + k / rate
            if due >= t0 + duration or time.time() >= t0 + duration:
                break
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            reg_id, session_id, starts, number = targets[k % len(targets)]
            period_start = datetime.fromisoformat(starts)
            report_id = f"{tag}-{k}"
            result = ledger.send({
                "command": "record_performance", "command_id": report_id, "actor": FEED,
                "payload": {"registration_id": reg_id, "report_id": report_id,
                            "session_id": session_id, "period_start": iso(period_start),
                            "period_end": iso(period_start + timedelta(hours=1)),
                            "currency": "USD", "gmv": f"{100 + number % 900}.25",
                            "orders": 3, "items_sold": 4, "buyers": 3, "views": 500,
                            "refunds": "0.00"}})
            if result["ok"]:
                commits.append((time.time(), int(result["position"])))
            else:
                refused[result["error"]["code"]] += 1
            k += 1
    return {"commits": commits, "refused": dict(refused)}


def lag_targets(season: Season, writers: int) -> tuple[datetime, list[list[tuple[str, str | None,
                                                                                str, int]]]]:
    """Approved registrations of the last campaign (not expired), dealt to the writers."""
    plan = season.campaigns[-1]
    rows = [(str(registration_uuid(plan.campaign_id, RegScript(plan, i).account_id)),
             "s1" if plan.manual else None,
             (plan.starts + timedelta(hours=i % 46)).isoformat(), i)
            for i in range(plan.registrations) if RegScript(plan, i).reports]
    return plan.ends + timedelta(days=30), [rows[w::writers] for w in range(writers)]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_lag(store: Store, season: Season, rate: float, duration: float, writers: int,
                interval: float) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    manager = spawn.Manager()
    stop, ready = manager.Event(), manager.Event()
    at, targets = lag_targets(season, writers)
    with ProcessPoolExecutor(writers + 1, mp_context=spawn) as pool:
        projecting = pool.submit(projector_loop, store.url, stop, ready, interval)
        if not ready.wait(600):
            raise RuntimeError("the projector did not start")
        head_before = head_of(store.url)
        t0 = time.time() + 3.0  # the writers open their stores first
        tag = f"lag-{store.backend}-{int(t0)}"
        jobs = [pool.submit(writer_loop, store.url, at, targets[w], rate / writers, t0,
                            duration, f"{tag}-w{w}") for w in range(writers)]
        results = [job.result() for job in jobs]
        writers_done = time.time()
        commits = sorted(c for r in results for c in r["commits"])
        final = max((pos for _t, pos in commits), default=head_before)
        # Let the projector reach the last position, then stop it.
        with Ledger.open(store.url) as ledger:
            watcher = projector(ledger.app)
            deadline = writers_done + 120
            while time.time() < deadline:
                if all(s["position"] >= final for s in watcher.status()):
                    break
                time.sleep(0.05)
        stop.set()
        proj = projecting.result()
    manager.shutdown()
    marks: list[tuple[float, int]] = proj["marks"]

    def projected_at(t: float) -> int:
        best = marks[0][1]
        for when, pos in marks:
            if when > t:
                break
            best = pos
        return best

    # Time lag: from a command's commit to the first mark at or past its position.
    time_lags: list[float] = []
    j = 0
    by_position = sorted(commits, key=lambda c: c[1])
    for t_commit, pos in by_position:
        while j < len(marks) and marks[j][1] < pos:
            j += 1
        if j < len(marks):
            time_lags.append(max(0.0, marks[j][0] - t_commit))
    # Position lag: head (the last commit so far) minus the projected position, every 50 ms.
    position_lags: list[float] = []
    t_end = max((t for t, _ in commits), default=t0)
    t, k, head = t0, 0, head_before
    while t <= t_end:
        while k < len(commits) and commits[k][0] <= t:
            head = max(head, commits[k][1])
            k += 1
        position_lags.append(max(0, head - projected_at(t)))
        t += 0.05
    sent = len(commits)
    span = duration
    drained = next((when for when, pos in marks if pos >= final), float("nan")) - writers_done
    return {
        "backend": store.backend, "store": store.label, "writers": writers,
        "target_rate": rate, "duration_s": duration, "commands": sent,
        "refused": {k: v for r in results for k, v in r["refused"].items()},
        "rate_reached": sent / span if span > 0 else 0.0,
        "position_lag": {"p50": percentile(position_lags, 0.5),
                         "p99": percentile(position_lags, 0.99),
                         "max": max(position_lags, default=0)},
        "time_lag_s": {"p50": percentile(time_lags, 0.5), "p99": percentile(time_lags, 0.99),
                       "max": max(time_lags, default=float("nan"))},
        "catch_ups": len(marks) - 1, "drain_after_writers_s": drained,
        "projector_peak_rss_mb": proj["peak_rss_mb"], "poll_interval_s": interval,
    }


# Report -----------------------------------------------------------------------------------------

def print_report(report: dict[str, Any]) -> None:
    print()
    print(f"Read models in the registry: {', '.join(report['read_models'])}")
    print()
    print("Rebuild vs floor (events/s; peak RSS of each child process; 1-minute load average "
          "when the floor / rebuild started, on this machine's "
          f"{report['environment']['cpus']} CPUs)")
    print()
    head = (f"{'backend':<9} {'store':>5} {'events':>10} {'floor ev/s':>11} "
            f"{'rebuild ev/s':>13} {'(b)/(a)':>8} {'jobs':>4} {'1 process ev/s':>15} "
            f"{'(b1)/(a)':>9} {'RSS floor':>10} {'RSS rebuild':>12} {'RSS 1 proc':>11} "
            f"{'load':>14} {'CPU s (a)/(b1)/(b)':>19}")
    print(head)
    for row in report["rebuild"]:
        load = "/".join(f"{x:.1f}" for x in row["load_1min"])
        cpu = "/".join(f"{x:.1f}" for x in row["cpu_s"])
        print(f"{row['backend']:<9} {row['store']:>5} {row['events']:>10,} "
              f"{row['floor_eps']:>11,.0f} {row['rebuild_eps']:>13,.0f} "
              f"{row['ratio']:>7.2f}x {row['jobs']:>4} {row['rebuild_1_eps']:>15,.0f} "
              f"{row['ratio_1']:>8.2f}x {row['floor_rss_mb']:>8.0f}MB "
              f"{row['rebuild_rss_mb']:>10.0f}MB {row['rebuild_1_rss_mb']:>9.0f}MB {load:>14} "
              f"{cpu:>19}")
    print("\n(b): `ledger projections rebuild` (its default --jobs); (b1): the same in one "
          "process. RSS: the peak of any one process. CPU: of the process and its helpers "
          "(not the database server's).")
    aim = report["aim_ratio"]
    verdicts = [f"{r['backend']} {r['store']} {r['ratio']:.2f} "
                f"({'ok' if r['ratio'] >= aim else 'short'})" for r in report["rebuild"]]
    print(f"\n(b)/(a), aim >= {aim}: " + "; ".join(verdicts))
    for backend in sorted({r["backend"] for r in report["rebuild"]}):
        rows = [r for r in report["rebuild"] if r["backend"] == backend]
        if len(rows) > 1:
            print(f"peak RSS of the rebuild, {backend}: "
                  + " -> ".join(f"{r['rebuild_rss_mb']:.0f} MB at {r['store']}" for r in rows))
    if report["lag"]:
        print()
        print("Catch-up lag while writers send record_performance through Ledger.send "
              "(Projector.run in another process)")
        print()
        print(f"{'backend':<9} {'store':>5} {'writers':>7} {'target/s':>8} {'reached/s':>9} "
              f"{'cmds':>6} {'pos lag p50/p99/max':>20} {'time lag s p50/p99/max':>23} "
              f"{'drain s':>7}")
        for lag in report["lag"]:
            pl, tl = lag["position_lag"], lag["time_lag_s"]
            print(f"{lag['backend']:<9} {lag['store']:>5} {lag['writers']:>7} "
                  f"{lag['target_rate']:>8.0f} {lag['rate_reached']:>9.0f} {lag['commands']:>6} "
                  f"{pl['p50']:>6.0f}/{pl['p99']:>5.0f}/{pl['max']:>6.0f} "
                  f"{tl['p50']:>7.2f}/{tl['p99']:>6.2f}/{tl['max']:>6.2f} "
                  f"{lag['drain_after_writers_s']:>7.2f}")
            if lag["refused"]:
                print(f"  refused: {lag['refused']}")
        print("\ntime lag aim < 1 s: " + "; ".join(
            f"{lag['backend']} p99 {lag['time_lag_s']['p99']:.2f} s "
            f"({'ok' if lag['time_lag_s']['p99'] < 1 else 'over'})" for lag in report["lag"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_store_options(parser, "ledger_rebuild_bench",
                      "the small store's events, for RSS vs size (0: skip)")
    parser.add_argument("--rate", type=float, default=500.0, help="writer commands/s")
    parser.add_argument("--duration", type=float, default=20.0, help="writer seconds")
    parser.add_argument("--writers", default="sqlite=2,postgres=3",
                        help="writer processes per backend")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="Projector.run poll interval when idle (its default 0.2)")
    parser.add_argument("--no-lag", action="store_true", help="skip the catch-up lag run")
    parser.add_argument("--aim", type=float, default=1.5,
                        help="the ratio (b)/(a) aimed at (default 1.5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of (a), (b1) and (b) on each store, taken in turn; the "
                             "fastest of each is reported (default 1)")
    parser.add_argument("--existing", action="store_true",
                        help="measure the stores an earlier --generate-only run left (same "
                             "--sqlite-dir, --pg-url and sizes) instead of generating them")
    parser.add_argument("--generate-only", action="store_true",
                        help="make the stores, print their URLs, keep them, measure nothing "
                             "(e.g. --generate-only --quick --small 3000 --sqlite-dir DIR)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="processes for (b), as `ledger projections rebuild --jobs` "
                             f"(default here: {default_jobs()}); (b1) always uses one")
    args = parser.parse_args(argv)

    backends, sizes, tmp = store_plan(args, "rebuild-")
    writers = {k: int(v) for k, v in (item.split("=") for item in args.writers.split(","))}
    report: dict[str, Any] = {"environment": environment(), "aim_ratio": args.aim,
                              "command": " ".join(["python", "bench/rebuild.py",
                                                   *(argv if argv is not None else sys.argv[1:])]),
                              "rebuild": [], "lag": [], "read_models": [], "stores": []}
    try:
        stores = make_stores(args, backends, sizes, tmp)
        for stores_of_size in stores:
            for store in stores_of_size:
                report["stores"].append(asdict(store))
        if args.generate_only:
            for store in report["stores"]:
                print(f"{store['backend']} {store['label']}: {store['events']:,} events at "
                      f"{store['url']}")
            return 0
        for backend in backends:
            for stores_of_size in stores:
                store = next(s for s in stores_of_size if s.backend == backend)
                floor, single, rebuild = measure_in_turn(store.url, args.jobs, args.repeat)
                if floor["events"] != store.events or rebuild["events"] != store.events:
                    raise RuntimeError(f"read {floor['events']} / rebuilt {rebuild['events']} "
                                       f"of {store.events} events")
                report["read_models"] = rebuild["read_models"]
                row = {
                    "backend": backend, "store": store.label, "events": store.events,
                    "store_mb": store.bytes / 2**20, "generate_s": store.generate_seconds,
                    "floor_s": floor["seconds"], "rebuild_s": rebuild["seconds"],
                    "floor_eps": store.events / floor["seconds"],
                    "rebuild_eps": store.events / rebuild["seconds"],
                    "ratio": floor["seconds"] / rebuild["seconds"],
                    "jobs": rebuild["jobs"],
                    "rebuild_1_eps": store.events / single["seconds"],
                    "ratio_1": floor["seconds"] / single["seconds"],
                    "rebuild_1_rss_mb": single["peak_rss_mb"],
                    "floor_rss_mb": floor["peak_rss_mb"],
                    "rebuild_rss_mb": rebuild["peak_rss_mb"],
                    "rebuild_rss_mb_by_position": rebuild["rss_mb_by_position"],
                    "lag_after_rebuild": rebuild["lag_after"],
                    "load_1min": [floor["load"], single["load"], rebuild["load"]],
                    "cpu_s": [floor["cpu_seconds"], single["cpu_seconds"],
                              rebuild["cpu_seconds"]],
                    "repeat": args.repeat,
                }
                report["rebuild"].append(row)
                log(f"{backend} {store.label}: floor {row['floor_eps']:,.0f} ev/s, "
                    f"rebuild {row['rebuild_eps']:,.0f} ev/s, ratio {row['ratio']:.2f}, "
                    f"RSS {row['floor_rss_mb']:.0f} / {row['rebuild_rss_mb']:.0f} MB", args)
            if not args.no_lag:
                store = next(s for s in stores[-1] if s.backend == backend)
                season = Season.plan(sizes[-1], args.campaigns, args.events_per_registration)
                lag = measure_lag(store, season, args.rate, args.duration,
                                  writers.get(backend, 2), args.interval)
                report["lag"].append(lag)
                log(f"{backend} lag: {lag['rate_reached']:.0f} cmd/s reached, time lag "
                    f"p50 {lag['time_lag_s']['p50']:.2f} s p99 {lag['time_lag_s']['p99']:.2f} s",
                    args)
    finally:
        if not args.sqlite_dir and not args.generate_only and not args.existing:
            shutil.rmtree(tmp, ignore_errors=True)
    emit(args, report, print_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
