"""Race commands from real processes: each opens its own Ledger, then all send at once.

`Racers` keeps N spawned worker processes for a whole test module (spawning is the slow
part). Each round, every worker opens a Ledger on the given URL, waits at a shared barrier,
sends its commands (one at a time, or with `send_many` in groups of `group_size`), and
reports the results.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from datetime import datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Lock
from typing import Any

from ledger import FixedClock, Ledger

Json = dict[str, Any]
TIMEOUT = 60
Task = tuple[str, str, list[Json], bool, int]  # url, now, commands, open at once, group size


def _serve(index: int, tasks: Queue[Task | None], results: Queue[tuple[int, Any]],
           barrier: Barrier, open_lock: Lock) -> None:
    while (task := tasks.get()) is not None:
        try:
            results.put((index, _round(*task, barrier=barrier, open_lock=open_lock)))
        except BaseException:
            barrier.abort()  # release the others at once instead of after TIMEOUT
            results.put((index, traceback.format_exc()))


def _round(url: str, now: str, commands: list[Json], open_at_once: bool, group_size: int, *,
           barrier: Barrier, open_lock: Lock) -> list[Json]:
    clock = FixedClock(datetime.fromisoformat(now))
    if open_at_once:
        barrier.wait(TIMEOUT)
        ledger = Ledger.open(url, clock=clock, pool_size=1)
    else:
        with open_lock:  # opening at once is its own test (test_ledgers_open_at_once...)
            ledger = Ledger.open(url, clock=clock, pool_size=1)
    with ledger:
        if not open_at_once:
            barrier.wait(TIMEOUT)
        if group_size:
            return list(ledger.send_many(commands, group_size=group_size))
        return [ledger.send(cmd) for cmd in commands]


class Racers:
    """N worker processes (started with 'spawn'), reused round after round."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.barrier = ctx.Barrier(n)
        self.open_lock = ctx.Lock()  # kept: a child rebuilds it after start() returns
        self.results: Queue[tuple[int, Any]] = ctx.Queue()
        self.tasks: list[Queue[Task | None]] = [ctx.Queue() for _ in range(n)]
        self.processes = [
            ctx.Process(target=_serve, daemon=True,
                        args=(i, self.tasks[i], self.results, self.barrier, self.open_lock))
            for i in range(n)
        ]
        for process in self.processes:
            process.start()

    def race(self, url: str, now: datetime, batches: list[list[Json]], *,
             open_at_once: bool = False, group_size: int = 0) -> list[list[Json]]:
        """Worker i sends batches[i] (in groups of `group_size` if set); returns each
        worker's results in order."""
        return self._run([(url, now.isoformat(), batch, open_at_once, group_size)
                          for batch in batches])

    def race_at(self, url: str, batches: list[tuple[datetime, list[Json]]], *,
                group_size: int = 0) -> list[list[Json]]:
        """Like `race`, but worker i's clock stands at batches[i][0] (writers whose clocks
        disagree: one still before a deadline, another already after it)."""
        return self._run([(url, now.isoformat(), batch, False, group_size)
                          for now, batch in batches])

    def _run(self, rounds: list[Task]) -> list[list[Json]]:
        assert len(rounds) == self.n
        for tasks, task in zip(self.tasks, rounds, strict=True):
            tasks.put(task)
        found = self._collect()
        # The worker that failed first aborts the barrier; show its error, not the others'.
        failures = sorted((text for text in found.values() if isinstance(text, str)),
                          key=lambda text: "BrokenBarrierError" in text)
        if failures:
            self.barrier.reset()
        assert not failures, failures[0]
        return [found[i] for i in range(self.n)]

    def _collect(self) -> dict[int, Any]:
        found: dict[int, Any] = {}
        deadline = time.monotonic() + 2 * TIMEOUT
        while len(found) < self.n:
            dead = [p.pid for p in self.processes if not p.is_alive()]
            assert not dead, f"racers died: {dead}"
            assert time.monotonic() < deadline, "racers stuck"
            try:
                index, result = self.results.get(timeout=0.5)
            except queue.Empty:
                continue
            found[index] = result
        return found

    def race_one_each(self, url: str, now: datetime, commands: list[Json]) -> list[Json]:
        """One command per worker, all at once; their results in order."""
        return [results[0] for results in self.race(url, now, [[cmd] for cmd in commands])]

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
