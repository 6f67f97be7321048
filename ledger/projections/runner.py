"""Catch up, follow and rebuild read models from the application's notification log.

One page of notifications is read and decoded once, then each read model applies the
events past its own position to an in-memory batch and writes the batch with its new
position in one transaction (one tracking record per page, not per event).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from queue import Empty
from typing import Any

from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.utils import get_topic, resolve_topic

from ledger.projections.base import Handler, ReadModel
from ledger.projections.lock import REBUILD, only_one
from ledger.projections.tables import Batch
from ledger.projections.view import PostgresView, SQLiteView, ViewMixin
from ledger.store.application import DDL_LOCK_KEY, LedgerApplication
from ledger.store.faults import StoreErrors, classify

PAGE = 1000
MAX_WAIT = 1.0  # seconds between a follower's attempts while the store is failing
DEAD_CONNECTIONS = 20  # connection-lost errors in a row retried at once
REBUILD_PAGE = 5000  # measured: 1.5x the rebuild rate of 1,000 on SQLite, RSS still flat
FLUSH_EVERY = 100_000  # events between a rebuild's writes
WORKING_SET = 5_000  # rows per table a rebuild's working set keeps after a write
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Decoded:
    position: int
    event: Any | None  # None: a topic this version of the ledger does not know
    topic: str
    originator_id: str


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run CPython's cyclic garbage collector less often for a while.

    A rebuild allocates millions of short-lived objects while it holds a working set of
    tens of thousands of rows; at the default thresholds (700, 10, 10) the collector
    scans that set over and over: a fifth of a 100k-event rebuild, measured. The events
    and rows make no reference cycles, so collecting less often changes nothing else."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 20_000), max(old[1], 50), max(old[2], 50))
    try:
        yield
    finally:
        gc.set_threshold(*old)


@contextmanager
def ddl_lock(app: LedgerApplication) -> Iterator[None]:
    """Hold the store's DDL advisory lock on PostgreSQL (see `open_application`)."""
    datastore = getattr(app.factory, "datastore", None)
    if not isinstance(datastore, PostgresDatastore):
        yield
        return
    with datastore.get_connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))


def make_view(app: LedgerApplication) -> ViewMixin:
    recorder_class = PostgresView if isinstance(app.factory, PostgresFactory) else SQLiteView
    for attempt in range(5):
        try:
            view = app.factory.tracking_recorder(recorder_class)
            break
        except IntegrityError:
            # Two processes creating SQLite's tracking table at once: the library's
            # migration row is inserted by one of them; the other just tries again.
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    assert isinstance(view, ViewMixin)
    return view


@dataclass(slots=True)
class Follow:
    """One read model's progress through a catch-up: applied in memory up to `position`,
    written up to `written`, with the counts of what is not written yet."""

    model: ReadModel
    position: int
    written: int
    applied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def unwritten(self) -> int:
        return self.position - self.written


