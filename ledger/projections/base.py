"""A read model: a library `Projection` whose handlers change its working set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar, cast

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.projections.tables import Batch, Table
from ledger.projections.view import ViewMixin

H = TypeVar("H", bound=Callable[..., None])
Handler = Callable[[Any, Any, str], None]
# A fold handler takes a run of rows: each the aggregate id, then the fields it `reads`.
FoldRows = list[tuple[Any, ...]]
FoldHandler = Callable[[Any, FoldRows], None]


def handles(*event_classes: type[Any], reads: Sequence[str] | None = None,
            fold: bool = False) -> Callable[[H], H]:
    """Mark a read-model method as the handler of these event classes (and subclasses).

    A handler is called as `handler(self, event, aggregate_id)`, the id as a string.
    `reads`: the event's fields the handler uses; a rebuild and a catch-up then decode
    only those (`ledger.projections.decode`), and the event has no other attribute. A
    handler that declares nothing gets the whole event.

    `fold`: the handler only adds the event's amounts to `batch.cells`, under a key made
    of the event, the aggregate id and the `fold_columns` of its aggregate's state row
    (columns that never change once the row is first put). Such events can be applied in
    any order and in any process, and their cells added up: a rebuild with `--jobs`
    hands them to helper processes (`ledger.projections.share`). A fold handler must
    declare `reads`, and is called with a run of events at once, as rows:
    `handler(self, rows)`, each row the aggregate id then the fields of `reads`, in that
    order (no object per event: see `ledger.projections.decode`)."""
    if fold and reads is None:
        raise TypeError("a fold handler declares the fields it reads (reads=...)")

    def mark(method: H) -> H:
        method.__dict__["handles"] = event_classes
        if reads is not None:
            method.__dict__["reads"] = tuple(reads)
        if fold:
            method.__dict__["fold"] = True
        return method

    return mark


def handler_reads(handler: Callable[..., None]) -> tuple[str, ...]:
    """The fields a handler declared it reads (a fold handler always declares them)."""
    reads: tuple[str, ...] = getattr(handler, "reads", ())
    return reads


def fold_row(event: Any, aid: str, names: Sequence[str]) -> tuple[Any, ...]:
    """An event object as a fold handler's row: its aggregate id, then the fields `names`."""
    return (aid, *[getattr(event, name) for name in names])


class ReadModel(Projection[Any]):
    """Subclasses declare `tables` (and which are `state_tables`, keyed by aggregate id)
    and mark one handler per event class with `@handles`. Handlers read times and values
    from events only, never from the clock or from other read models."""

    tables: ClassVar[tuple[Table, ...]] = ()
    state_tables: ClassVar[tuple[Table, ...]] = ()
    description: ClassVar[str] = ""
    # Relative work per event, to split a parallel rebuild into groups of equal work.
    weight: ClassVar[int] = 1
    # For `fold` handlers (see `handles`): the events whose handlers put the state rows
    # a fold (or `settle`, for the cells of folds) reads, and the columns of those rows
    # it reads (they never change). A rebuild keeps those columns of every such row.
    fold_seeds: ClassVar[tuple[type[Any], ...]] = ()
    fold_columns: ClassVar[tuple[str, ...]] = ()
    handlers: ClassVar[dict[type[Any], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handlers = {
            event_class: method
            for method in vars(cls).values()
            for event_class in getattr(method, "handles", ())
        }

    def __init__(self, view: ViewMixin) -> None:
        super().__init__(view)
        self.batch = Batch(self.tables)
        self._dispatch: dict[type[Any], Handler | None] = {}

    def handler(self, event_class: type[Any]) -> Handler | None:
        """This read model's handler of an event class (resolved once per class)."""
        try:
            return self._dispatch[event_class]
        except KeyError:
            found = self._dispatch[event_class] = next(
                (self.handlers[k] for k in event_class.__mro__ if k in self.handlers), None)
            return found

    @classmethod
    def fold_state(cls) -> tuple[Table, tuple[str, ...]] | None:
        """The state table the `fold_columns` are read from (the first that has them)."""
        if not cls.fold_columns:
            return None
        for table in cls.state_tables:
            if all(column in table.columns for column in cls.fold_columns):
                return table, cls.fold_columns
        raise TypeError(f"{cls.__name__}: no state table has {cls.fold_columns}")

    def settle(self) -> None:
        """Fold what handlers gathered in `batch.cells` into rows; the runner calls this
        before each write (a read model that uses no cells has nothing to do)."""

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Apply one event to the working set; events this read model does not use change
        nothing (the library's entry point; the runner calls handlers directly)."""
        handler = self.handler(type(domain_event))
        if handler is None:
            return
        aid = str(domain_event.originator_id)
        if getattr(handler, "fold", False):
            cast(FoldHandler, handler)(self, [fold_row(domain_event, aid, handler_reads(handler))])
        else:
            handler(self, domain_event, aid)
