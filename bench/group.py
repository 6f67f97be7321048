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
- **season**: a mixed file through `ledger send -`: registrations with a session each,
  a second session added, reviews (approvals, an override for those failing criteria),
  withdrawals (every 5th seller), and performance reports of an earlier campaign that
  has ended, interleaved seller by seller;
- **memory**: the peak RSS (VmHWM, read by the child itself at exit) of `ledger send FILE`
  for each of `--memory` command counts: `refused` lines (a command of no known name:
  reading, grouping and answering, no store work) or `reports` (accepted reports).

A timed `ledger send` first answers one warm-up command (a replay), so the figure is the
rate of a running process from the first command written to the last result read; the
wall time with the process start is printed beside it. Group size and wait are `ledger
send`'s defaults unless `--group-size` is given.

    python bench/group.py                                  # both backends, about 3 minutes
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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import (
    AFTER_CAMPAIGN,
    CAMPAIGN_STARTS,
    CATEGORIES,
    FEED,
    IN_WINDOW,
    OPERATOR,
    REVIEWER,
    Backend,
    PostgresBackend,
    SQLiteBackend,
    campaign_command,
    command,
    emit,
    environment,
    iso,
    log,
)
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.store.urls import parse_url

FEED_CAMPAIGN = "group-feed"
SEASON_CAMPAIGN = "group-season"  # registration open at IN_WINDOW
PAST_CAMPAIGN = "group-past"  # ended before IN_WINDOW: its sellers report during the season
PAST_OPENS = datetime(2026, 9, 1, tzinfo=UTC)
PAST_WINDOW = datetime(2026, 9, 5, 9, 0, tzinfo=UTC)
PAST_STARTS = datetime(2026, 9, 20, tzinfo=UTC)
Json = dict[str, Any]

# A child's own peak memory: VmHWM, which a new program image starts afresh (ru_maxrss
# would carry this process's peak across the fork). Read inline, not with common's
# helper: importing bench's helpers would add to the memory measured.
LAUNCHER = """import atexit, runpy, sys
def peak():
    with open('/proc/self/status') as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
    with open(sys.argv.pop(1), 'w') as out:
        out.write(str(kb / 1024))
atexit.register(peak)
runpy.run_module('ledger', run_name='__main__', alter_sys=True)
"""


# Commands ------------------------------------------------------------------------------------

def session(number: int, starts: datetime = CAMPAIGN_STARTS) -> tuple[datetime, datetime]:
    begins = starts + timedelta(hours=10 + 3 * number)
    return begins, begins + timedelta(hours=1)


def seller(index: int) -> Json:
    return {"id": f"seller-{index}", "role": "seller"}


def register(campaign_id: str, index: int, starts: datetime = CAMPAIGN_STARTS) -> Json:
    begins, ends = session(1, starts)
    fails = index % 7 == 3  # asks for gold without the livestream level for it
    return command("register", f"{campaign_id}-register-{index}", seller(index), {
        "campaign_id": campaign_id, "seller_id": seller(index)["id"],
        "account_id": f"acct-{index}", "main_category": CATEGORIES[index % len(CATEGORIES)],
        "level": "gold" if fails else "standard",
        "profile": {"account_level": 3, "livestream_level": 2},
        "sessions": [{"starts_at": iso(begins), "ends_at": iso(ends)}]})


def reg_id(campaign_id: str, index: int) -> str:
    return str(registration_uuid(campaign_id, f"acct-{index}"))


def approve(campaign_id: str, index: int) -> Json:
    override = {"override_reason": "strong sales history"} if index % 7 == 3 else {}
    return command("approve", f"{campaign_id}-approve-{index}", REVIEWER,
                   {"registration_id": reg_id(campaign_id, index), "note": "ok", **override})


def add_session(campaign_id: str, index: int) -> Json:
    begins, ends = session(2)
    return command("add_session", f"{campaign_id}-add-{index}", seller(index), {
        "registration_id": reg_id(campaign_id, index), "starts_at": iso(begins),
        "ends_at": iso(ends)})


def withdraw(campaign_id: str, index: int) -> Json:
    return command("withdraw", f"{campaign_id}-withdraw-{index}", seller(index), {
        "registration_id": reg_id(campaign_id, index), "session_ids": ["s2"],
        "reason": "schedule clash"})


