"""Commands/s through one `ledger serve --config` with 1, 2 and 4 markets, each market its
own PostgreSQL server, in one run; and the CPU each part used.

For each count N of `--markets` (1,2,4): N fresh PostgreSQL servers of our own (bench/common
`pg_servers`, durable: fsync and synchronous commit on, as in production), a markets file
naming them (tokens kept on the first), and the real `ledger serve --config FILE --workers
W` on a free port (it follows every market's read models, as it does by default). Then
`--clients` threads (spread evenly over the markets, each on its own keep-alive
`http.client` connection) POST `create_campaign` commands (each a new campaign: one event,
one command row, one hash row, in one transaction) to `/v1/markets/CODE/commands` for
`--duration` seconds after `--warmup`.

Printed per N: accepted commands/s (all markets, and the slowest market's), p50/p99
latency, and the cores used during the window by the serve processes (workers and their
followers), each PostgreSQL server, the client threads (this process), and anything else
on the machine; then CPU milliseconds per command for serve and for PostgreSQL (summed over
servers); the WAL bytes each command wrote (`pg_current_wal_lsn()` before and after, summed
over servers); and how far the slowest read model was behind its store's head at the end
(the follower keeps up if that stays small). The ratio of N markets' rate to one market's
is the scaling figure; the CPU columns say what used up the machine.

    python bench/markets.py                   # 1,2,4 markets, 15 s windows: ~3 minutes
    python bench/markets.py --quick           # 1,2 markets, 4 s windows
    python bench/markets.py --markets 1,2,4,8 --workers 4 --clients 32 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from common import (
    PgServer,
    Server,
    add_token,
    campaign_command,
    emit,
    environment,
    live_calendar,
    log,
    pg_servers,
    serving,
)
from loadgen import cpu_seconds, machine_busy, own_cpu  # CPU readings over /proc

CODES = ["th", "vn", "id", "my", "ph", "sg", "tw", "br"]


@dataclass
class Tally:
    """What the clients of one market saw inside the window."""

    accepted: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)


def client(base: str, code: str, token: str, name: str, stop: threading.Event,
           counting: threading.Event, tally: Tally, lock: threading.Lock) -> None:
    """POST new campaigns to one market until `stop`; count those done while `counting`."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    now = datetime.now(UTC).replace(microsecond=0)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    i = 0
    while not stop.is_set():
        i += 1
        body = json.dumps(campaign_command(f"{name}-{i}", live_calendar(now)))
        started = time.perf_counter()
        conn.request("POST", f"/v1/markets/{code}/commands", body=body, headers=headers)
        response = conn.getresponse()
        ok = response.status == 200 and json.loads(response.read()).get("ok") is True
        took = time.perf_counter() - started
        if counting.is_set() and not stop.is_set():
            with lock:
                if ok:
                    tally.accepted += 1
                    tally.latencies.append(took * 1000)
                else:
                    tally.refused += 1
    conn.close()


