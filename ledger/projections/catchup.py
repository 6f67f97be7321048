"""Catch read models up with the store: one page read and decoded once, applied by all.

One page of stored events is read and decoded once (`ledger.projections.decode`: only what
the read models read), then each read model applies the
events past its own position to an in-memory batch and writes the batch with its new
position in one transaction (one tracking record per page, not per event).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresDatastore, PostgresFactory

from ledger.projections.base import FoldRows, ReadModel
from ledger.projections.decode import Decoded, Decoder, Routes
from ledger.projections.share import Share, merge
from ledger.projections.tables import Batch
from ledger.projections.view import Page, PostgresView, SQLiteView, ViewMixin
from ledger.store.application import DDL_LOCK_KEY, LedgerApplication
from ledger.store.readstore import ReadStore
from ledger.store.rows import EventRow

# Where read models are kept: beside the events (the application), or a `ReadStore`.
ReadSide = LedgerApplication | ReadStore

PAGE = 1000
# Events per rebuild page. Measured again (issue 15, 100k, one process, CPU s): 1,000
# beats 5,000 by ~10% on both backends, now that reports fold into few cells; a page of
# 5,000 decoded events (~5 MB) is cold in the CPU's caches by the time it is applied.
REBUILD_PAGE = 1000
FLUSH_EVERY = 100_000  # events between a rebuild's writes
WORKING_SET = 5_000  # rows per table a rebuild's working set keeps after a write
LIVE_WORKING_SET = 1_000  # rows per table a live catch-up keeps from one call to the next
Progress = Callable[[int, int], None]


@contextmanager
def ddl_lock(app: ReadSide) -> Iterator[None]:
    """Hold the database's DDL advisory lock on PostgreSQL (see `open_application`)."""
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


def make_view(app: ReadSide) -> ViewMixin:
    """The tracking recorder the read models write through, for the app's backend."""
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
    rebuilt: Any = None  # live: the `rebuilt_at` its rows were read under (`marks`)

    @property
    def unwritten(self) -> int:
        return self.position - self.written