def report(campaign_id: str, index: int, number: int, rounds: int,
           starts: datetime = CAMPAIGN_STARTS) -> Json:
    """The `number`th of `rounds` reports of a registration's session: each a later end."""
    begins, ends = session(1, starts)
    period_end = begins + (ends - begins) * (number + 1) / rounds
    report_id = f"{campaign_id}-report-{index}-{number}"
    return command("record_performance", report_id, FEED, {
        "registration_id": reg_id(campaign_id, index), "report_id": report_id,
        "session_id": "s1", "period_start": iso(begins), "period_end": iso(period_end),
        "currency": "USD", "gmv": f"{1250 + number}.50", "orders": 40 + number,
        "items_sold": 52, "buyers": 37, "views": 12_000, "refunds": "25.00"})


def past_campaign() -> Json:
    created = campaign_command(PAST_CAMPAIGN)
    created["payload"].update({
        "registration_opens_at": iso(PAST_OPENS),
        "registration_closes_at": iso(PAST_STARTS - timedelta(days=5)),
        "starts_at": iso(PAST_STARTS), "ends_at": iso(PAST_STARTS + timedelta(days=2))})
    return created


def feed_setup(registrations: int) -> list[Json]:
    return [campaign_command(FEED_CAMPAIGN),
            *(register(FEED_CAMPAIGN, i) for i in range(registrations)),
            *(approve(FEED_CAMPAIGN, i) for i in range(registrations))]


def feed(registrations: int, reports: int) -> Iterator[Json]:
    """`reports` reports in rounds: every registration's next report, in time order."""
    rounds = max(1, -(-reports // registrations))
    made = 0
    for number in range(rounds):
        for index in range(registrations):
            if made == reports:
                return
            yield report(FEED_CAMPAIGN, index, number, rounds)
            made += 1


def season_sizes(total: int) -> tuple[int, int]:
    """(sellers registering now, reporters of the past campaign): about `total` commands
    (each seller: register, add_session, approve, 1 in 5 withdraw; 4 reports each)."""
    sellers = max(1, int(total * 0.64 / 3.2))
    return sellers, max(1, (total - int(sellers * 3.2)) // 4)


def season_setup(total: int) -> list[Json]:
    _, reporters = season_sizes(total)
    return [past_campaign(), campaign_command(SEASON_CAMPAIGN),
            *(register(PAST_CAMPAIGN, i, PAST_STARTS) for i in range(reporters)),
            *(approve(PAST_CAMPAIGN, i) for i in range(reporters))]


def season(total: int) -> list[Json]:
    """Each seller's own commands in order; sellers and reporters interleaved."""
    sellers, reporters = season_sizes(total)
    streams = [[register(SEASON_CAMPAIGN, i), add_session(SEASON_CAMPAIGN, i),
                approve(SEASON_CAMPAIGN, i),
                *([withdraw(SEASON_CAMPAIGN, i)] if i % 5 == 0 else [])]
               for i in range(sellers)]
    streams += [[report(PAST_CAMPAIGN, i, n, 4, PAST_STARTS) for n in range(4)]
                for i in range(reporters)]
    return interleave(streams)


def interleave(streams: Sequence[Sequence[Json]], width: int = 50) -> list[Json]:
    """Round-robin over `width` streams at a time: neighbours belong to different sellers."""
    merged: list[Json] = []
    for start in range(0, len(streams), width):
        batch = streams[start:start + width]
        for depth in range(max(len(s) for s in batch)):
            merged.extend(s[depth] for s in batch if depth < len(s))
    return merged


def lines(commands: Iterable[Json]) -> Iterator[bytes]:
    for cmd in commands:
        yield json.dumps(cmd).encode() + b"\n"


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

def set_up(url: str, at: datetime, commands: list[Json]) -> None:
    """Send the untimed setup in-process; every command must be accepted."""
    with Ledger.open(url, clock=FixedClock(at), pool_size=1) as ledger:
        for result in ledger.send_many(commands):
            if not result["ok"]:
                raise RuntimeError(f"setup refused: {result}")


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
    setup = season_setup(args.season)
    log(f"{backend.name}: season setup ({len(setup):,} commands)", args)
    set_up(url, PAST_WINDOW, setup)
    commands = season(args.season)
    log(f"{backend.name}: the season ({len(commands):,} commands) through ledger send", args)
    figures["season"] = timed_send(url, IN_WINDOW, setup[0], commands, options)
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
