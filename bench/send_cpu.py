"""CPU per command of `ledger send` on bench/group.py's feed: what the grouped write path costs
in Python, without the disk's flushes (which make group.py's rates swing on a shared machine).

For each backend and round, a fresh store gets group.py's feed setup (`--reports /
--reports-each` approved registrations, not timed); then a `ledger send FILE` child sends the
`--reports` reports and its CPU (user + system, from the kernel's accounting of the reaped
child) is read, minus the CPU of the same command on an empty file (the interpreter's start
and the imports). `--tree DIR` (repeatable) runs the same against another checkout's `ledger`
package (e.g. `git archive BASE | tar -x -C /tmp/base`), alternating with this one, so a
before/after comparison shares the machine's state.

    python bench/send_cpu.py                                  # both backends, 3 rounds
    python bench/send_cpu.py --tree /tmp/base --rounds 5 --json
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from common import AFTER_CAMPAIGN, IN_WINDOW, emit, environment, iso, log
from psycopg import sql
from workload import feed, feed_setup, lines, set_up

HERE = Path(__file__).resolve().parents[1]  # this checkout: its `ledger` package


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def send_cpu(tree: Path, url: str, source: Path) -> tuple[float, bytes]:
    """The CPU seconds of one `ledger send SOURCE` of `tree`'s ledger, and its output."""
    before = children_cpu()
    done = subprocess.run([sys.executable, "-m", "ledger", "--db", url, "--now",
                           iso(AFTER_CAMPAIGN), "send", str(source)], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ledger send ({tree}) exited {done.returncode}: "
                           f"{done.stderr.decode()[-500:]}")
    return children_cpu() - before, done.stdout


@contextmanager
def fresh_store(backend: str, args: argparse.Namespace, folder: Path) -> Iterator[str]:
    """A new store with the feed's setup done."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / f'send-cpu-{uuid.uuid4().hex[:8]}.db'}"
        set_up(url, IN_WINDOW, feed_setup(args.registrations))
        yield url
        return
    schema = f"bench_send_cpu_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            url = f"{args.pg_url}?schema={schema}"
            set_up(url, IN_WINDOW, feed_setup(args.registrations))
            yield url
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def measure(args: argparse.Namespace, trees: list[Path], folder: Path) -> list[dict[str, Any]]:
    source, empty = folder / "feed.jsonl", folder / "empty.jsonl"
    source.write_bytes(b"".join(lines(feed(args.registrations, args.reports))))
    empty.write_bytes(b"")
    spent: dict[tuple[str, Path], list[float]] = {}
    for round_ in range(args.rounds):
        for backend in args.backends.split(","):
            for tree in trees:
                with fresh_store(backend, args, folder) as url:
                    start, _ = send_cpu(tree, url, empty)
                    total, out = send_cpu(tree, url, source)
                accepted = out.count(b'"ok": true')
                if accepted != args.reports:
                    raise RuntimeError(f"{accepted} of {args.reports} reports accepted ({tree})")
                per = (total - start) / args.reports * 1e6
                spent.setdefault((backend, tree), []).append(per)
                log(f"round {round_ + 1}: {backend} {tree}: {per:.0f} us/command "
                    f"(start {start:.2f} s)", args)
    return [{"backend": backend, "tree": str(tree), "us_per_command": statistics.median(xs),
             "rounds": [round(x, 1) for x in xs]} for (backend, tree), xs in spent.items()]


def print_table(report: dict[str, Any]) -> None:
    print(f"{'backend':<9} {'us/command':>11}  rounds  tree")
    for row in report["results"]:
        print(f"{row['backend']:<9} {row['us_per_command']:>11.0f}  {row['rounds']}  "
              f"{row['tree']}")
    print(f"(median CPU of `ledger send` per report, its start taken off; "
          f"{report['reports']:,} reports; {report['environment']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--reports-each", type=int, default=5,
                        help="reports per registration (as bench/group.py)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], type=Path,
                        help="another checkout's root to measure alike (repeatable)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="schemas are created there and dropped afterwards")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", default=None, help="also write the JSON figures to this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    args.registrations = max(1, args.reports // args.reports_each)
    trees = [*(tree.resolve() for tree in args.tree), HERE]
    with tempfile.TemporaryDirectory(prefix="bench-send-cpu-") as folder:
        results = measure(args, trees, Path(folder))
    emit(args, {"results": results, "reports": args.reports, "environment": environment()},
         print_table)


if __name__ == "__main__":
    main()
