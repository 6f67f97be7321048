"""`ledger send` in groups, next to the floor of one durable one-row transaction per command.

Issue 14's proof, in one run, for each backend (SQLite, PostgreSQL) on the same server:

- **floor**: `--floor` one-row INSERTs of a command-sized text, each its own committed
  (durable: PostgreSQL's `synchronous_commit`, SQLite WAL with its default `synchronous`,
  as the ledger's store) transaction, on one connection: what one transaction per command
  can reach at best;
- **feed**: a performance feed of `--reports` `record_performance` commands through a
  real `ledger send -` process: `--registrations` approved registrations (set up first,
  not timed), each reporting several times, the reports in time order (each round a
  later period end for every registration);
- **season**: bench/workload.py's season (`Plan`, one client) through `ledger send -`:
  seller after seller, `register` (one session), `add_session`, `approve` (an override
  for those failing criteria), `withdraw` (every 5th), and two performance reports for
  registrations of a campaign that has ended, on live campaigns moved to today;
- **memory**: the peak RSS (VmHWM, read by the child itself at exit) of `ledger send FILE`
  for each of `--memory` command counts: `refused` lines (a command of no known name:
  reading, grouping and answering, no store work) or `reports` (accepted reports).

A timed `ledger send` first answers one warm-up command (a replay), so the figure is the
rate of a running process from the first command written to the last result read; the
wall time with the process start is printed beside it. Group size and wait are `ledger
send`'s defaults unless `--group-size` is given.

    python bench/group.py                                  # both backends, a few minutes
    python bench/group.py --backends sqlite --reports 2000 --season 2000 --memory 10000
    python bench/group.py --memory 10000,1000000 --memory-kind refused --skip-throughput
    python bench/group.py --json --save figures.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from common import AFTER_CAMPAIGN, IN_WINDOW, OPERATOR, emit, environment, iso, log
from psycopg import sql
from workload import (
    Backend,
    Plan,
    PostgresBackend,
    SellerCounter,
    SQLiteBackend,
    create_campaign_op,
    feed,
    feed_setup,
    lines,
    set_up,
    shifted,
)

from ledger.store.urls import parse_url

Json = dict[str, Any]

# A child's own peak memory: VmHWM, which a new program image starts afresh (ru_maxrss
# would carry this process's peak across the fork). Read inline, not with common's
# helper: importing bench's helpers would add to the memory measured.
LAUNCHER = """import atexit, runpy, sys
peak_file = sys.argv.pop(1)
def peak():
    with open('/proc/self/status') as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
    with open(peak_file, 'w') as out:
        out.write(str(kb / 1024))
