"""Latency of /healthz and of commands on the real `ledger serve` while clients hammer a
read with `?after=` far beyond the store's head (issue 11: each such read used to hold a
worker thread for 5 s).

    python bench/waiting.py                       # SQLite in a temporary folder
    python bench/waiting.py --db postgresql://postgres@127.0.0.1:5432/postgres?schema=b1

Prints one JSON line: clients, the p50/p99/max of 100 /healthz and 30 commands, and
what the hammering clients were answered.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
from collections import Counter
from pathlib import Path

from common import add_token, campaign_command, hammering, serving, timed
from common import latency_figures as figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="store URL (default: a new SQLite file)")
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{folder}/bench.db"
        seller, operator = add_token(url, "seller", "seller-1"), add_token(url, "operator", "o")
        with serving(url, Path(folder) / "serve.log") as server:
            host, port = server.base.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            with hammering(server.base, "/v1/campaigns?after=1000000000", seller,
                           args.clients) as statuses:
                health = [timed(conn, "GET", "/healthz")[1] for _ in range(100)]
                commands = [timed(conn, "POST", "/v1/commands", operator,
                                  campaign_command(f"bench-{i}"))[1] for i in range(30)]
            conn.close()
    print(json.dumps({"db": url.split(":")[0], "clients": args.clients,
                      "healthz": figures(health), "commands": figures(commands),
                      "hammering_answers": dict(Counter(statuses))}))


if __name__ == "__main__":
    main()