class CatchUp:
    """Applies the store's events to read models, page by page.

    `page`: events read per page when catching up (each page is written at once).
    `rebuild_page`: events per page when rebuilding; a rebuild keeps each read model's
    working set across pages and writes it every `flush_every` events; after a write it
    keeps at most `working_set` rows per table (the most recent).

    Events are read from `app`'s store; the read models' tables and positions are kept
    in `reads` (default: the same database; a market's `read_url` names another)."""

    def __init__(self, app: LedgerApplication, model_classes: Sequence[type[ReadModel]],
                 page: int = PAGE, rebuild_page: int | None = None,
                 flush_every: int | None = None, working_set: int = WORKING_SET,
                 jobs: int = 1, reads: ReadStore | None = None) -> None:
        self.app = app
        self.reads: ReadSide = reads or app
        self.read_store = reads
        with ddl_lock(self.reads):
            self.view = make_view(self.reads)
            # A store opened read-only (a forensic copy, a standby) is read as it is.
            if getattr(self.reads.factory, "env_create_table", lambda: True)():
                for cls in model_classes:
                    self.view.create_tables(cls.tables)
        self.models = [cls(self.view) for cls in model_classes]
        self.decoder = Decoder(app, self.models)  # for every read model; others per subset
        self._decoders: dict[frozenset[str], Decoder] = {}
        self.page = page
        self.rebuild_page = rebuild_page or page
        self.flush_every = flush_every or self.rebuild_page
        self.working_set = working_set
        self.live_working_set = LIVE_WORKING_SET
        self.jobs = jobs
        # Several read models' writes at once (see `_write_all`), and the next page of a
        # rebuild read while this one is applied: PostgreSQL only (the server works
        # meanwhile; SQLite reads in this process, under the GIL).
        self.parallel_writes = isinstance(self.view, PostgresView)
        self.read_ahead = isinstance(self.app.factory, PostgresFactory)
        # A shared rebuild running now; the last one's chunks, and how many helpers took.
        self.share: Share | None = None
        self.shared: tuple[int, int] | None = None
        # Live read models' working sets kept between catch-ups, with the mark (position,
        # last swap) they are valid at: see `catch_up`.
        self._kept: dict[str, tuple[tuple[int, Any], Batch]] = {}

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def model(self, name: str) -> ReadModel:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def catch_up(self, names: Sequence[str] | None = None, *, shadow: bool = False,
                 until: int | None = None, progress: Progress | None = None,
                 share: Share | None = None) -> int:
        """Apply everything recorded up to `until` (default: the head now); events done.

        Live tables are written once per page, every read model's in one transaction; a
        live read model's working set is kept for the next call while nobody else writes
        it (its position and last swap, `marks`, unchanged). A rebuild (`shadow`) owns its
        tables, so it keeps each working set across pages and writes every `flush_every`
        events.
        `share`: a rebuild's fold events are shared with helpers (`ledger.projections.
        share`): pages are its chunks, and writes wait for the helpers' cells."""
        chosen = [m for m in self.models if names is None or m.name in names]
        marks = {} if shadow else self.view.marks([m.name for m in chosen])
        follows = []
        for model in chosen:
            rebuilt = None
            if shadow:
                at = self.view.position(model.name, shadow=True)
                # Shadow tables at position 0 are empty: the working set starts complete.
                model.batch = Batch(model.tables, complete=at == 0, fold=model.fold_state())
            else:
                # Live: the working set the last call kept, if nobody wrote this read model
                # since (its position and its last swap unchanged); else an empty one.
                at, rebuilt = marks[model.name]
                kept = self._kept.pop(model.name, None)
                model.batch = (kept[1] if kept is not None and kept[0] == (at, rebuilt)
                               else Batch(model.tables, fold=model.fold_state()))
            follows.append(Follow(model, at, at, rebuilt=rebuilt))
        stop = self.head() if until is None else until
        start = min((f.position for f in follows), default=stop)
        decoder = self.decoder_for([f.model for f in follows])
        done = 0
        limit = self.rebuild_page if shadow else self.page
        store = self.app.store

        def read(after: int) -> tuple[int, list[EventRow]]:
            """The rows of the page after `after` (not decoded), and where it ends."""
            if share is None:
                rows = store.select_rows(after, limit, stop)
                return (rows[-1][0] if rows else after), rows
            # The chunk after `after`, less what a helper folds of it.
            end, topics = share.topics(after)
            return end, store.select_rows(after, limit, end, topics)

        # A rebuild on PostgreSQL reads its next page while it applies this one (the
        # server answers meanwhile); see `read_ahead`.
        with ThreadPoolExecutor(1, thread_name_prefix="ledger-read") as reader:
            ahead: tuple[int, Future[tuple[int, list[EventRow]]]] | None = None
            while start < stop:
                if ahead is not None and ahead[0] == start:
                    end, rows = ahead[1].result()
                else:
                    end, rows = read(start)
                ahead = None
                if share is None and not rows:
                    break
                if shadow and self.read_ahead and end < stop:
                    ahead = (end, reader.submit(read, end))
                page = decoder.decode_rows(rows)
                if share is not None:
                    share.drain()
                done += self._page(follows, page, end, shadow, share)
                start = min(end, *(f.position for f in follows))
                if progress is not None:
                    progress(start, stop)
        if share is not None:
            done += self._take(share, stop, follows)
        self._write_all([f for f in follows if f.unwritten], shadow)
        for follow in follows:
            if not shadow:  # (only once every write committed: an error skips this)
                self._kept[follow.model.name] = ((follow.written, follow.rebuilt),
                                                 follow.model.batch)
            follow.model.batch = Batch(follow.model.tables)  # let the working set go
        return done

    def _page(self, follows: list[Follow], page: list[Decoded], end: int, shadow: bool,
              share: Share | None) -> int:
        """Apply a page read up to `end`, and write what is due; the events done."""
        done = 0
        behind = [f for f in follows if f.position < end]
        for _, group in groupby(sorted(behind, key=attrgetter("position")),
                                key=attrgetter("position")):
            self._apply(list(group), page, end, shadow)
        # With a share, writes wait for the end of a segment and the helpers' cells.
        may_write = share is None or share.at_segment_end(end)
        if share is not None and may_write:
            done += self._take(share, end, follows)
        if may_write:
            self._write_all([f for f in behind if not shadow
                             or f.unwritten >= self.flush_every
                             or f.model.batch.largest() > 2 * self.working_set], shadow)
        return done + len(page)

    def decoder_for(self, models: Sequence[ReadModel]) -> Decoder:
        """The decoder of what these read models read: events none of them handles are
        not decoded (one read model caught up alone never trips over another's events)."""
        names = frozenset(m.name for m in models)
        if len(names) == len(self.models):
            return self.decoder
        found = self._decoders.get(names)
        if found is None:
            found = self._decoders[names] = Decoder(self.app, models)
        return found

    @staticmethod
    def _wanted(model: ReadModel, by_class: dict[type[Any], set[str]]) -> set[str]:
        """The aggregates whose state rows the model's handlers of this page read: all
        those of its events, but those of fold events whose fold columns it keeps."""
        folded = model.batch.folded.keys()
        wanted: set[str] = set()
        for cls, ids in by_class.items():
            handler = model.handler(cls)
            if handler is None:
                continue
            if getattr(handler, "fold", False) and model.batch.fold_table is not None:
                wanted |= ids - folded
            else:
                wanted |= ids
        return wanted

    def _take(self, share: Share, end: int, follows: list[Follow]) -> int:
        """Add the helpers' cells up to `end` to the read models' own (with the state rows
        their `settle` reads), and count their events; the events."""
        cells, aids, count = share.take(end)
        for follow in follows:
            model = follow.model
            mine = cells.get(model.name)
            if mine:
                for group, part in mine.items():
                    merge(model.batch.cells[group], part)
                if any(t.name not in model.batch.complete for t in model.state_tables):
                    wanted = [i for i in aids if i not in model.batch.folded]
                    self.view.prefetch(model.state_tables, wanted, model.batch, shadow=True)
            follow.applied += count
        return count

    def _apply(self, group: list[Follow], page: list[Decoded], end: int,
               shadow: bool) -> None:
        """Apply the page's events past the group's position (the same for each read model
        in it) to their working sets, in one pass over the page; the page was read up to
        position `end`."""
        after = group[0].position
        fresh = (page if not page or page[0].position > after
                 else [d for d in page if d.position > after])
        by_class: dict[type[Any], set[str]] | None = None
        for follow in group:
            model, batch = follow.model, follow.model.batch
            if any(t.name not in batch.complete for t in model.state_tables):
                if by_class is None:  # the page's aggregates, by event class (once a page)
                    by_class = {}
                    for d in fresh:
                        if d.cls is not None:
                            by_class.setdefault(d.cls, set()).add(d.originator_id)
                        elif d.event is not None:
                            by_class.setdefault(type(d.event), set()).add(d.originator_id)
                self.view.prefetch(model.state_tables, self._wanted(model, by_class),
                                   batch, shadow=shadow)
        routes = Routes([f.model for f in group])
        skipped: dict[str, int] = {}
        run: FoldRows = []  # fold rows in a row of one class, applied together
        run_class: type[Any] | None = None
        for item in fresh:
            if item.row is not None:
                if item.cls is not run_class:
                    routes.fold(run_class, run)
                    run, run_class = [], item.cls
                run.append(item.row)
                continue
            event = item.event
            if event is None:
                if not item.known:
                    skipped[item.topic] = skipped.get(item.topic, 0) + 1
                continue  # (or no read model here handles it)
            if run:
                routes.fold(run_class, run)
                run, run_class = [], None
            routes.apply(event, item.originator_id)
        routes.fold(run_class, run)
        applied = len(fresh) - sum(skipped.values())
        for follow in group:
            follow.applied += applied
            for topic, count in skipped.items():
                follow.skipped[topic] = follow.skipped.get(topic, 0) + count
            follow.position = end

    def _write_all(self, follows: list[Follow], shadow: bool) -> None:
        """Write these read models' working sets. A live catch-up's in one transaction
        (`ViewMixin.flush_live`). A rebuild's (or a verify's) on PostgreSQL at once, each
        in its own transaction on its own connection, as they are alone: the server works
        on one while this process encodes the next (at the end of a 100k rebuild, the four
        writes took 0.36 s one after the other, half of it waiting). On SQLite there is one
        writer at a time: one after the other."""
        if not follows:
            return
        if not shadow:
            self._write_live(follows)
        elif len(follows) > 1 and self.parallel_writes:
            with ThreadPoolExecutor(len(follows), thread_name_prefix="ledger-write") as pool:
                for done in [pool.submit(self._write, f) for f in follows]:
                    done.result()  # (the first error, once every write has ended)
        else:
            for follow in follows:
                self._write(follow)

    def _write(self, follow: Follow) -> None:
        """Write a rebuild's working set and position; after a lost compare-and-set
        (another runner wrote first) drop it and go on from the position now recorded.
        Its working set is kept across pages, down to `working_set` rows a table."""
        model = follow.model
        model.settle()
        try:
            self.view.flush(model.name, model.tables, model.batch, follow.written,
                            follow.position, follow.applied, follow.skipped, shadow=True)
        except IntegrityError:
            self._lost(follow, shadow=True)
        else:
            model.batch.evict(self.working_set)
        self._written(follow)

    def _write_live(self, follows: list[Follow]) -> None:
        """Write live read models' working sets and positions in one transaction; those
        whose compare-and-set was lost are dropped, as in `_write`. The others keep at most
        `live_working_set` rows a table (and fold columns) for the next catch-up."""
        for follow in follows:
            follow.model.settle()
        lost = self.view.flush_live(
            [Page(f.model.name, f.model.tables, f.model.batch, f.written, f.position,
                  f.applied, f.skipped) for f in follows],
            {f.model.name: f.rebuilt for f in follows})
        for follow in follows:
            if follow.model.name in lost:
                self._lost(follow, shadow=False)
            else:
                follow.model.batch.evict(self.live_working_set, fold_too=True)
            self._written(follow)

    def _lost(self, follow: Follow, *, shadow: bool) -> None:
        """Another runner wrote (or a rebuild was swapped in): go on from where the read
        model is now, reading its rows again."""
        model = follow.model
        if shadow:
            follow.position = self.view.position(model.name, shadow=True)
        else:
            follow.position, follow.rebuilt = self.view.marks([model.name])[model.name]
        model.batch = Batch(model.tables, fold=model.fold_state())

    @staticmethod
    def _written(follow: Follow) -> None:
        follow.written = follow.position
        follow.applied, follow.skipped = 0, {}

    def options(self) -> dict[str, int]:
        """The page sizes, as keyword arguments that build a like-minded `CatchUp`."""
        return {"page": self.page, "rebuild_page": self.rebuild_page,
                "flush_every": self.flush_every, "working_set": self.working_set}