atexit.register(peak)
runpy.run_module('ledger', run_name='__main__', alter_sys=True)
"""


# Commands (bench/workload.py's sellers) -------------------------------------------------------

def season_plan(total: int) -> Plan:
    """bench/workload.py's season for one client: per seller register, add_session,
    approve, 1 in 5 withdraw, and two reports of the ended campaign (about 5.2 commands),
    on live campaigns moved to today; `total` commands, about."""
    sellers = max(1, round(total / 5.2))
    return Plan(clients=1, sellers=sellers, ended_per_client=max(1, sellers // 5))


def season(plan: Plan, total: int) -> list[Json]:
    return list(plan.stream(0, SellerCounter(plan.sellers)))[:total]


# The floor -----------------------------------------------------------------------------------

ROW = "x" * 400  # about a command's size


def floor(backend: Backend, label: str, count: int) -> Json:
    """`count` one-row INSERTs, each its own durable transaction: per second."""
    url = backend.url(label)
    if isinstance(backend, SQLiteBackend):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"),
                                     isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            durability = f"synchronous={conn.execute('PRAGMA synchronous').fetchone()[0]}"
            conn.execute("CREATE TABLE floor (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            started = time.perf_counter()
            for n in range(count):
                conn.execute("INSERT INTO floor VALUES (?, ?)", (n, ROW))
            seconds = time.perf_counter() - started
    else:
        store = parse_url(url)
        table = sql.Identifier(store.schema, "floor")
        with psycopg.connect(store.conninfo(), autocommit=True) as pg:
            durability = f"synchronous_commit={pg.execute('SHOW synchronous_commit').fetchone()[0]}"  # type: ignore[index]
            pg.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, body text NOT NULL)")
                       .format(table))
            insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table)
            started = time.perf_counter()
            for n in range(count):
                pg.execute(insert, (n, ROW), prepare=True)
            seconds = time.perf_counter() - started
    return {"commands": count, "seconds": seconds, "rate": count / seconds,
            "durability": durability}


# `ledger send`, timed ------------------------------------------------------------------------

def ledger_send(url: str, at: datetime, options: Sequence[str], source: str) -> list[str]:
    return [sys.executable, "-m", "ledger", "--db", url, "--now", iso(at), "send",
            *options, source]


def timed_send(url: str, at: datetime, warm_up: Json, commands: list[Json],
               options: Sequence[str]) -> Json:
    """Run `ledger send -`; once it has answered `warm_up`, time the commands through it."""
    launched = time.perf_counter()
    child = subprocess.Popen(ledger_send(url, at, options, "-"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    child.stdin.write(next(lines([warm_up])))
    child.stdin.flush()
    if b'"replayed": true' not in child.stdout.readline():
        raise RuntimeError(f"the warm-up was not a replay: {child.stderr.read().decode()}")
    started = time.perf_counter()

    def write() -> None:
        assert child.stdin is not None
        for line in lines(commands):
            child.stdin.write(line)
        child.stdin.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    accepted = refused = 0
    for line in child.stdout:
        if line.startswith(b'{"ok": true'):
            accepted += 1
        else:
            refused += 1
    ended = time.perf_counter()
    writer.join()
    error = child.stderr.read().decode()
    if child.wait() != 0 or accepted != len(commands):
        raise RuntimeError(f"ledger send: exit {child.returncode}, {accepted} accepted, "
                           f"{refused} refused of {len(commands)}: {error[-500:]}")
    return {"commands": len(commands), "seconds": ended - started,
            "rate": len(commands) / (ended - started),
            "wall_rate": (len(commands) + 1) / (ended - launched)}


def throughput(backend: Backend, args: argparse.Namespace, options: Sequence[str]) -> Json:
    log(f"{backend.name}: the floor ({args.floor:,} transactions)", args)
    figures: Json = {"backend": backend.name, "server": backend.describe(),
                     "floor": floor(backend, "group_floor", args.floor)}
    registrations = max(1, args.reports // args.reports_each)
    url = backend.url("group_feed")
    log(f"{backend.name}: feed setup ({registrations:,} registrations, approved)", args)
    setup = feed_setup(registrations)
    set_up(url, IN_WINDOW, setup)
    log(f"{backend.name}: the feed ({args.reports:,} reports) through ledger send", args)
    figures["feed"] = timed_send(url, AFTER_CAMPAIGN, setup[0],
                                 list(feed(registrations, args.reports)), options)
    url = backend.url("group_season")
    plan = season_plan(args.season)
    log(f"{backend.name}: season setup (campaigns, {plan.ended_per_client:,} registrations "
        "of an ended campaign, approved)", args)
    plan.setup(url)
    commands = season(plan, args.season)
    now = datetime.now(UTC)  # the plan's live campaigns are open today
    log(f"{backend.name}: the season ({len(commands):,} commands) through ledger send", args)
    warm_up = shifted(create_campaign_op(plan.live_campaigns[0]), plan.delta)  # a replay
    figures["season"] = timed_send(url, now, warm_up, commands, options)
    floor_rate = figures["floor"]["rate"]
    for part in ("feed", "season"):
        figures[part]["vs_floor"] = figures[part]["rate"] / floor_rate
    log(f"{backend.name}: floor {floor_rate:,.0f}/s, feed {figures['feed']['rate']:,.0f}/s, "
        f"season {figures['season']['rate']:,.0f}/s", args)
    return figures


# Memory --------------------------------------------------------------------------------------

def memory_input(path: Path, kind: str, count: int, registrations: int) -> None:
    """`count` commands of `kind` (after the feed's setup, for `reports`) in a file."""
    with path.open("wb") as out:
        if kind == "refused":
            pad = "x" * 300
            for n in range(count):
                out.write(json.dumps({"command": "no_such_command", "command_id": f"m-{n:09d}",
                                      "actor": OPERATOR, "payload": {"pad": pad}}).encode()
                          + b"\n")
        else:
            out.writelines(lines(feed(registrations, count)))


def peak_memory(backend: Backend, kind: str, count: int, args: argparse.Namespace,
                options: Sequence[str], folder: Path) -> Json:
    url = backend.url(f"group_memory_{count}")
    registrations = max(1, min(count // args.reports_each, 1000))
    if kind == "reports":
        set_up(url, IN_WINDOW, feed_setup(registrations))
    source, peak = folder / f"memory-{count}.jsonl", folder / f"peak-{count}.txt"
    memory_input(source, kind, count, registrations)
    at = AFTER_CAMPAIGN if kind == "reports" else IN_WINDOW
    argv = ledger_send(url, at, options, str(source))[1:]  # after the interpreter
    started = time.perf_counter()
    with open(os.devnull, "wb") as null:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, str(peak), *argv[2:]],
                              stdout=null, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    expected = 2 if kind == "refused" else 0
    if done.returncode != expected:
        raise RuntimeError(f"ledger send exited {done.returncode}: {done.stderr.decode()[-500:]}")
    figures = {"backend": backend.name, "kind": kind, "commands": count,
               "input_mb": source.stat().st_size / 2**20,
               "peak_rss_mb": float(peak.read_text()), "seconds": seconds}
    source.unlink()
    log(f"{backend.name}: {kind} x {count:,}: peak {figures['peak_rss_mb']:.1f} MB in "
        f"{seconds:.0f}s", args)
    return figures


# The report ----------------------------------------------------------------------------------

def print_tables(report: Json) -> None:
    print(f"ledger send in groups ({report['group']}) against one durable one-row "
          f"transaction per command, one run; {report['environment']['cpus']} CPUs, "
          f"commit {report['environment']['commit']}")
    if report["throughput"]:
        print(f"\n{'backend':<9} {'floor tx/s':>11} {'feed cmd/s':>11} {'x floor':>8} "
              f"{'season cmd/s':>13} {'x floor':>8} {'feed wall/s':>12} {'season wall/s':>14}")
        for row in report["throughput"]:
            feed_, season_ = row["feed"], row["season"]
            print(f"{row['backend']:<9} {row['floor']['rate']:>11,.0f} {feed_['rate']:>11,.0f} "
                  f"{feed_['vs_floor']:>7.2f}x {season_['rate']:>13,.0f} "
                  f"{season_['vs_floor']:>7.2f}x {feed_['wall_rate']:>12,.0f} "
                  f"{season_['wall_rate']:>14,.0f}")
        for row in report["throughput"]:
            print(f"  {row['backend']}: {row['server']}; floor {row['floor']['durability']}; "
                  f"feed {row['feed']['commands']:,} reports, season "
                  f"{row['season']['commands']:,} commands")
        print("  cmd/s: from the first command written to a running `ledger send -` to the "
              "last result read; wall/s: with the process start.")
        print("  aims: feed >= 1.5x floor on PostgreSQL, >= 6,000/s on SQLite; season >= "
              "3,000/s on PostgreSQL")
    if report["memory"]:
        print(f"\n{'backend':<9} {'kind':<8} {'commands':>10} {'input MB':>9} "
              f"{'peak RSS MB':>12} {'seconds':>8}")
        for row in report["memory"]:
            print(f"{row['backend']:<9} {row['kind']:<8} {row['commands']:>10,} "
                  f"{row['input_mb']:>9.1f} {row['peak_rss_mb']:>12.1f} {row['seconds']:>8.0f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--reports", type=int, default=5000, help="the feed's reports")
    parser.add_argument("--reports-each", type=int, default=5,
                        help="reports per registration (registrations = reports / this)")
    parser.add_argument("--season", type=int, default=5000, help="the season's commands (about)")
    parser.add_argument("--floor", type=int, default=5000, help="the floor's transactions")
    parser.add_argument("--memory", default="10000",
                        help="command counts for peak memory, comma-separated ('' for none)")
    parser.add_argument("--memory-kind", choices=("refused", "reports"), default="refused")
    parser.add_argument("--memory-backends", default="sqlite")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--group-size", default=None, help="pass --group-size to ledger send")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/ledger_bench_group",
                        help="this database is DROPPED and created again on every run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", default=None, help="also write the JSON figures to this file")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = ["--group-size", args.group_size] if args.group_size else []
    with tempfile.TemporaryDirectory(prefix="bench-group-") as folder:
        made: dict[str, Backend] = {}

        def backend(name: str) -> Backend:
            if name not in made:
                made[name] = SQLiteBackend(folder) if name == "sqlite" else PostgresBackend(
                    args.pg_url)
            return made[name]

        report: Json = {"environment": environment(), "command": " ".join(sys.argv),
                        "group": f"--group-size {args.group_size}" if args.group_size
                        else "ledger send's defaults", "throughput": [], "memory": []}
        if not args.skip_throughput:
            for name in args.backends.split(","):
                report["throughput"].append(throughput(backend(name.strip()), args, options))
        for name in (n.strip() for n in args.memory_backends.split(",") if n.strip()):
            for count in (int(c) for c in args.memory.split(",") if c.strip()):
                report["memory"].append(peak_memory(backend(name), args.memory_kind, count,
                                                    args, options, Path(folder)))
    emit(args, report, print_tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
