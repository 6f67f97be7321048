"""A read model: a library `Projection` whose handlers fill the page's batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.projections.tables import Batch, Table
from ledger.projections.view import ViewMixin

H = TypeVar("H", bound=Callable[..., None])


def handles(*event_classes: type[Any]) -> Callable[[H], H]:
    """Mark a read-model method as the handler of these event classes (and subclasses)."""

    def mark(method: H) -> H:
        method.__dict__["handles"] = event_classes
        return method

    return mark


class ReadModel(Projection[Any]):
    """Subclasses declare `tables` (and which are `state_tables`, keyed by aggregate id)
    and mark one handler per event class with `@handles`. Handlers read times and values
    from events only, never from the clock or from other read models."""

    tables: ClassVar[tuple[Table, ...]] = ()
    state_tables: ClassVar[tuple[Table, ...]] = ()
    description: ClassVar[str] = ""
    handlers: ClassVar[dict[type[Any], Callable[..., None]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handlers = {
            event_class: method
            for method in vars(cls).values()
            for event_class in getattr(method, "handles", ())
        }

    def __init__(self, view: ViewMixin) -> None:
        super().__init__(view)
        self.batch = Batch()
        self._dispatch: dict[type[Any], Callable[..., None] | None] = {}

    @property
    def table_map(self) -> dict[str, Table]:
        return {t.name: t for t in self.tables}

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Apply one event to the batch; events this read model does not use change nothing."""
        cls = type(domain_event)
        if cls not in self._dispatch:
            self._dispatch[cls] = next(
                (self.handlers[k] for k in cls.__mro__ if k in self.handlers), None)
        handler = self._dispatch[cls]
        if handler is not None:
            handler(self, domain_event)


def aggregate_id(event: Any) -> str:
    return str(event.originator_id)
