"""A rebuild's fold events shared with helper processes (`rebuild --jobs N`).

Nine events in ten of a season are performance reports, and the two read models that read
them only add their amounts to cells (`@handles(..., fold=True)`): the order in which
reports are added does not matter, and they read nothing of their registration but its
campaign and seller, which never change. So a rebuild from the first event splits the
store's positions into chunks of one rebuild page and hands out each chunk once, first
come first served (a counter in shared memory):

- this process (the *main* one) reads every chunk in turn. A chunk it takes itself is read
  and applied whole, as a one-process rebuild does. From a chunk a helper took it reads
  every event but the fold events (filtered by topic in the database), and applies them
  in order as before;
- a *helper* (forked where safe, so it starts in milliseconds with everything imported;
  see `start_method`) takes the next free chunks. For each it applies the fold events to
  its own cells, having first applied the *seed* events up to the chunk's end
  (`ReadModel.fold_seeds`: the events that put the state rows a fold reads, kept as just
  their `fold_columns`);
- a helper sends its cells, the aggregates they came from and the number of events, once
  per *segment* (the chunks between two of the main process's writes). Before each write
  the main process waits for the segments up to the position it writes and adds their
  cells to its own; `settle()` then folds them into sum rows as ever.

Invariants:

- every event is applied by exactly one process: a chunk has one owner (the counter),
  and the main process leaves out of a helper's chunk exactly the topics the helper reads;
- a position is written only with the cells of every fold event up to it: the main process
  writes only at segment ends, after taking the segments before; so a rebuild killed at
  any moment resumes from a position whose rows hold every event up to it, and nothing
  twice;
- a helper that dies fails the rebuild in one line (`RebuildFailed`), like a group helper;
  a helper stops when its rebuild is gone (`die_with_parent`, and a check per chunk);
- a fold event counts only when a seed of its aggregate is stored before it, as in one
  process (where the state row is not there yet): the helper knows where each seed is
  (`Folder.born`), since it applied them all up to the chunk's end. No command stores a
  report before its registration; a store imported by hand may.

Only a rebuild that starts from the first event shares (a resumed one runs in one process:
the helper would need the state rows before the resume point).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.utils import get_topic, resolve_topic

from ledger.projections.base import FoldRows, ReadModel
from ledger.projections.decode import Decoded, Decoder, FoldRuns, Routes
from ledger.projections.tables import Batch, Key, Row, Table
from ledger.store.application import LedgerApplication
from ledger.store.turns import TurnTakingDatastore

SEED_PAGE = 5_000  # seed events read per query by a helper
WAIT = 0.5  # seconds between looks at a helper that has not sent what is waited for

Cells = dict[str, dict[str, dict[Key, list[Any]]]]  # read model -> group -> key -> amounts


class RebuildFailed(RuntimeError):
    """A helper process of a parallel rebuild failed (its message says why)."""


@dataclass(frozen=True)
class Plan:
    """What a rebuild of these read models can share: the topics of the fold events (every
    handler of them, in every read model of the run, is a fold) and of their seeds."""

    folds: tuple[str, ...]
    seeds: tuple[str, ...]

    @classmethod
    def of(cls, models: Sequence[ReadModel]) -> Plan | None:
        classes = {c for m in models for c, h in m.handlers.items() if getattr(h, "fold", False)}
        folds = sorted(get_topic(c) for c in classes
                       if all(getattr(m.handler(c), "fold", True) for m in models))
        if not folds:
            return None
        seeds = sorted({get_topic(c) for m in models if m.fold_seeds for c in m.fold_seeds})
        return cls(tuple(folds), tuple(seeds))


@dataclass(frozen=True)
class Chunks:
    """Positions (after, stop] in chunks of `size`, `per_segment` chunks to a segment."""

    after: int
    stop: int
    size: int
    per_segment: int

    @property
    def count(self) -> int:
        return -(-(self.stop - self.after) // self.size)

    def bounds(self, i: int) -> tuple[int, int]:
        low = self.after + i * self.size
        return low, min(self.stop, low + self.size)

    def index(self, position: int) -> int:
        """The chunk holding the event after `position`."""
        return (position - self.after) // self.size

    @property
    def segment(self) -> int:
        """Positions in a segment."""
        return self.size * self.per_segment


class Share:
    """The main process's side: owns the helpers, says who reads what, takes their cells."""

    def __init__(self, app: LedgerApplication, models: Sequence[ReadModel], plan: Plan,
                 chunks: Chunks, helpers: int, reads: Any = None) -> None:
        self.chunks = chunks
        self.method = start_method(app, reads or app)  # "fork" or "spawn"
        context: Any = multiprocessing.get_context(self.method)
        self.counter: Any = context.Value("q", 0)
        self.owners: Any = context.Array("i", chunks.count, lock=False)  # 0: main, k: helper
        self.pipes: list[Any] = []
        self.processes: list[Any] = []
        self.stashed: list[dict[int, tuple[Cells, list[str], int]]] = []
        self.merged = -1  # the last segment taken
        self.ended: set[int] = set()  # helpers whose pipe is closed
        self.exclude = (plan.folds, False)
        env = dict(app.env)
        names = [get_topic(type(m)) for m in models]
        for index in range(1, helpers + 1):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=fold_in_helper, daemon=True,
                args=(env, names, plan, chunks, self.counter, self.owners, sender, index,
                      os.getpid()))
            self.pipes.append(receiver)
            self.processes.append(process)
            self.stashed.append({})
            process.start()
            sender.close()

    def topics(self, position: int) -> tuple[int, tuple[Sequence[str], bool] | None]:
        """Where the chunk holding the event after `position` ends, and what this process
        reads of it (None: all of it; it takes the chunk if nobody has)."""
        i = self.chunks.index(position)
        with self.counter.get_lock():
            if self.counter.value <= i:
                self.counter.value = i + 1
        return self.chunks.bounds(i)[1], (self.exclude if self.owners[i] else None)

    def at_segment_end(self, position: int) -> bool:
        chunks = self.chunks
        return position >= chunks.stop or (position - chunks.after) % chunks.segment == 0

    def take(self, position: int) -> tuple[Cells, list[str], int]:
        """The helpers' cells, aggregates and event count for every segment ending at or
        before `position`, waiting for them."""
        cells: Cells
        chunks, cells, count = self.chunks, {}, 0
        aids: list[str] = []
        last = (position - chunks.after) // chunks.segment - 1
        if position >= chunks.stop:
            last = (chunks.count - 1) // chunks.per_segment
        for segment in range(self.merged + 1, last + 1):
            first = segment * chunks.per_segment
            owners = {self.owners[i] for i in range(first, min(chunks.count,
                                                              first + chunks.per_segment))}
            for helper in sorted(owners - {0}):
                part, ids, n = self.wait(helper, segment)
                add_cells(cells, part)
                aids.extend(ids)
                count += n
            self.merged = segment
        return cells, aids, count

    def drain(self) -> None:
        """Take what the helpers have sent (so that they never wait on a full pipe)."""
        for index, pipe in enumerate(self.pipes, start=1):
            while index not in self.ended and pipe.poll():
                self.receive(index)

    def wait(self, helper: int, segment: int) -> tuple[Cells, list[str], int]:
        stash = self.stashed[helper - 1]
        pipe, process = self.pipes[helper - 1], self.processes[helper - 1]
        while segment not in stash:
            if helper in self.ended or (not pipe.poll(WAIT) and not process.is_alive()
                                        and not pipe.poll()):
                # Gone without sending it: killed, or out of memory, say.
                process.join(timeout=5)
                raise RebuildFailed(
                    f"a rebuild helper exited with code(s) [{process.exitcode}]")
            if pipe.poll():
                self.receive(helper)
        return stash.pop(segment)

    def receive(self, helper: int) -> None:
        try:
            message = self.pipes[helper - 1].recv()
        except EOFError:  # it has sent all it will send
            self.ended.add(helper)
            return
        if message[0] == "failed":
            raise RebuildFailed(f"a rebuild helper failed: {message[1]}")
        _, segment, cells, aids, count = message
        self.stashed[helper - 1][segment] = (cells, aids, count)

    def counts(self) -> tuple[int, int]:
        """The chunks, and how many of them helpers took."""
        return self.chunks.count, sum(1 for owner in self.owners if owner)

    def close(self) -> None:
        """Stop the helpers that are still running (after a failure) and reap them all."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=30)
        for pipe in self.pipes:
            pipe.close()


def start_method(*sides: Any) -> str:
    """How helpers start: forked (in milliseconds, everything imported), or spawned (a new
    interpreter: ~0.3-1 s of imports, which a rebuild of 100k events cannot win back).

    PostgreSQL: forked. SQLite: forked only when this process has no file descriptor open
    on the store's files once its pools' idle connections are closed, and runs no other
    thread; else spawned. SQLite keeps per-process bookkeeping of the locks on each file
    it has open, which a forked child inherits, and a connection the child opened to the
    same file would trust it (SQLite: never carry an open database across fork): its reads
    could go unprotected against the parent's checkpoints. With no descriptor open on the
    file, SQLite holds no bookkeeping for it (it drops a file's entry when its last
    descriptor closes), so the child starts as clean as a spawned one. The parent's pools
    open new connections when next asked."""
    stores = [getattr(side.factory, "datastore", None) for side in sides]
    if not all(isinstance(s, SQLiteDatastore | PostgresDatastore) for s in stores):
        return "spawn"  # a datastore of another kind: nothing known of it
    sqlite = list({id(s): s for s in stores if isinstance(s, SQLiteDatastore)}.values())
    if not sqlite:
        return "fork"
    if threading.active_count() == 1 and all(released(store) for store in sqlite):
        return "fork"
    return "spawn"


def released(store: SQLiteDatastore) -> bool:
    """Close the pool's idle connections; whether no descriptor of this process is then
    open on the database file, its WAL, its shared-memory file or its writers' lock file
    (Linux: /proc/self/fd)."""
    pool = store.pool
    try:  # the library's pool (eventsourcing 9.5): its idle connections, under its lock
        with pool._put_condition:
            if pool._in_use:
                return False
            while pool._pool:
                pool._pool.popleft().close()
    except AttributeError:  # another version of the pool: nothing known of it
        return False
    path = pool.db_name.removeprefix("file:").split("?", 1)[0]
    # And the writers' lock file (ledger/store/turns.py), open only during a write: a
    # child holding a copy of its descriptor would keep the parent's turn held.
    turns = store.turns if isinstance(store, TurnTakingDatastore) else None
    files = set()
    for name in (path, f"{path}-wal", f"{path}-shm", *([turns.path] if turns else [])):
        try:
            status = os.stat(name)
        except OSError:
            continue
        files.add((status.st_dev, status.st_ino))
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return False  # no way to tell here: spawn
    for fd in descriptors:
        try:
            status = os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if (status.st_dev, status.st_ino) in files:
            return False
    return True


def shareable(*sides: Any) -> bool:
    """Whether a helper process can read this store: not an in-memory SQLite database,
    which lives in this process only."""
    for side in sides:
        pool = getattr(getattr(side.factory, "datastore", None), "pool", None)
        if getattr(pool, "is_sqlite_memory_mode", False):
            return False
    return True


def add_cells(into: Cells, cells: Cells) -> None:
    """Add `cells` to `into`, amount by amount (exact: money is `Decimal`)."""
    for name, groups in cells.items():
        mine = into.setdefault(name, {})
        for group, part in groups.items():
            merge(mine.setdefault(group, {}), part)


def merge(into: dict[Key, list[Any]], cells: dict[Key, list[Any]]) -> None:
    """Add one group of cells to another."""
    for key, amounts in cells.items():
        cell = into.get(key)
        if cell is None:
            into[key] = amounts
        else:
            for j, value in enumerate(amounts):
                cell[j] += value


class FoldBatch(Batch):
    """A helper's working set: of the rows its seeds put, only the fold columns
    (`Batch.folded`, which `get` answers from); nothing is ever written."""

    def put(self, table: Table, row: Row) -> Row:
        self.keep_fold(table, table.key_of(row), row)
        return row


def fold_in_helper(env: dict[str, str], names: list[str], plan: Plan, chunks: Chunks,
                   counter: Any, owners: Any, pipe: Any, index: int, parent: int) -> None:
    """A helper: take free chunks and fold their events; send the cells per segment."""
    die_with_parent()
    try:
        if os.getppid() != parent:
            raise SystemExit(1)
        app = LedgerApplication(env=env)
        try:
            folder = Folder(app, [resolve_topic(n) for n in names], plan, chunks.after)
            segment = None
            while True:
                with counter.get_lock():
                    i = counter.value
                    if i < chunks.count:
                        counter.value = i + 1
                        owners[i] = index
                if segment is not None and (i >= chunks.count
                                            or i // chunks.per_segment != segment):
                    pipe.send(("cells", segment, *folder.take()))  # its segment is done
                if i >= chunks.count:
                    break
                if os.getppid() != parent:
                    raise SystemExit(1)  # the rebuild is gone: stop
                segment = i // chunks.per_segment
                folder.fold(*chunks.bounds(i))
        finally:
            app.close()
    except SystemExit:
        raise
    except BaseException as error:  # reported by the main process, as one line
        pipe.send(("failed", f"{type(error).__name__}: {error}"))
        sys.exit(1)


class Folder:
    """What a helper does to its chunks (see the module's docstring)."""

    def __init__(self, app: LedgerApplication, classes: Sequence[type[ReadModel]],
                 plan: Plan, after: int) -> None:
        self.models = [cls(None) for cls in classes]  # type: ignore[arg-type]  # no view
        for model in self.models:
            model.batch = FoldBatch(model.tables, complete=True, fold=model.fold_state())
        self.decoder = Decoder(app, self.models)
        self.routes = Routes(self.models)
        self.plan = plan
        self.seen = after  # seed events are applied up to here
        # Per read model, where each aggregate's first seed is stored: a fold event before
        # it counts for nothing, as in one process (where the state row is not there yet).
        # Read models with the same seeds share one (and so, below, their rows).
        by_seeds: dict[tuple[type[Any], ...], dict[str, int]] = {}
        self.born: dict[str, dict[str, int]] = {
            model.name: by_seeds.setdefault(tuple(model.fold_seeds), {})
            for model in self.models}
        self.aids: set[str] = set()
        self.count = 0

    def fold(self, low: int, high: int) -> None:
        while self.seen < high:  # the seeds up to the chunk's end, in order
            page = self.decoder.page(self.seen, SEED_PAGE, high, (self.plan.seeds, True))
            self.seed(page)
            self.seen = page[-1].position if len(page) == SEED_PAGE else high
        runs, count = self.decoder.fold_runs(low, high - low, high, (self.plan.folds, True))
        self.fold_rows(runs)
        self.count += count

    def seed(self, page: list[Decoded]) -> None:
        for item in page:
            event = item.event
            if event is None:
                continue  # (a seed topic is one this version knows)
            aid, position = item.originator_id, item.position
            for handler, model, _ in self.routes.route(type(event)):
                if isinstance(event, model.fold_seeds):
                    self.born[model.name].setdefault(aid, position)
                    handler(model, event, aid)

    def fold_rows(self, runs: FoldRuns) -> None:
        """Hand each read model its fold rows, class by class (`Decoder.fold_runs`)."""
        for cls, items in runs.items():
            self.aids.update([row[0] for _, row in items])
            made: dict[int, FoldRows] = {}  # the rows, by the `born` they were chosen by
            for handler, model, _ in self.routes.route(cls):
                born = None if model.batch.fold_table is None else self.born[model.name]
                rows = made.get(id(born))
                if rows is None:
                    # No seed before it: nothing to fold it into (as in one process).
                    rows = made[id(born)] = (
                        [row for _, row in items] if born is None else
                        [row for position, row in items
                         if born.get(row[0], position + 1) <= position])
                if rows:
                    handler(model, rows)

    def take(self) -> tuple[Cells, list[str], int]:
        """The cells, aggregates and events folded since the last take."""
        cells: Cells = {}
        for model in self.models:
            groups = {g: c for g, c in model.batch.cells.items() if c}
            if groups:
                cells[model.name] = groups
            model.batch.cells = defaultdict(dict)
        aids, count = sorted(self.aids), self.count
        self.aids, self.count = set(), 0
        return cells, aids, count


PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent() -> None:
    """On Linux, have the kernel kill this process with SIGKILL when its parent dies (as a
    kill of the parent would kill it at that instant: its open transaction is lost, which
    the read models are built to survive). Elsewhere the per-page check has to do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
