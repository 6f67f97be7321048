"""Rebuild read models into shadow tables, then swap them in; split the work into groups."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ledger.projections.base import ReadModel
from ledger.projections.catchup import CatchUp, Progress, ddl_lock
from ledger.projections.share import Chunks, Plan, Share, shareable


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


def rebuild_shadow(projector: CatchUp, models: Sequence[ReadModel], *, restart: bool,
                   progress: Progress | None, helpers: int = 0) -> int:
    """Build `models` into their shadow tables up to the head, then swap them in; the
    events read. `restart` drops an interrupted rebuild's tables first. `helpers`:
    processes that fold events alongside this one (`ledger.projections.share`), when the
    rebuild starts from the first event and the read models have fold handlers."""
    view = projector.view
    for model in models:
        if restart:
            view.reset_shadow(model.name, model.tables)
        view.create_tables(model.tables, shadow=True)
    done = 0
    plan = (Plan.of(models) if helpers and shareable(projector.app, projector.reads)
            else None)
    while True:
        target = projector.head()
        share = None
        if plan is not None and target and not any(
                view.position(m.name, shadow=True) for m in models):
            per_segment = max(1, projector.flush_every // projector.rebuild_page)
            share = projector.share = Share(
                projector.app, models, plan,
                Chunks(0, target, projector.rebuild_page, per_segment), helpers,
                projector.reads)
        plan = None  # (the events written meanwhile are few: one process)
        try:
            with fewer_collections():
                done += projector.catch_up([m.name for m in models], shadow=True,
                                           until=target, progress=progress, share=share)
        finally:
            if share is not None:
                share.close()
                projector.shared, projector.share = share.counts(), None
        if all(view.position(m.name, shadow=True) >= target for m in models):
            break
    # Under the DDL lock: a projector starting now creates the live tables (if not
    # there) and must not meet them half-renamed.
    with ddl_lock(projector.reads):
        for model in models:
            view.swap(model.name, model.tables)
    return done


def split(models: Sequence[ReadModel], jobs: int) -> list[list[ReadModel]]:
    """Read models in at most `jobs` groups of about equal weight (heaviest first)."""
    bins: list[list[ReadModel]] = [[] for _ in range(max(1, min(jobs, len(models))))]
    for model in sorted(models, key=lambda m: -m.weight):
        min(bins, key=lambda b: sum(m.weight for m in b)).append(model)
    return [b for b in bins if b]

