"""An aggregate's history, and its state as of a moment, replayed from the event store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ledger.aggregates.base import campaign_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.commands.context import load
from ledger.errors import NotFound
from ledger.shapes import campaign_state, event_record, registration_state
from ledger.store.application import LedgerApplication
from ledger.values import instant_text

PAGE = 500  # events read at a time: a long-lived registration never sits in memory whole


class Source(Protocol):
    """What the audit reads from: the store's application (a `Ledger` is one). A protocol,
    so that the audit never imports the facade that calls it."""

    @property
    def app(self) -> LedgerApplication: ...


@dataclass(frozen=True)
class Target:
    """A public id (campaign slug or registration UUID) and the aggregate it names."""

    public_id: str
    aggregate_id: UUID
    kind: str  # "campaign" | "registration"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.public_id!r}"


@dataclass(frozen=True)
class AsOf:
    """The state shown (the `ledger show` shape), and which version of how many it is."""

    state: dict[str, Any]
    version: int
    last_version: int
    recorded_at: datetime


def target(ledger: Source, public_id: str) -> Target:
    """A public id resolved (a UUID is a registration, else a campaign slug) without
    loading the aggregate; `not_found` when it has no events. `Ledger.resolve` is this."""
    try:
        found = Target(public_id, UUID(public_id), "registration")
    except ValueError:
        found = Target(public_id, campaign_uuid(public_id), "campaign")
    if not ledger.app.exists(found.aggregate_id):
        raise NotFound(f"{found.label} not found")
    return found


def stored_events(ledger: Source, aggregate_id: UUID, *, page: int = PAGE) -> Iterator[Any]:
    """The aggregate's events in version order, decoded (and upcast) by the mapper."""
    after = 0
    while True:
        stored = ledger.app.recorder.select_events(aggregate_id, gt=after, limit=page)
        for item in stored:
            yield ledger.app.mapper.to_domain_event(item)
        if len(stored) < page:
            return
        after = stored[-1].originator_version


def history(ledger: Source, public_id: str) -> Iterator[dict[str, Any]]:
    """Every event of a campaign or registration: version, recorded time, type, actor,
    command_id and the fields it sets (`data`)."""
    found = target(ledger, public_id)
    for event in stored_events(ledger, found.aggregate_id):
        yield event_record(event)


def version_at(ledger: Source, found: Target, at: datetime) -> int:
    """The last version recorded at or before `at`: the events up to the first one
    recorded later (a state as of `at` cannot hold an event recorded after it)."""
    version = 0
    for event in stored_events(ledger, found.aggregate_id):
        if event.timestamp > at:
            break
        version = event.originator_version
    if version == 0:
        first = next(stored_events(ledger, found.aggregate_id, page=1))
        raise NotFound(
            f"{found.label} did not exist yet at {instant_text(at)}: its first event was "
            f"recorded at {instant_text(first.timestamp)}",
            {"at": instant_text(at), "first_recorded_at": instant_text(first.timestamp)})
    return version


def last_version(ledger: Source, found: Target) -> int:
    """The aggregate's last stored version (0 when it has none)."""
    head = ledger.app.recorder.select_events(found.aggregate_id, desc=True, limit=1)
    return head[0].originator_version if head else 0


def as_of(ledger: Source, public_id: str, *, at: datetime | None = None,
          version: int | None = None) -> AsOf:
    """The aggregate replayed up to `version` (or the last version recorded by `at`), in
    the shape `ledger show` prints. Whatever depends on the clock (a campaign's status)
    is evaluated at `at`, or at the time the version was recorded, never at the wall clock."""
    found = target(ledger, public_id)
    last = last_version(ledger, found)
    if version is not None and at is None:
        if not 1 <= version <= last:
            raise NotFound(f"{found.label} has no version {version}: its versions are 1 to "
                           f"{last}", {"version": version, "last_version": last})
        chosen = version
    elif at is not None and version is None:
        chosen = version_at(ledger, found, at)
    else:
        raise ValueError("give exactly one of at= and version=")
    if found.kind == "campaign":
        campaign = load(ledger.app, found.aggregate_id, Campaign, found.label, chosen)
        moment = at or campaign.modified_on
        count = registrations_by(ledger, campaign.campaign_id, moment)
        return AsOf(campaign_state(campaign, moment, count), chosen, last, campaign.modified_on)
    reg = load(ledger.app, found.aggregate_id, Registration, found.label, chosen)
    return AsOf(registration_state(reg), chosen, last, reg.modified_on)


def registrations_by(ledger: Source, campaign_id: str, moment: datetime) -> int:
    """How many registrations of the campaign had been recorded by `moment`."""
    count = 0
    for registration_id in ledger.app.store.registrations_of(campaign_id):
        first = next(stored_events(ledger, UUID(registration_id), page=1), None)
        if first is not None and first.timestamp <= moment:
            count += 1
    return count
