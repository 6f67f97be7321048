"""Group commit in `ledger serve`: 16 HTTP clients, one command per request, with the
coalescer off and on, side by side in one run, on PostgreSQL and SQLite (issue 14).

For each backend and each mode, a fresh store (the same setup, tokens and command stream:
bench/workload.py's `Plan`, the mix of bench/commands.py) and the real `ledger serve
--workers N` on a free loopback port:

- **off**: `--group-wait-ms 0`, every request its own transaction (as before issue 14);
- **on**: `--group-wait-ms W --group-max M` (the defaults: 2 ms, 200), single commands
  arriving together at a worker share one `Ledger.send_group` transaction.

Each mode runs a closed loop (`--clients` threads, each sending as soon as it has its
answer, keep-alive `http.client` connections, each command with its actor's token) for
`--duration` seconds after a `--warmup`: accepted commands/s, p50/p99 latency; then an
open loop at `--open-fraction` (half) of that mode's peak: Poisson arrivals, latency from
when the command was due (a slow server cannot hide its queue). The access log's `group`
field gives the mean number of commands per transaction in each window. The aim (issue
14): >= 1,500 commands/s, p99 < 50 ms at half that rate.

    python bench/serve_group.py                  # both backends, about 3 minutes
    python bench/serve_group.py --quick          # a smoke run (5 s windows)
    python bench/serve_group.py --backends postgres --workers 2 --group-wait-ms 5
    python bench/serve_group.py --backends sqlite --follower process

`--follower process`: the read models are kept current by a `ledger projections run`
process beside `ledger serve --no-follow`, not by one of the server's workers (its CPU
shows in the "other" column).

`--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_serve_group_bench) is
DROPPED and created again. The helpers (the HTTP sender, the loops, CPU meters) are
bench/loadgen.py's, the Plan bench/workload.py's.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from common import environment, free_port, interrupt, log, serving
from loadgen import (  # the load, shared with service.py
    OPEN_LOOP_AIM_MS,
    OverHttp,
    Row,
    Stores,
    add_load_options,
    cpu_cells,
    measure,
)
from workload import Plan, SellerCounter

from ledger import Ledger
from ledger.store import tokens

AIM_PER_S = 1500.0


class StoreMaker(Protocol):
    def fresh(self, label: str) -> str: ...

    @property
    def token_of(self) -> dict[str, str]: ...


class SqliteStores:
    """A SQLite file per measurement, with the plan's setup and every token (issued once
    into a file of their own and copied)."""

    def __init__(self, folder: Path, plan: Plan) -> None:
        self.folder, self.plan = folder, plan
        self.tokens_path = folder / "tokens.db"
        with Ledger.open(f"sqlite:///{self.tokens_path}") as ledger:
            now = datetime.now(UTC)
            self._token_of = {a.id: tokens.issue(ledger.app.store, a, now)
                              for a in plan.actors()}

    @property
    def token_of(self) -> dict[str, str]:
        return self._token_of

    def fresh(self, label: str) -> str:
        path = self.folder / f"{label}.db"
        url = f"sqlite:///{path}"
        self.plan.setup(url)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("ATTACH DATABASE ? AS issued", (str(self.tokens_path),))
            conn.execute("INSERT INTO ledger_tokens SELECT * FROM issued.ledger_tokens")
            conn.commit()
        return url


@dataclass
class Figures:
    backend: str
    mode: str
    row: dict[str, Any]
    mean_group: float | None  # commands per transaction in the window (access log)


def group_sizes(log_path: Path, offset: int) -> tuple[float | None, int]:
    """The mean `group` of the access-log lines written after `offset`; the new offset."""
    with log_path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    sizes = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("path") == "/v1/commands":
            sizes.append(int(entry.get("group") or 1))
    return (sum(sizes) / len(sizes) if sizes else None), offset + len(data)


@contextmanager
def stores_for(backend: str, args: argparse.Namespace, plan: Plan) -> Iterator[StoreMaker]:
    if backend == "postgres":
        yield Stores(args.pg_url, plan)
        return
    with tempfile.TemporaryDirectory(prefix="ledger-serve-group-") as folder:
        yield SqliteStores(Path(folder), plan)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan(args.clients, args.sellers)
    modes: list[tuple[str, list[str]]] = [
        ("off: a transaction per request", ["--group-wait-ms", "0"]),
        (f"on: wait {args.group_wait_ms:g} ms, max {args.group_max}",
         ["--group-wait-ms", str(args.group_wait_ms), "--group-max", str(args.group_max)]),
    ]
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="ledger-serve-group-logs-") as folder:
        for backend in args.backends:
            figures += measure_backend(backend, args, plan, modes, Path(folder))
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(), "config": dict(vars(args)),
            "figures": [asdict(f) for f in figures]}


@contextmanager
def follower_process(url: str, log: Path, wanted: bool) -> Iterator[None]:
    """`ledger projections run` beside the server (`--follower process`), its output to
    `log`, stopped (Ctrl-C, then its group killed if need be) when the block ends."""
    if not wanted:
        yield
        return
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ledger", "--db", url,
                                    "projections", "run"], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        interrupt(process, 30)


def measure_backend(backend: str, args: argparse.Namespace, plan: Plan,
                    modes: list[tuple[str, list[str]]], logs: Path) -> list[Figures]:
    """Each mode on a fresh store of `backend`: the closed loop, then the open loop."""
    figures: list[Figures] = []
    log(f"{backend}: issuing {args.sellers + 2} tokens")
    with stores_for(backend, args, plan) as stores:
        for number, (mode, options) in enumerate(modes):
            log(f"{backend}, coalescing {mode}")
            url = stores.fresh(f"m{number}_{'on' if number else 'off'}")
            log_path = logs / f"{backend}-{number}-{free_port()}.log"
            # A long keep-alive: at half the peak an open-loop client may be idle for
            # longer than the 5 s default, and http.client does not reconnect.
            follow = ["--no-follow"] if args.follower == "process" else []
            with serving(url, log_path, "--workers", str(args.workers),
                         "--timeout-keep-alive", "300", *follow, *options) as server, \
                    follower_process(url, log_path.with_suffix(".follower.log"),
                                     args.follower == "process"):
                http = OverHttp(server.base, stores.token_of)
                counter = SellerCounter(plan.sellers)
                offset, rate = 0, None  # the closed loop first, then the open loop
                try:
                    while True:
                        row = measure(f"{backend} {mode}", plan, http.sender, server,
                                      args, counter, rate)
                        mean, offset = group_sizes(log_path, offset)
                        figures.append(Figures(backend, mode, asdict(row), mean))
                        if rate is not None or not args.open_loop or row.per_s <= 0:
                            break
                        rate = args.open_fraction * row.per_s
                finally:
                    http.close()
    return figures


def table(report: dict[str, Any]) -> str:
    config = report["config"]
    env = report["environment"]
    out = [f"{report['date']}  {env['cpus']} CPUs  Python {env['python']}  commit "
           f"{env['commit']}  `ledger serve --workers {config['workers']}`, "
           f"{config['clients']} clients, one command per request; {config['duration']:g} s "
           f"windows after {config['warmup']:g} s warm-up. group: mean commands per "
           "transaction (access log). cores: client/server/PostgreSQL/other; CPU ms: "
           "client+server+PostgreSQL CPU per accepted command.", "",
           f"{'backend':<9} {'coalescing':<32} {'loop':<16} {'accepted/s':>10} {'p50 ms':>7} "
           f"{'p99 ms':>7} {'group':>6} {'aim':>6} {'cores c/s/pg/other':>19} {'CPU ms':>7}"]
    for f in report["figures"]:
        r = Row(**f["row"])
        if r.loop == "closed":
            loop, aim = "closed", "ok" if r.per_s >= AIM_PER_S else "below"
        else:
            loop = f"open at {r.target_per_s or 0:.0f}/s"
            aim = "ok" if r.p99_ms < OPEN_LOOP_AIM_MS else "above"
        group = f"{f['mean_group']:.1f}" if f["mean_group"] else ""
        out.append(f"{f['backend']:<9} {f['mode']:<32} {loop:<16} {r.per_s:>10.0f} "
                   f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {group:>6} {aim:>6} {cpu_cells(r)}"
                   + (" (ran out of sellers)" if r.exhausted else "")
                   + (f" refused {r.refused}" if r.refused else ""))
    out += ["", f"aim: closed loop >= {AIM_PER_S:,.0f} accepted/s; open loop at half of it "
                f"p99 < {OPEN_LOOP_AIM_MS:g} ms"]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backends", default="postgres,sqlite",
                        help="comma-separated: postgres, sqlite (both)")
    parser.add_argument("--pg-url",
                        default="postgresql://postgres@127.0.0.1:5432/ledger_serve_group_bench",
                        help="PostgreSQL database to DROP and create again for the run")
    parser.add_argument("--workers", type=int, default=2, help="`ledger serve --workers` (2)")
    parser.add_argument("--follower", choices=["worker", "process"], default="worker",
                        help="who keeps the read models current: a worker of the server "
                             "(`ledger serve`'s default), or a `ledger projections run` "
                             "process beside `ledger serve --no-follow`")
    parser.add_argument("--group-wait-ms", type=float, default=2.0,
                        help="the coalescing mode's --group-wait-ms (2)")
    parser.add_argument("--group-max", type=int, default=200,
                        help="the coalescing mode's --group-max (200)")
    add_load_options(parser)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 s windows, 1 s warm-up, 1,500 sellers")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 5.0), min(args.warmup, 1.0)
        args.sellers = min(args.sellers, 1500)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"postgres", "sqlite"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report = run(args)
    log(f"done in {time.perf_counter() - started:.0f} s")
    print(json.dumps(report, indent=2, default=str) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
