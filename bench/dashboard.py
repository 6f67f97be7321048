"""How soon an open dashboard hears of a command: the time from an accepted command's
answer to a `moved` event (read models at or past its position) on the live feed
(/dashboard/api/changes), for several listeners spread over `ledger serve --workers 2`.

    python bench/dashboard.py                       # SQLite in a temporary folder
    python bench/dashboard.py --db postgresql://postgres@127.0.0.1:5432/postgres?schema=d1

Prints one JSON line: listeners, commands, and the p50/p99/max of that delay over every
(command, listener) pair; and, to tell the two parts apart, of the time until the read
models themselves had reached the command (the follower's part, watched from the bench
every 10 ms). The page then fetches its figures (one more round trip).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import add_token, bearer, campaign_command, serving
from common import latency_figures as figures

from ledger import Ledger
from ledger.service.dashboard import READ_MODELS


def listen(base: str, token: str, seen: list[tuple[float, int]], stop: threading.Event) -> None:
    """Read the live feed, noting (time, position) of every `moved` event, until `stop`."""
    while not stop.is_set():
        with httpx.stream("GET", f"{base}/dashboard/api/changes", headers=bearer(token),
                          timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    seen.append((time.perf_counter(),
                                 json.loads(line.removeprefix("data:"))["position"]))
                if stop.is_set():
                    return


def watch(url: str, seen: list[tuple[float, int]], stop: threading.Event) -> None:
    """Note (time, lowest position) of the read models every 10 ms, until `stop`."""
    with Ledger.open(url, pool_size=1) as ledger:
        view = ledger.projector().view
        while not stop.is_set():
            seen.append((time.perf_counter(), min(view.positions(READ_MODELS).values())))
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="store URL (default: a new SQLite file)")
    parser.add_argument("--listeners", type=int, default=8)
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between commands")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{folder}/bench.db"
        operator = add_token(url, "operator", "o")
        with serving(url, Path(folder) / "serve.log", "--workers", "2") as server:
            stop = threading.Event()
            feeds: list[list[tuple[float, int]]] = [[] for _ in range(args.listeners)]
            threads = [threading.Thread(target=listen, args=(server.base, operator, seen, stop),
                                        daemon=True) for seen in feeds]
            models: list[tuple[float, int]] = []
            threads.append(threading.Thread(target=watch, args=(url, models, stop), daemon=True))
            for thread in threads:
                thread.start()
            time.sleep(2)  # every listener connected and told the positions now
            sent: list[tuple[float, int]] = []
            with httpx.Client(base_url=server.base, headers=bearer(operator)) as client:
                for i in range(args.commands):
                    answer = client.post("/v1/commands", json=campaign_command(f"dash-{i}"))
                    sent.append((time.perf_counter(), int(answer.json()["position"])))
                    time.sleep(args.pause)
            time.sleep(1.5)
            stop.set()
    # An event may beat the command's own answer to the client: that counts as 0.
    delays = [max(0.0, next(t for t, position in seen if position >= wanted) - at)
              for at, wanted in sent for seen in feeds
              if any(position >= wanted for _, position in seen)]
    missed = len(sent) * len(feeds) - len(delays)
    followed = [max(0.0, next(t for t, position in models if position >= wanted) - at)
                for at, wanted in sent if any(position >= wanted for _, position in models)]
    print(json.dumps({
        "db": url.split(":")[0], "workers": 2, "listeners": args.listeners,
        "commands": args.commands, "missed": missed,
        "command_to_event": figures(delays),
        "command_to_read_models": figures(followed)}))


if __name__ == "__main__":
    main()