def measure(n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One row: N markets on N servers of their own, through one `ledger serve`."""
    with pg_servers(n, prefix=f"m{n}-", durable=True) as started:
        markets = dict(zip(CODES[:n], started, strict=False))
        urls = {code: server.create_database("ledger") for code, server in markets.items()}
        config = folder / f"markets-{n}.toml"
        config.write_text(f'tokens_url = "{urls[CODES[0]]}?schema=tokens"\n' + "".join(
            f'[markets.{code}]\nurl = "{url}"\n' for code, url in urls.items()))
        token = add_token("", "operator", "bench-ops", config=str(config))
        argv = [sys.executable, "-m", "ledger", "--config", str(config), "serve",
                "--workers", str(args.workers)]
        with serving("", folder / f"serve-{n}.log", within=120,
                     command=lambda port: [*argv, "--port", str(port)]) as server:
            return drive(n, markets, urls, server, token, args)


def drive(n: int, markets: dict[str, PgServer], urls: dict[str, str], server: Server,
          token: str, args: argparse.Namespace) -> dict[str, Any]:
    stop, counting, lock = threading.Event(), threading.Event(), threading.Lock()
    tallies = {code: Tally() for code in markets}
    threads = [threading.Thread(target=client, daemon=True, args=(
        server.base, code, token, f"{code}{i}", stop, counting, tallies[code], lock))
        for i in range(args.clients) for code in [list(markets)[i % n]]]
    for thread in threads:
        thread.start()
    time.sleep(args.warmup)
    before = sample(markets, server)
    wal_before = {code: wal_position(url) for code, url in urls.items()}
    began = time.perf_counter()
    counting.set()
    time.sleep(args.duration)
    stop.set()
    wall = time.perf_counter() - began
    after = sample(markets, server)
    wal = sum(wal_position(url) - wal_before[code] for code, url in urls.items())
    lags = {code: follower_lag(url) for code, url in urls.items()}
    for thread in threads:
        thread.join(timeout=60)
    latencies = sorted(x for t in tallies.values() for x in t.latencies)
    accepted = sum(t.accepted for t in tallies.values())
    cores = {part: (after[part] - before[part]) / wall for part in after}
    pg_cores = sum(v for k, v in cores.items() if k.startswith("pg:"))
    return {
        "markets": n, "workers": args.workers, "clients": args.clients,
        "seconds": round(wall, 2), "accepted": accepted,
        "per_s": round(accepted / wall, 1),
        "slowest_market_per_s": round(min(t.accepted for t in tallies.values()) / wall, 1),
        "refused": sum(t.refused for t in tallies.values()),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None,
        "cores": {k: round(v, 2) for k, v in cores.items()},
        "serve_cpu_ms_per_command": round(cores["serve"] * 1000 * wall / max(accepted, 1), 2),
        "pg_cpu_ms_per_command": round(pg_cores * 1000 * wall / max(accepted, 1), 2),
        "wal_bytes_per_command": round(wal / max(accepted, 1)),
        "follower_lag_at_end": lags,
    }


def wal_position(url: str) -> int:
    """The server's WAL insert position, in bytes."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def follower_lag(url: str) -> int:
    """Events the slowest read model is behind the store's head (the follower keeps up
    if this stays small)."""
    with psycopg.connect(url) as conn:
        head = conn.execute("SELECT COALESCE(MAX(notification_id), 0) FROM ledger_events"
                            ).fetchone()
        low = conn.execute("SELECT MIN(notification_id) FROM ledger_tracking WHERE "
                           "application_name LIKE 'Ledger/%' AND application_name NOT LIKE "
                           "'Ledger/%/%'").fetchone()
    return int(head[0] if head else 0) - int(low[0] if low and low[0] is not None else 0)


def sample(markets: dict[str, PgServer], server: Server) -> dict[str, float]:
    """CPU seconds so far: serve's processes, each PostgreSQL server, this process, all."""
    found = {"serve": sum(cpu_seconds(server.pids()).values()), "clients": own_cpu()}
    for code, pg in markets.items():
        found[f"pg:{code}"] = sum(cpu_seconds(pg.pids()).values())
    found["machine"] = machine_busy()
    return found


def table(report: dict[str, Any]) -> None:
    rows = report["rows"]
    lines = ["markets  cmd/s  slowest-market/s  vs-1  p50 ms  p99 ms  cores: serve  "
             "postgres (each)  clients  other  | ms CPU/cmd serve  postgres  | WAL B/cmd"
             "  follower lag"]
    base = rows[0]["per_s"] or 1
    for r in rows:
        c = r["cores"]
        pg = [v for k, v in c.items() if k.startswith("pg:")]
        other = c["machine"] - c["serve"] - sum(pg) - c["clients"]
        lines.append(
            f"{r['markets']:>7}  {r['per_s']:>5.0f}  {r['slowest_market_per_s']:>16.0f}  "
            f"{r['per_s'] / base:>4.2f}  {r['p50_ms']:>6}  {r['p99_ms']:>6}  "
            f"{c['serve']:>12.2f}  {sum(pg):>5.2f} ({' '.join(f'{v:.2f}' for v in pg)})  "
            f"{c['clients']:>7.2f}  {max(0.0, other):>5.2f}  | "
            f"{r['serve_cpu_ms_per_command']:>16}  {r['pg_cpu_ms_per_command']:>8}  | "
            f"{r['wal_bytes_per_command']:>9}  "
            f"{' '.join(str(v) for v in r['follower_lag_at_end'].values())}")
    print("\n".join(lines))
    print(f"(machine: {report['environment']['cpus']} CPUs, commit "
          f"{report['environment']['commit']})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", default="1,2,4",
                        help="market counts to measure, each on that many servers (1,2,4)")
    parser.add_argument("--workers", type=int, default=2, help="serve's workers (2)")
    parser.add_argument("--clients", type=int, default=16, help="client threads (16)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds counted (15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds first (3)")
    parser.add_argument("--quick", action="store_true", help="1,2 markets, 4 s windows")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--save", metavar="FILE", help="also write the report as JSON here")
    parser.add_argument("--verbose", action="store_true", help="progress lines with --json")
    args = parser.parse_args(argv)
    if args.quick:
        args.markets, args.duration, args.warmup = "1,2", 4.0, 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.markets.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-markets-") as folder:
        for n in counts:
            log(f"{n} market(s) on {n} server(s): serve --workers {args.workers}, "
                f"{args.clients} clients, {args.duration:g} s", args)
            rows.append(measure(n, args, Path(folder)))
    emit(args, {"environment": environment(), "rows": rows}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