class Projector:
    """Runs the read models over one application's store.

    `page`: events read per page when catching up (each page is written at once).
    `rebuild_page`: events per page when rebuilding; a rebuild keeps each read model's
    working set across pages and writes it every `flush_every` events; after a write it
    keeps at most `working_set` rows per table (the most recent)."""

    def __init__(self, app: LedgerApplication, model_classes: Sequence[type[ReadModel]],
                 page: int = PAGE, rebuild_page: int | None = None,
                 flush_every: int | None = None, working_set: int = WORKING_SET,
                 jobs: int = 1) -> None:
        self.app = app
        with ddl_lock(app):
            self.view = make_view(app)
            # A store opened read-only (a forensic copy, a standby) is read as it is.
            if getattr(app.factory, "env_create_table", lambda: True)():
                for cls in model_classes:
                    self.view.create_tables(cls.tables)
        self.models = [cls(self.view) for cls in model_classes]
        self.page = page
        self.rebuild_page = rebuild_page or page
        self.flush_every = flush_every or self.rebuild_page
        self.working_set = working_set
        self.jobs = jobs
        self._topics: dict[str, bool] = {}

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def model(self, name: str) -> ReadModel:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    # Catch up ---------------------------------------------------------------------------------

    def catch_up(self, names: Sequence[str] | None = None, *, shadow: bool = False,
                 until: int | None = None, progress: Progress | None = None) -> int:
        """Apply everything recorded up to `until` (default: the head now); events done.

        Live tables are written once per page. A rebuild (`shadow`) owns its tables, so
        it keeps each working set across pages and writes every `flush_every` events."""
        follows = []
        for model in self.models:
            if names is None or model.name in names:
                at = self.view.position(model.name, shadow=shadow)
                # Shadow tables at position 0 are empty: the working set starts complete.
                model.batch = Batch(model.tables, complete=shadow and at == 0)
                follows.append(Follow(model, at, at))
        stop = self.head() if until is None else until
        start = min((f.position for f in follows), default=stop)
        done = 0
        while start < stop:
            notifications = self.app.recorder.select_notifications(
                start, self.rebuild_page if shadow else self.page, stop=stop,
                inclusive_of_start=False)
            if not notifications:
                break
            page = [self._decode(n) for n in notifications]
            behind = [f for f in follows if f.position < page[-1].position]
            for _, group in groupby(sorted(behind, key=attrgetter("position")),
                                    key=attrgetter("position")):
                self._apply(list(group), page, shadow)
            for follow in behind:
                if (not shadow or follow.unwritten >= self.flush_every
                        or follow.model.batch.largest() > 2 * self.working_set):
                    self._write(follow, shadow)
            start = min(page[-1].position, *(f.position for f in follows))
            done += len(page)
            if progress is not None:
                progress(start, stop)
        for follow in follows:
            if follow.unwritten:
                self._write(follow, shadow)
            follow.model.batch = Batch(follow.model.tables)  # let the working set go
        return done

    def _decode(self, notification: Any) -> Decoded:
        known = self._topics.get(notification.topic)
        if known is None:
            try:
                resolve_topic(notification.topic)
                known = True
            except Exception:  # a topic written by a newer version of the ledger
                known = False
            self._topics[notification.topic] = known
        event = self.app.mapper.to_domain_event(notification) if known else None
        return Decoded(notification.id, event, notification.topic,
                       str(notification.originator_id))

    def _apply(self, group: list[Follow], page: list[Decoded], shadow: bool) -> None:
        """Apply the page's events past the group's position (the same for each read model
        in it) to their working sets, in one pass over the page."""
        after = group[0].position
        fresh = page if page[0].position > after else [d for d in page if d.position > after]
        by_class: dict[type[Any], set[str]] | None = None
        for follow in group:
            model, batch = follow.model, follow.model.batch
            if any(t.name not in batch.complete for t in model.state_tables):
                if by_class is None:  # the page's aggregates, by event class (once a page)
                    by_class = {}
                    for d in fresh:
                        if d.event is not None:
                            by_class.setdefault(type(d.event), set()).add(d.originator_id)
                ids = set().union(*(ids for cls, ids in by_class.items()
                                    if model.handler(cls) is not None))
                self.view.prefetch(model.state_tables, ids, batch, shadow=shadow)
        routes: dict[type[Any], list[tuple[Handler, ReadModel]]] = {}
        skipped: dict[str, int] = {}
        for item in fresh:
            event = item.event
            if event is None:
                skipped[item.topic] = skipped.get(item.topic, 0) + 1
                continue
            route = routes.get(type(event))
            if route is None:
                route = routes[type(event)] = [
                    (handler, f.model) for f in group
                    if (handler := f.model.handler(type(event))) is not None]
            for handler, model in route:
                handler(model, event, item.originator_id)
        applied = len(fresh) - sum(skipped.values())
        for follow in group:
            follow.applied += applied
            for topic, count in skipped.items():
                follow.skipped[topic] = follow.skipped.get(topic, 0) + count
            follow.position = page[-1].position

    def _write(self, follow: Follow, shadow: bool) -> None:
        """Write the working set and the position; after a lost compare-and-set (another
        runner wrote first) drop it and go on from the position now recorded."""
        model = follow.model
        model.settle()
        try:
            self.view.flush(model.name, model.tables, model.batch, follow.written,
                            follow.position, follow.applied, follow.skipped, shadow=shadow)
        except IntegrityError:
            follow.position = self.view.position(model.name, shadow=shadow)
            model.batch = Batch(model.tables)
        else:
            if not shadow:
                model.batch = Batch(model.tables)
            else:
                model.batch.evict(self.working_set)
        follow.written = follow.position
        follow.applied, follow.skipped = 0, {}

    # Follow and rebuild -----------------------------------------------------------------------

    def run(self, names: Sequence[str] | None = None, *, interval: float = 0.2,
            should_stop: Callable[[], bool] = lambda: False,
            on_advance: Callable[[int], None] | None = None) -> None:
        """Keep catching up until `should_stop()`; polling keeps SQLite and PostgreSQL alike.
        `on_advance(position)` gets the lowest position the followed read models reached."""
        followed = [m.name for m in self.models if names is None or m.name in names]
        outages = lost = 0

        def between_pages(_position: int, _stop: int) -> None:
            # A long catch-up stops between pages (each page is committed with its
            # position), so a stop is never held up by a backlog.
            if should_stop():
                raise Stopped

        while not should_stop():
            try:
                advanced = self.catch_up(names, progress=between_pages)
                outages = lost = 0
            except Stopped:
                return
            except StoreErrors as e:
                # The database went away (or is full, or read-only): nothing is
                # half-written (pages are transactions); wait and carry on from the
                # committed positions. Anything else is a bug: let it out.
                fault = classify(e)
                if fault is None:
                    raise
                if fault.cause == "connection lost" and lost < DEAD_CONNECTIONS:
                    # A pooled connection killed by a restart or a failover: the next one
                    # is new, or as dead; try it at once, not after a growing wait (after
                    # an outage the pool may hold several dead ones).
                    lost += 1
                    continue
                outages += 1
                time.sleep(min(MAX_WAIT, interval * 2 ** outages))
                continue
            if advanced and on_advance is not None:
                on_advance(min((self.view.position(n) for n in followed), default=0))
            else:
                time.sleep(interval)

    def rebuild(self, names: Sequence[str] | None = None, *, restart: bool = False,
                progress: Progress | None = None, jobs: int | None = None,
                wait: bool = False) -> int:
        """Build into shadow tables from the first event (or where an interrupted rebuild
        stopped), then swap them in atomically; readers see the old tables until then.

        With `jobs` > 1 the read models are split into that many groups of about equal
        work (`ReadModel.weight`), each rebuilt by its own process reading the store;
        this process runs the first group. Returns the events read (by one group).

        One rebuild at a time per store (`only_one(app, REBUILD)`): another one running is
        `LockHeld`, naming it, before anything is touched; or, `wait`, waited for."""
        models = [m for m in self.models if names is None or m.name in names]
        groups = split(models, jobs or self.jobs)
        with only_one(self.app, REBUILD, wait=wait):
            if len(groups) <= 1:
                return self._rebuild(models, restart=restart, progress=progress)
            return Helpers(self, groups, restart).run(progress)

    def _rebuild(self, models: Sequence[ReadModel], *, restart: bool,
                 progress: Progress | None) -> int:
        for model in models:
            if restart:
                self.view.reset_shadow(model.name, model.tables)
            self.view.create_tables(model.tables, shadow=True)
        done = 0
        while True:
            target = self.head()
            with fewer_collections():
                done += self.catch_up([m.name for m in models], shadow=True, until=target,
                                      progress=progress)
            if all(self.view.position(m.name, shadow=True) >= target for m in models):
                break
        # Under the DDL lock: a projector starting now creates the live tables (if not
        # there) and must not meet them half-renamed.
        with ddl_lock(self.app):
            for model in models:
                self.view.swap(model.name, model.tables)
        return done

    def options(self) -> dict[str, int]:
        return {"page": self.page, "rebuild_page": self.rebuild_page,
                "flush_every": self.flush_every, "working_set": self.working_set}

    def status(self) -> list[dict[str, Any]]:
        head = self.head()
        rows = {row["name"]: row for row in self.view.status_rows()}
        report = []
        for model in self.models:
            row = rows.get(model.name, {})
            position = self.view.position(model.name)
            report.append({
                "name": model.name, "position": position, "head": head,
                "lag": head - position, "last_advanced_at": row.get("last_advanced_at"),
                "events_applied": row.get("events_applied", 0),
                "skipped_unknown": row.get("skipped") or {},
                "rebuilt_at": row.get("rebuilt_at"),
                "rebuild_in_progress": f"{model.name}/rebuild" in rows,
            })
        return report


