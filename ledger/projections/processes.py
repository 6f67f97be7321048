"""A parallel rebuild's helper processes: start, watch, report progress, die with the parent."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from queue import Empty
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment, get_topic, resolve_topic

from ledger.projections.base import ReadModel
from ledger.projections.catchup import CatchUp, Progress
from ledger.projections.rebuild import rebuild_shadow
from ledger.projections.share import RebuildFailed, die_with_parent
from ledger.store.application import LedgerApplication
from ledger.store.readstore import NAME, ReadStore


class Helpers:
    """Rebuild groups of read models in helper processes while this one rebuilds the
    first group; progress is the slowest group's position. A helper that fails stops the
    others (their rebuilds resume next time, like an interrupted one)."""

    def __init__(self, projector: CatchUp, groups: list[list[ReadModel]],
                 restart: bool) -> None:
        self.projector, self.groups, self.restart = projector, groups, restart
        self.positions = [0] * len(groups)
        self.stop = 0

    def run(self, progress: Progress | None) -> int:
        context = multiprocessing.get_context("spawn")
        queue: Any = context.Queue()
        env = dict(self.projector.app.env)
        reads = self.projector.read_store
        read_env = None if reads is None else dict(reads.env)
        topics = [[get_topic(type(m)) for m in group] for group in self.groups]
        helpers = [context.Process(
            target=rebuild_in_helper, daemon=True,
            args=(env, topics[i], self.restart, self.projector.options(), queue, i,
                  os.getpid(), read_env))
            for i in range(1, len(self.groups))]
        failures: list[str] = []
        completed = False
        try:
            for helper in helpers:
                helper.start()

            def mine(position: int, stop: int) -> None:
                self.positions[0], self.stop = position, max(self.stop, stop)
                self.drain(queue, failures, progress, block=False)

            done = rebuild_shadow(self.projector, self.groups[0], restart=self.restart,
                                  progress=mine)
            self.positions[0] = self.stop = max(self.stop, self.positions[0])
            finished = 1
            while finished < len(self.groups) and not failures:
                finished += self.drain(queue, failures, progress, block=True)
                if not failures and not any(h.is_alive() for h in helpers):
                    # All gone: take what they sent last (`empty()` can miss it), then judge.
                    finished += self.drain(queue, failures, progress, block=True)
                    if finished < len(self.groups) and not failures:
                        codes = [h.exitcode for h in helpers]
                        failures.append(f"a rebuild helper exited with code(s) {codes}")
            completed = not failures
        finally:
            for helper in helpers:
                if helper.pid is None:
                    continue  # never started
                if helper.is_alive() and not completed:
                    helper.terminate()
                helper.join(timeout=30)
        if failures:
            raise RebuildFailed("; ".join(failures))
        return done

    def drain(self, queue: Any, failures: list[str], progress: Progress | None,
              *, block: bool) -> int:
        """Take the helpers' messages; the number of groups that finished."""
        finished = 0
        while True:
            try:
                kind, index, *rest = queue.get(timeout=0.5) if block else queue.get_nowait()
            except Empty:
                return finished
            block = False
            if kind == "progress":
                self.positions[index], self.stop = rest[0], max(self.stop, rest[1])
            elif kind == "done":
                self.positions[index] = self.stop
                finished += 1
            else:
                failures.append(f"rebuilding {', '.join(m.name for m in self.groups[index])} "
                                f"failed: {rest[0]}")
            if progress is not None and self.stop:
                progress(min(self.positions), self.stop)


def rebuild_in_helper(env: dict[str, str], topics: list[str], restart: bool,
                      options: dict[str, int], queue: Any, index: int, parent: int,
                      read_env: dict[str, str] | None = None) -> None:
    """A helper process: rebuild these read models, reporting progress on `queue`.
    It stops after the page it is on if the rebuild that started it is gone (killed with
    SIGKILL, say): an orphan would go on loading the store and swap its half in later."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops helpers itself
    die_with_parent()

    def report(position: int, stop: int) -> None:
        if os.getppid() != parent:
            raise Orphaned
        queue.put(("progress", index, position, stop))

    try:
        if os.getppid() != parent:
            raise Orphaned
        app = LedgerApplication(env=env)
        reads = None if read_env is None else ReadStore(
            InfrastructureFactory.construct(Environment(NAME, read_env)), read_env, "")
        try:
            projector = CatchUp(app, [resolve_topic(t) for t in topics], reads=reads,
                                **options)
            rebuild_shadow(projector, projector.models, restart=restart, progress=report)
        finally:
            app.close()
            if reads is not None:
                reads.close()
    except Orphaned:
        sys.exit(1)  # nobody is left to tell; the next rebuild resumes from our pages
    except BaseException as error:  # reported by the parent, as one line
        queue.put(("failed", index, f"{type(error).__name__}: {error}"))
        queue.close()
        queue.join_thread()
        sys.exit(1)
    queue.put(("done", index))


class Orphaned(BaseException):
    """The rebuild that started this helper is gone."""
