"""What every ledger event carries: who caused it, by which command, at which time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, AggregateCreated, AggregateEvent

from ledger.errors import ClockBehind

# Namespace for the ids we derive from public keys (campaign slug, campaign + account).
LEDGER_NS = uuid5(NAMESPACE_URL, "https://ledger.example/ids")


class ActorDict(TypedDict):
    """Who did something: an id and a role (seller, reviewer, admin, system)."""
    id: str
    role: str


SYSTEM: ActorDict = {"id": "system", "role": "system"}


@dataclass(frozen=True)
class Cause:
    """Why an event happens: the command's actor and id, and the ledger clock's time."""

    actor: ActorDict
    command_id: str
    at: datetime

    def as_system(self) -> Cause:
        return Cause(actor=SYSTEM, command_id=self.command_id, at=self.at)

    def stamp(self) -> dict[str, Any]:
        return {"actor": self.actor, "command_id": self.command_id, "timestamp": self.at}


_BASE_FIELDS = frozenset({"originator_id", "originator_version", "originator_topic",
                          "timestamp", "actor", "command_id"})


class LedgerCreated(AggregateCreated):
    """First event of a ledger aggregate: its own fields become the aggregate's state."""

    class_version = 1
    actor: ActorDict
    command_id: str

    def apply(self, aggregate: Any) -> None:
        for name, value in vars(self).items():
            if name not in _BASE_FIELDS:
                setattr(aggregate, name, value)


class LedgerEvent(AggregateEvent):
    """A later event of a ledger aggregate."""

    class_version = 1
    actor: ActorDict
    command_id: str


class LedgerAggregate(Aggregate):
    """Base of Campaign and Registration: triggers events stamped with their cause."""

    @property
    def aggregate_name(self) -> str:
        return type(self).__name__.lower()

    @property
    def public_id(self) -> str:
        """The id users know it by (a campaign's slug; a registration's UUID)."""
        return str(self.id)

    def record(self, event_class: type[LedgerEvent], by: Cause, **fields: Any) -> None:
        if by.at < self.modified_on:
            # Recorded times never go backwards along an aggregate's versions, or `audit
            # as-of --at` would lie. A command first raises its time to the last event of
            # what it writes (Context.writes): this stops any write that did not.
            raise ClockBehind(self.aggregate_name, self.public_id, self.modified_on, by.at)
        self.trigger_event(event_class, **by.stamp(), **fields)


def campaign_uuid(campaign_id: str) -> UUID:
    """The campaign's aggregate id, derived from its public id (the same on every store)."""
    return uuid5(LEDGER_NS, f"campaign:{campaign_id}")


def registration_uuid(campaign_id: str, account_id: str) -> UUID:
    """The registration's aggregate id: one per campaign and account."""
    return uuid5(LEDGER_NS, f"registration:{campaign_id}/{account_id}")
