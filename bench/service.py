"""Throughput and latency of `ledger serve` over HTTP, next to in-process `Ledger.send`.

What it measures, on PostgreSQL, in one run:

- **in-process**: `--clients` threads (16) call `Ledger.send(command)` on one `Ledger`
  (a pool of `--clients` connections) as fast as they can, for `--duration` seconds after
  a `--warmup`;
- **serve workers=N** for each N in `--workers` (1,2,4): the real `ledger serve --workers N`
  on a free loopback port, and the same number of client threads, each with its own
  keep-alive `http.client` connection (the standard library's: about a fifth of httpx's
  CPU per request, and the load generator shares the CPUs with the server), POSTing the
  same commands to `/v1/commands` with the bearer token of the command's actor (the
  service takes the actor from the token).

Each measurement gets a fresh PostgreSQL schema, the same setup and the same command
stream. The figures: accepted commands/s (results `ok` and not replayed, finished inside
the window), p50/p99 latency (client side: for HTTP, the whole request), and the ratio to
in-process (the aim: the HTTP layer costs under 30% of in-process throughput, ratio >=
0.70). Then an **open loop** per mode at half of that mode's measured peak: commands
arrive at random (Poisson) times, spread over the same clients, and each latency is
counted from when the command was due, not when it was sent (so a slow server cannot
hide its queue); the aim is p99 < 50 ms. Printed with every row: the 1-minute load
average at the end of the window; the cores used in the window by the client process,
the server's processes, PostgreSQL's backends and all other work on the machine (from
/proc); and the client + server + PostgreSQL CPU milliseconds per accepted command, the
figure that moves least when other work shares the CPUs (this machine has 2, and the load
generator shares them with the server and the database).

The command mix is bench/commands.py's (its generators are imported): per seller
`register` (one session), `add_session`, `approve` (the every-7th seller that fails the
criteria with an override reason), `withdraw` (every 5th seller), and two
`record_performance`, in that order, one seller at a time per client. The service runs on
the system clock, so the dates of commands.py's campaigns are moved (whole days) to put
today inside their registration window; the reports go to registrations of a campaign
that has already ended (commands.py's own dates), one set per client, prepared in-process
before the window with a fixed clock, as are the campaigns. Tokens come from
`ledger.store.tokens.issue` (what `ledger tokens add` calls): one per seller, one for the
reviewer and one for the performance feed, issued once and copied into each schema.

Unless `--no-token-variant`, the largest worker count runs once more with the token
look-up cached in each worker (a uvicorn factory in this file wraps the service's
`actor()`; the ledger's code is not changed), and 1,000 `tokens.find` calls are timed one
by one, to show what the per-request look-up in the database costs.

    python bench/service.py              # defaults, about 4 minutes
    python bench/service.py --quick      # a smoke run (5 s windows, workers 1,2)
    python bench/service.py --workers 2 --duration 30 --clients 32

Options: `--pg-url` (default postgresql://postgres@127.0.0.1:5432/ledger_service_bench:
this database is DROPPED and created again), `--duration` seconds per window (20),
`--warmup` seconds before each window (2), `--clients` (16), `--workers` (1,2,4),
`--sellers` the most sellers one mode may use, one token each (3000), `--open-fraction`
of the peak for the open loop (0.5), `--no-open-loop`, `--no-token-variant`, `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from common import (
    Server,
    free_port,
    log,
    serving,
)
from loadgen import (  # the load, shared with serve_group.py and markets.py
    OPEN_LOOP_AIM_MS,
    InProcess,
    OverHttp,
    Row,
    Send,
    Stores,
    add_load_options,
    cpu_cells,
    measure,
    own_cpu,
)
from psycopg import sql
from workload import Plan, SellerCounter

from ledger import Ledger
from ledger.store import tokens
from ledger.store.tokens import TokenActor

HERE = Path(__file__).resolve().parent
RATIO_AIM = 0.70




# The server ---------------------------------------------------------------------------------

def serving_workers(url: str, workers: int, folder: Path,
                    variant: str = "") -> AbstractContextManager[Server]:
    """`ledger serve --workers N` (or this file's variant factory) until the block ends;
    its stderr (the JSON access log) goes to a file in `folder`."""
    def variant_argv(port: int) -> list[str]:
        return [sys.executable, str(HERE / "service.py"), "--serve-variant", variant,
                "--pg-url", url, "--port", str(port), "--workers", str(workers)]

    log_path = folder / f"serve-{workers}{'-' + variant if variant else ''}-{free_port()}.log"
    return serving(url, log_path, "--workers", str(workers),
                   command=variant_argv if variant else None)


def cached_tokens_app() -> Any:
    """The service's app with each token's actor looked up once per worker (a variant
    to measure what the per-request look-up costs; uvicorn factory)."""
    from ledger.service.app import from_env
    from ledger.service.state import Service

    app = from_env()
    service: Service = app.state.service
    found: dict[str, TokenActor | None] = {}
    lookup = service.actor

    def actor(token: str) -> TokenActor | None:
        if token not in found:
            found[token] = lookup(token)
        return found[token]

    service.actor = actor  # type: ignore[method-assign]
    return app


def serve_variant(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["LEDGER_DATABASE_URL"] = args.pg_url
    sys.path.insert(0, str(HERE))
    uvicorn.run(f"service:{args.serve_variant}", factory=True, host="127.0.0.1",
                port=args.port, workers=args.workers, access_log=False, log_level="warning",
                app_dir=str(HERE))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan(args.clients, args.sellers)
    log(f"issuing {args.sellers + 2} tokens, database {args.pg_url}")
    stores = Stores(args.pg_url, plan)
    log(f"  {stores.issue_seconds:.1f} s")
    rows: list[Row] = []
    folder = Path(tempfile.mkdtemp(prefix="ledger-service-bench-"))

    def both_loops(mode: str, sender: Callable[[], Send], server: Server | None) -> None:
        """The closed loop, then the open loop at a fraction of its rate (same store:
        the open loop goes on with new sellers and new reports)."""
        counter = SellerCounter(plan.sellers)
        closed = measure(mode, plan, sender, server, args, counter, None)
        rows.append(closed)
        if args.open_loop and closed.per_s > 0:
            rows.append(measure(mode, plan, sender, server, args, counter,
                                args.open_fraction * closed.per_s))

    log("in-process: Ledger.send")
    inproc = InProcess(stores.fresh("inprocess"), args.clients)
    try:
        both_loops("in-process", inproc.sender, None)
    finally:
        inproc.close()

    modes = [(w, "") for w in args.workers]
    if args.token_variant:
        modes.append((max(args.workers), "cached_tokens_app"))
    for workers, variant in modes:
        mode = f"serve workers={workers}" + (", tokens cached" if variant else "")
        log(mode)
        url = stores.fresh(f"serve{workers}{'_cached' if variant else ''}")
        with serving_workers(url, workers, folder, variant) as server:
            http = OverHttp(server.base, stores.token_of)
            try:
                if variant:
                    rows.append(measure(mode, plan, http.sender, server, args,
                                        SellerCounter(plan.sellers), None))
                else:
                    both_loops(mode, http.sender, server)
            finally:
                http.close()
    lookup = time_token_lookups(stores.tokens_url, stores.token_of)
    base = next(r.per_s for r in rows if r.mode == "in-process" and r.loop == "closed")
    for row in rows:
        if row.loop == "closed":
            row.ratio = row.per_s / base if base else None
    for log_file in folder.iterdir():
        log_file.unlink()
    folder.rmdir()
    with psycopg.connect(stores.backend.store.conninfo()) as conn:
        pg_settings = {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))
                                              ).fetchone()[0])  # type: ignore[index]
                       for name in ("synchronous_commit", "max_connections")}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "store": stores.backend.describe(),
        "postgres": pg_settings,
        "config": {k: v for k, v in vars(args).items() if k not in ("serve_variant", "port")},
        "rows": [asdict(r) for r in rows],
        "token_lookup": lookup,
    }


def table(report: dict[str, Any]) -> str:
    rows = [Row(**r) for r in report["rows"]]
    config = report["config"]
    cpu_head = f"{'cores c/s/pg/other':>19} {'CPU ms':>7}"
    out = [f"{report['date']}  {report['cpus']} CPUs  Python {report['python']}  "
           f"{report['store']} ({', '.join(f'{k}={v}' for k, v in report['postgres'].items())})",
           f"{config['clients']} clients, {config['duration']:g} s windows after "
           f"{config['warmup']:g} s warm-up. load1: 1-minute load average at the window's end."
           " cores: CPU used in the window by the client process / server processes / "
           "PostgreSQL / other work on the machine; CPU ms: client+server+PostgreSQL CPU per "
           "accepted command.", "",
           "Sustained throughput (closed loop: each client sends as soon as it has an answer)",
           "",
           f"{'mode':<31} {'commands':>8} {'accepted/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
           f"{'vs in-process':>13} {'load1':>6} {cpu_head}"]
    for r in (r for r in rows if r.loop == "closed"):
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        mark = "" if r.mode == "in-process" or r.ratio is None else (
            " ok" if r.ratio >= RATIO_AIM else " <0.70")
        out.append(f"{r.mode:<31} {r.commands:>8} {r.per_s:>10.0f} {r.p50_ms:>7.1f} "
                   f"{r.p99_ms:>7.1f} {ratio + mark:>13} {r.load1:>6.2f} {cpu_cells(r)}"
                   + (" (ran out of sellers)" if r.exhausted else ""))
    opened = [r for r in rows if r.loop == "open"]
    if opened:
        out += ["", f"Open loop at {config['open_fraction']:.0%} of each mode's peak (Poisson "
                    f"arrivals; latency from arrival; aim p99 < {OPEN_LOOP_AIM_MS:g} ms)", "",
                f"{'mode':<31} {'target/s':>8} {'achieved/s':>10} {'p50 ms':>7} "
                f"{'p99 ms':>7} {'aim':>13} {'load1':>6} {cpu_head}"]
        for r in opened:
            aim = "ok" if r.p99_ms < OPEN_LOOP_AIM_MS else "above"
            out.append(f"{r.mode:<31} {r.target_per_s or 0:>8.0f} {r.per_s:>10.0f} "
                       f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {aim:>13} {r.load1:>6.2f} "
                       f"{cpu_cells(r)}" + (" (ran out of sellers)" if r.exhausted else ""))
    lookup = report.get("token_lookup")
    if lookup:
        out += ["", f"One token look-up alone (tokens.find, in-process, one at a time, "
                    f"{lookup['count']} of them): median {lookup['median_ms']:.2f} ms, "
                    f"p99 {lookup['p99_ms']:.2f} ms, {lookup['cpu_ms']:.2f} ms client CPU each"]
    refusals = [f"{r.mode} ({r.loop}): {r.refused}" for r in rows if r.refused]
    if refusals:
        out += ["", "Refused or replayed inside the windows (the mix expects none):",
                *refusals]
    return "\n".join(out)


def time_token_lookups(url: str, token_of: dict[str, str], count: int = 1000
                       ) -> dict[str, float]:
    """What one `tokens.find` (the service's per-request look-up) costs, unloaded."""
    chosen = list(token_of.values())[:count]
    seconds: list[float] = []
    with Ledger.open(url) as ledger:
        store = ledger.app.store
        cpu = own_cpu()
        for token in chosen:
            began = time.perf_counter()
            if tokens.find(store, token) is None:
                raise RuntimeError("an issued token was not found")
            seconds.append(time.perf_counter() - began)
        cpu = own_cpu() - cpu
    ms = sorted(1000 * s for s in seconds)
    return {"count": len(ms), "median_ms": statistics.median(ms),
            "p99_ms": ms[int(0.99 * (len(ms) - 1))], "cpu_ms": 1000 * cpu / len(ms)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pg-url",
                        default="postgresql://postgres@127.0.0.1:5432/ledger_service_bench",
                        help="PostgreSQL database to DROP and create again for the run")
    add_load_options(parser)
    parser.add_argument("--workers", default="1,2,4",
                        help="comma-separated worker counts for `ledger serve` (1,2,4)")
    parser.add_argument("--no-token-variant", dest="token_variant", action="store_false",
                        help="skip the run with the token look-up cached")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 s windows, 1 s warm-up, workers 1,2")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--serve-variant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 5.0), min(args.warmup, 1.0)
        args.workers = "1,2" if args.workers == "1,2,4" else args.workers
        args.sellers = min(args.sellers, 1500)
    if not args.serve_variant:
        args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    else:
        args.workers = int(args.workers)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_variant:
        return serve_variant(args)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
