"""Recorded times that go backwards along an aggregate's versions (in stores written before
the ledger refused them): `audit as-of --at` cannot tell the truth about those aggregates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import StoredEvent

from ledger.aggregates.campaign import CampaignCreated
from ledger.aggregates.registration_events import Registered
from ledger.audit.history import Source
from ledger.audit.keyorder import events_in_key_order

FINDING = "time_went_backwards"
SUMMARY = "recorded earlier than the aggregate's previous version"


@dataclass
class Head:
    """The aggregate being read, and its previous version's time."""

    originator_id: Any
    aggregate: str  # "campaign" | "registration"
    aggregate_id: str  # its public id
    campaign_id: str | None
    seller_id: str | None
    version: int
    recorded_at: datetime


def backwards(ledger: Source, campaign: str | None = None) -> Iterator[dict[str, Any]]:
    """One finding per event recorded earlier than the version before it, in aggregate order.

    Events are read in (aggregate, version) order, a page at a time, keeping only the
    previous event: memory stays flat whatever the store's size. The findings are collected
    inside the read snapshot and yielded after it closes, so a slow reader cannot hold it.
    """
    store, mapper = ledger.app.store, ledger.app.mapper
    found: list[dict[str, Any]] = []
    head: Head | None = None
    with store.snapshot() as curs:
        for row in events_in_key_order(store, curs, "originator_id, originator_version, "
                                                    "topic, state"):
            event: Any = mapper.to_domain_event(StoredEvent(
                originator_id=row["originator_id"], originator_version=row["originator_version"],
                topic=row["topic"], state=bytes(row["state"])))
            if head is None or head.originator_id != row["originator_id"]:
                head = _first(row["originator_id"], event)
            elif event.timestamp < head.recorded_at and campaign in (None, head.campaign_id):
                found.append(_finding(head, event))
            head.version, head.recorded_at = event.originator_version, event.timestamp
    yield from found


def _first(originator_id: Any, event: Any) -> Head:
    """What the first event of an aggregate says about it (a registration names its seller)."""
    if isinstance(event, Registered):
        return Head(originator_id, "registration", event.registration_id, event.campaign_id,
                    event.seller_id, 1, event.timestamp)
    if isinstance(event, CampaignCreated):
        return Head(originator_id, "campaign", event.campaign_id, event.campaign_id, None, 1,
                    event.timestamp)
    # Its first events are gone (`ledger audit verify` says so): name it by its UUID.
    return Head(originator_id, "aggregate", str(originator_id), None, None,
                event.originator_version, event.timestamp)


def _finding(head: Head, event: Any) -> dict[str, Any]:
    """The shape of `ledger audit findings` rows (decision keys empty), with its evidence."""
    registration = head.aggregate_id if head.aggregate == "registration" else None
    return {
        "finding": FINDING, "summary": SUMMARY, "decided_at": None,
        "registration_id": registration, "version": event.originator_version,
        "campaign_id": head.campaign_id, "seller_id": head.seller_id, "decision": None,
        "session_ids": [], "reviewer_id": None, "reviewer_role": None,
        "command_id": event.command_id,
        "evidence": {
            "aggregate": head.aggregate, "aggregate_id": head.aggregate_id,
            "version": event.originator_version, "recorded_at": event.timestamp,
            "previous_version": head.version, "previous_recorded_at": head.recorded_at,
            "behind_seconds": (head.recorded_at - event.timestamp).total_seconds(),
        },
    }
