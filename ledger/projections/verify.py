"""`projections verify`: rebuild read models aside and compare them with the live tables.

The aside tables (`rm_*__verify`, tracked as `Ledger/<name>/verify`) are built by the
rebuild's fast path up to each read model's live position (never the head: the live
tables are not caught up, nor touched at all), compared row by row inside one snapshot
of the live tables, and dropped at the end, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby

from ledger.projections.base import ReadModel
from ledger.projections.catchup import Progress
from ledger.projections.compare import Comparison, TableDiff
from ledger.projections.lock import LockHeld, lease
from ledger.projections.rebuild import fewer_collections
from ledger.projections.runner import Projector
from ledger.projections.view import VERIFY, physical

ATTEMPTS = 50  # snapshots tried while a follower keeps moving the live position


class VerifyFailed(RuntimeError):
    """Verifying could not be done (another verify runs; the live position moved back)."""


@dataclass
class Verdict:
    """One read model, compared at `position`: what differs in each of its tables."""

    name: str
    position: int
    tables: list[TableDiff] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return sum(t.count for t in self.tables)


def verify(live: Projector, names: Sequence[str] | None = None, *, limit: int = 10,
           progress: Progress | None = None) -> list[Verdict]:
    """Compare each read model (all by default) with a rebuild of it at its position;
    at most `limit` differing rows are kept per table (every one is counted)."""
    models = [m for m in live.models if names is None or m.name in names]
    aside = Projector(live.app, [type(m) for m in models], reads=live.read_store,
                      **live.options())
    aside.view.aside = VERIFY
    with lease(live.reads, VERIFY) as got:
        if got.holder is not None:
            raise VerifyFailed(LockHeld(VERIFY, got.holder).message)
        with aside_tables(aside):
            positions = {m.name: live.view.position(m.name) for m in aside.models}
            for position, group in groupby(sorted(aside.models, key=lambda m: positions[
                    m.name]), key=lambda m: positions[m.name]):
                with fewer_collections():
                    aside.catch_up([m.name for m in group], shadow=True, until=position,
                                   progress=progress)
            return [compare(aside, model, limit) for model in aside.models]


@contextmanager
def aside_tables(aside: Projector) -> Iterator[None]:
    """Empty aside tables for the block, dropped after it (also on Ctrl-C or an error).
    Leftovers of a verify that was killed are dropped first."""
    for model in aside.models:
        aside.view.reset_shadow(model.name, model.tables)
        aside.view.create_tables(model.tables, shadow=True)
    try:
        yield
    finally:
        for model in aside.models:
            aside.view.reset_shadow(model.name, model.tables)


def compare(aside: Projector, model: ReadModel, limit: int) -> Verdict:
    """Compare in a snapshot of the live tables taken at the aside tables' position;
    while a follower moves the live position on, catch the aside tables up and retry."""
    view = aside.view
    comparisons = [Comparison(view.dialect, t, physical(t, False), view.physical(t, True))
                   for t in model.tables]
    for _ in range(ATTEMPTS):
        built = view.position(model.name, shadow=True)
        with view.snapshot([physical(t, False) for t in model.tables]) as c:
            position = view.position_in(c, model.name)
            if position == built:
                return Verdict(model.name, built, [cmp.run(c, limit) for cmp in comparisons])
        if position < built:
            raise VerifyFailed(f"{model.name}'s position went back from {built} to "
                               f"{position} while verifying")
        aside.catch_up([model.name], shadow=True, until=position)
    raise VerifyFailed(f"{model.name} kept moving; try again when the store is quieter")

