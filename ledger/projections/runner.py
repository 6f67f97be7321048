"""The projector: catch up, follow the store as it grows, rebuild, and report each read model.

Catching up is `ledger.projections.catchup`; rebuilding into shadow tables is
`ledger.projections.rebuild`, in helper processes `ledger.projections.processes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ledger.projections.catchup import CatchUp, Progress
from ledger.projections.lock import REBUILD, only_one
from ledger.projections.processes import Helpers
from ledger.projections.rebuild import rebuild_shadow, split
from ledger.projections.share import Plan
from ledger.store.faults import StoreErrors, classify

MAX_WAIT = 1.0  # seconds between a follower's attempts while the store is failing
DEAD_CONNECTIONS = 20  # connection-lost errors in a row retried at once


class Projector(CatchUp):
    """Runs the read models over one application's store: catches them up (`CatchUp`),
    follows new events, rebuilds, and says where each one stands."""

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

        With `jobs` > 1, when the read models have fold handlers (the performance
        reports), `jobs - 1` helper processes fold those events alongside this one
        (`ledger.projections.share`); otherwise the read models are split into `jobs`
        groups of about equal work (`ReadModel.weight`), each rebuilt by its own process
        reading the store, this one running the first. Returns the events read.

        One rebuild at a time per read database (`only_one(reads, REBUILD)`): another one running is
        `LockHeld`, naming it, before anything is touched; or, `wait`, waited for."""
        models = [m for m in self.models if names is None or m.name in names]
        jobs = jobs or self.jobs
        groups = split(models, jobs)
        with only_one(self.reads, REBUILD, wait=wait):
            if jobs > 1 and Plan.of(models) is not None:
                return rebuild_shadow(self, models, restart=restart, progress=progress,
                                      helpers=jobs - 1)
            if len(groups) <= 1:
                return rebuild_shadow(self, models, restart=restart, progress=progress)
            return Helpers(self, groups, restart).run(progress)

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


class Stopped(Exception):
    """`Projector.run` was asked to stop in the middle of a catch-up."""

