"""Group commit, in process: `Ledger.send` one command at a time vs `Ledger.send_many` in
groups, on the same feed of `record_performance` reports, side by side in one run.

For each backend two fresh stores get the same setup (one campaign, `--sellers` approved
registrations); then the feed (`--commands` reports, spread over the registrations, each
with its own report_id and command_id) goes into one store with `send` and into the other
with `send_many(group_size=--group-size)`, in alternating blocks of `--block` commands so
that drift in disk flushes and CPU hits both alike. Beside them, the floor the issue
measures against: one durable one-row transaction per command on the same database
(`INSERT` + commit; SQLite in WAL mode with the library's settings).

It prints commands/s for each and the ratio grouped/one-at-a-time; every result must be
accepted (else it stops: a figure over refusals would mean nothing).

    python bench/group_core.py                          # both backends, about a minute
    python bench/group_core.py --backends sqlite --commands 2000 --json
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
from common import (
    AFTER_CAMPAIGN,
    CAMPAIGN_STARTS,
    FEED,
    IN_WINDOW,
    REVIEWER,
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

CAMPAIGN = "bench-group-live"
Json = dict[str, Any]


def setup_commands(sellers: int) -> list[Json]:
    """The campaign, then each seller registered (one session) and approved."""
    commands = [campaign_command(CAMPAIGN)]
    starts_at = CAMPAIGN_STARTS + timedelta(hours=10)
    window = {"starts_at": iso(starts_at), "ends_at": iso(starts_at + timedelta(hours=1))}
    for n in range(sellers):
        actor = {"id": f"seller-{n}", "role": "seller"}
        commands.append(command("register", f"register-{n}", actor, {
            "campaign_id": CAMPAIGN, "seller_id": actor["id"], "account_id": f"acct-{n}",
            "main_category": "fashion", "level": "standard", "sessions": [window],
            "profile": {"account_level": 3, "livestream_level": 2}}))
    for n in range(sellers):
        commands.append(command("approve", f"approve-{n}", REVIEWER, {
            "registration_id": str(registration_uuid(CAMPAIGN, f"acct-{n}"))}))
    return commands


def feed(count: int, sellers: int) -> list[Json]:
    """`count` reports, round robin over the registrations."""
    starts_at = CAMPAIGN_STARTS + timedelta(hours=10)
    return [command("record_performance", f"report-{n}", FEED, {
        "registration_id": str(registration_uuid(CAMPAIGN, f"acct-{n % sellers}")),
        "report_id": f"report-{n}", "session_id": "s1", "period_start": iso(starts_at),
        "period_end": iso(starts_at + timedelta(hours=1)), "currency": "USD",
        "gmv": f"{1250 + n}.50", "orders": 40, "items_sold": 52, "buyers": 37,
        "views": 12_000, "refunds": "25.00"}) for n in range(count)]


@contextmanager
def stores(backend: str, args: argparse.Namespace, folder: Path) -> Iterator[list[str]]:
    """Three fresh store URLs: one at a time, grouped, and the floor's."""
    if backend == "sqlite":
        yield [f"sqlite:///{folder / f'{name}-{uuid4().hex[:6]}.db'}"
               for name in ("one", "grouped", "floor")]
        return
    schemas = [f"bench_group_{name}_{uuid4().hex[:6]}" for name in ("one", "grouped", "floor")]
    with psycopg.connect(args.pg_url, autocommit=True) as admin:
        for schema in schemas:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield [f"{args.pg_url}?schema={schema}" for schema in schemas]
        finally:
            for schema in schemas:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def floor_rate(url: str, count: int) -> float:
    """One-row durable transactions per second on the same database."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE floor (n INTEGER PRIMARY KEY, body TEXT)")
        started = time.perf_counter()
        for n in range(count):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO floor VALUES (?, ?)", (n, "x" * 200))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
        return count / elapsed
    base, schema = url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        table = sql.Identifier(schema, "floor")
        conn.execute(sql.SQL("CREATE TABLE {} (n bigint PRIMARY KEY, body text)").format(table))
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table)
        started = time.perf_counter()
        for n in range(count):
            with conn.transaction():
                conn.execute(insert, (n, "x" * 200))
        return count / (time.perf_counter() - started)


def prepared(url: str, sellers: int) -> Ledger:
    """A ledger on `url` with the setup done (grouped: it is not what is measured)."""
    ledger = Ledger.open(url, clock=FixedClock(IN_WINDOW), pool_size=1)
    results = list(ledger.send_many(setup_commands(sellers)))
    refused = [r for r in results if not r["ok"]]
    if refused:
        sys.exit(f"setup refused: {refused[0]}")
    ledger.clock = FixedClock(AFTER_CAMPAIGN)
    return ledger


def timed(send: Callable[[list[Json]], list[Json]], block: list[Json]) -> float:
    started = time.perf_counter()
    results = send(block)
    elapsed = time.perf_counter() - started
    refused = [r for r in results if not r["ok"]]
    if refused or len(results) != len(block):
        sys.exit(f"a report was refused: {refused[:1]}")
    return elapsed


def run_backend(backend: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    reports = feed(args.commands, args.sellers)
    with stores(backend, args, folder) as (one_url, group_url, floor_url):
        one, grouped = prepared(one_url, args.sellers), prepared(group_url, args.sellers)
        spent = {"one": 0.0, "grouped": 0.0}
        try:
            for start in range(0, len(reports), args.block):
                block = reports[start:start + args.block]
                spent["one"] += timed(lambda b: [one.send(c) for c in b], block)
                spent["grouped"] += timed(
                    lambda b: list(grouped.send_many(b, group_size=args.group_size)), block)
                log(f"{backend}: {start + len(block):,}/{len(reports):,} reports", args)
            stats = grouped.group_stats
        finally:
            one.close()
            grouped.close()
        floor = floor_rate(floor_url, args.floor)
    rates = {name: len(reports) / seconds for name, seconds in spent.items()}
    return {
        "backend": backend, "commands": len(reports), "group_size": args.group_size,
        "send_per_s": round(rates["one"]), "send_many_per_s": round(rates["grouped"]),
        "ratio": round(rates["grouped"] / rates["one"], 2),
        "floor_one_row_tx_per_s": round(floor),
        "send_many_vs_floor": round(rates["grouped"] / floor, 2),
        "runs_committed": stats.committed, "runs_one_at_a_time": stats.one_at_a_time,
    }


def print_tables(report: dict[str, Any]) -> None:
    print(f"{'backend':10} {'send/s':>8} {'send_many/s':>12} {'ratio':>6} "
          f"{'1-row tx/s':>11} {'many/floor':>11}")
    for row in report["results"]:
        print(f"{row['backend']:10} {row['send_per_s']:>8,} {row['send_many_per_s']:>12,} "
              f"{row['ratio']:>5}x {row['floor_one_row_tx_per_s']:>11,} "
              f"{row['send_many_vs_floor']:>10}x")
    print(f"({report['results'][0]['commands']:,} record_performance each, groups of "
          f"{report['results'][0]['group_size']}; {report['environment']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--sellers", type=int, default=100)
    parser.add_argument("--group-size", type=int, default=200)
    parser.add_argument("--block", type=int, default=1000,
                        help="commands per alternating block (default 1000)")
    parser.add_argument("--floor", type=int, default=2000,
                        help="one-row transactions timed for the floor (default 2000)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="schemas are created there and dropped afterwards")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", default=None, help="also write the JSON figures to this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-group-") as folder:
        results = [run_backend(b.strip(), args, Path(folder))
                   for b in args.backends.split(",") if b.strip()]
    emit(args, {"results": results, "environment": environment()}, print_tables)


if __name__ == "__main__":
    main()