# Rebuilding in several processes ---------------------------------------------------------------

class Stopped(Exception):
    """`Projector.run` was asked to stop in the middle of a catch-up."""


def split(models: Sequence[ReadModel], jobs: int) -> list[list[ReadModel]]:
    """Read models in at most `jobs` groups of about equal weight (heaviest first)."""
    bins: list[list[ReadModel]] = [[] for _ in range(max(1, min(jobs, len(models))))]
    for model in sorted(models, key=lambda m: -m.weight):
        min(bins, key=lambda b: sum(m.weight for m in b)).append(model)
    return [b for b in bins if b]


class Helpers:
    """Rebuild groups of read models in helper processes while this one rebuilds the
    first group; progress is the slowest group's position. A helper that fails stops the
    others (their rebuilds resume next time, like an interrupted one)."""

    def __init__(self, projector: Projector, groups: list[list[ReadModel]],
                 restart: bool) -> None:
        self.projector, self.groups, self.restart = projector, groups, restart
        self.positions = [0] * len(groups)
        self.stop = 0

    def run(self, progress: Progress | None) -> int:
        context = multiprocessing.get_context("spawn")
        queue: Any = context.Queue()
        env = dict(self.projector.app.env)
        topics = [[get_topic(type(m)) for m in group] for group in self.groups]
        helpers = [context.Process(
            target=rebuild_in_helper, daemon=True,
            args=(env, topics[i], self.restart, self.projector.options(), queue, i,
                  os.getpid()))
            for i in range(1, len(self.groups))]
        failures: list[str] = []
        completed = False
        try:
            for helper in helpers:
                helper.start()

            def mine(position: int, stop: int) -> None:
                self.positions[0], self.stop = position, max(self.stop, stop)
                self.drain(queue, failures, progress, block=False)

            done = self.projector._rebuild(self.groups[0], restart=self.restart,
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


class RebuildFailed(RuntimeError):
    """A helper process of a parallel rebuild failed (its message says why)."""


def rebuild_in_helper(env: dict[str, str], topics: list[str], restart: bool,
                      options: dict[str, int], queue: Any, index: int, parent: int) -> None:
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
        try:
            projector = Projector(app, [resolve_topic(t) for t in topics], **options)
            projector._rebuild(projector.models, restart=restart, progress=report)
        finally:
            app.close()
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
