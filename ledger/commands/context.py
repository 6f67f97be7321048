"""What a handler works with: the store, the command's cause, and what it decides to save."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from ledger.aggregates.base import Cause, LedgerAggregate, campaign_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.clock import SKEW
from ledger.commands.parse import Command
from ledger.errors import ClockBehind, Conflict, NotFound
from ledger.store.plan import WritePlan

A = TypeVar("A", bound=LedgerAggregate)


@dataclass
class Outcome:
    """The aggregates to save (with pending events), what else the save writes and checks
    (`plan`), and what the result reports."""

    aggregate_id: str
    main: LedgerAggregate
    others: list[LedgerAggregate] = field(default_factory=list)
    plan: WritePlan = field(default_factory=WritePlan)

    @property
    def aggregates(self) -> list[LedgerAggregate]:
        # The main aggregate's events are stored last, so the position of its last event
        # (which a replay can look up) is the position of the whole command.
        return [*self.others, self.main]

    def event_names(self) -> list[str]:
        return [type(e).__name__ for agg in self.aggregates for e in agg.pending_events]


class Loads(Protocol):
    """What a handler reads of the store: the application itself (`LedgerApplication`), or
    a group's view of it (`ledger.group.GroupLoads`: aggregates as the group's earlier
    commands left them, else the store)."""

    def get(self, aggregate_id: UUID, version: int | None = None) -> Any: ...

    def exists(self, aggregate_id: UUID) -> bool: ...

    def last_event_topic(self, aggregate_id: UUID) -> str | None: ...

    def registrations_of(self, campaign_id: str) -> list[str]: ...

    def report_seen(self, registration_id: UUID, report_id: str) -> bool: ...


@dataclass
class Context:
    """`cause.at` starts at the clock's reading and is raised (by `writes`) to the last
    event of each aggregate the command writes, so that rules and new events use it."""

    app: Loads
    command: Command
    cause: Cause
    clock: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.clock = self.cause.at

    def writes(self, aggregate: LedgerAggregate) -> None:
        """The command will write `aggregate`: decide and record no earlier than its last
        event when the clock is at most SKEW behind it; refuse (`clock_behind`) beyond."""
        last = aggregate.modified_on
        if last <= self.cause.at:
            return
        if last - self.clock > SKEW:
            raise ClockBehind(aggregate.aggregate_name, aggregate.public_id, last, self.clock)
        self.cause = replace(self.cause, at=last)

    def campaign(self, campaign_id: str) -> Campaign:
        return load(self.app, campaign_uuid(campaign_id), Campaign, f"campaign {campaign_id!r}")

    def registration(self, registration_id: str) -> Registration:
        """Load it to write it: a seller may act only on their own registrations; check
        expected_version; the command's time is no earlier than its last event."""
        reg = load(self.app, UUID(registration_id), Registration,
                   f"registration {registration_id!r}")
        self.expect_version(visible_to(reg, registration_id, self.command.actor))
        self.writes(reg)
        return reg

    def expect_version(self, aggregate: LedgerAggregate) -> None:
        expected = self.command.expected_version
        if expected is not None and aggregate.version != expected:
            raise Conflict(
                f"expected version {expected}, but it is at version {aggregate.version}",
                {"expected_version": expected, "actual_version": aggregate.version},
            )

    def expect_new(self) -> None:
        expected = self.command.expected_version
        if expected not in (None, 0):
            raise Conflict(f"expected version {expected}, but it does not exist yet",
                           {"expected_version": expected, "actual_version": 0})


class Reader(Protocol):
    """Who asks: a command's actor, or a service token's."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...


def visible_to(reg: Registration, registration_id: str, reader: Reader) -> Registration:
    """`reg`, unless a seller other than its own asks: then `not_found`, word for word as for
    a registration that does not exist (DOMAIN.md: a seller is never told whether another
    shop's registration exists, and registration ids are derivable)."""
    if reader.role == "seller" and reg.seller_id != reader.id:
        raise NotFound(f"registration {registration_id!r} not found")
    return reg


def load(
    app: Loads, aggregate_id: UUID, kind: type[A], label: str,
    version: int | None = None,
) -> A:
    """The aggregate `aggregate_id` (at `version`) as `kind`; NotFound naming `label`."""
    try:
        aggregate: LedgerAggregate = app.get(aggregate_id, version)
    except AggregateNotFoundError:
        raise NotFound(f"{label} not found") from None
    if not isinstance(aggregate, kind):
        raise NotFound(f"{label} not found")
    return aggregate
