"""The event log as rows: each stored event's envelope (position, time, aggregate, type,
actor, command) and its payload's fields as typed columns, with the campaign it belongs to.

One wide table for every event type: a field is a column (null where an event type does
not have it), typed from the event classes' annotations (`columns.arrow_type`). A field
two classes annotate differently, and any field of an event type this version does not
know (written by a newer ledger), goes into `other`, a JSON object as text.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from uuid import UUID

import pyarrow as pa
from eventsourcing.utils import TopicError

from ledger.aggregates import campaign as campaign_events
from ledger.aggregates import registration_events
from ledger.aggregates.base import LedgerCreated, LedgerEvent
from ledger.audit.history import Source
from ledger.exports.columns import JSON, TIME, arrow_type, json_text

ENVELOPE: dict[str, pa.DataType] = {
    "position": pa.int64(), "recorded_at": TIME, "aggregate_id": pa.string(),
    "aggregate_type": pa.string(), "version": pa.int64(), "event_type": pa.string(),
    "actor_id": pa.string(), "actor_role": pa.string(), "command_id": pa.string(),
    "campaign_id": pa.string(),
}
BASE_FIELDS = {"originator_id", "originator_version", "originator_topic", "timestamp",
               "actor", "command_id", "originator_id_type"}
AGGREGATES = {campaign_events: "campaign", registration_events: "registration"}
UNKNOWN_CAMPAIGN = "_unknown"  # the partition of an event whose campaign cannot be found


def event_classes() -> list[tuple[str, type[Any]]]:
    """(aggregate type, class) of every event the ledger records, in a fixed order."""
    found = []
    for module, kind in AGGREGATES.items():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, LedgerCreated | LedgerEvent):
                found.append((kind, cls))
    return found


def payload_fields() -> dict[str, pa.DataType | None]:
    """Every payload field of every event class, by name (sorted), with its Arrow type
    (None: JSON text, as for a field that two classes annotate differently)."""
    types: dict[str, set[str]] = {}
    arrow: dict[str, pa.DataType | None] = {}
    for _, cls in event_classes():
        for name, hint in typing.get_type_hints(cls).items():
            if name in BASE_FIELDS or name.startswith("_") or name == "class_version":
                continue
            kind = arrow_type(hint)
            types.setdefault(name, set()).add(str(kind))
            arrow[name] = kind
    return {name: (arrow[name] if len(types[name]) == 1 else None) for name in sorted(arrow)
            if name not in ENVELOPE}


PAYLOAD = payload_fields()
SCHEMA = pa.schema(
    [pa.field(n, t) for n, t in ENVELOPE.items()]
    + [pa.field(n, JSON if t is None else t) for n, t in PAYLOAD.items()]
    + [pa.field("other", JSON)],
    metadata={"ledger.export": "events", "ledger.export_version": "1"})
KIND_OF = {cls: kind for kind, cls in event_classes()}


@dataclass(frozen=True)
class Row:
    """One event as a row, and the partition it goes to (year of its recorded time, UTC)."""

    values: dict[str, Any]
    year: int
    campaign: str


class EventRows:
    """Reads the store's events after a position, a page at a time, as `Row`s. Remembers
    which campaign each aggregate belongs to (memory grows with aggregates, not events);
    an aggregate first seen in an earlier export is looked up by its first event."""

    def __init__(self, source: Source) -> None:
        self.app = source.app
        self.campaigns: dict[UUID, str] = {}

    def pages(self, after: int, until: int, page: int) -> Iterator[list[Row]]:
        """Pages of rows for positions in (`after`, `until`], in store order."""
        while after < until:
            notifications = self.app.recorder.select_notifications(
                after, page, stop=until, inclusive_of_start=False)
            if not notifications:
                return
            yield [self.row(n) for n in notifications]
            after = notifications[-1].id

    def row(self, stored: Any) -> Row:
        try:
            event: Any = self.app.mapper.to_domain_event(stored)
        except TopicError:  # written by a newer ledger: its fields as JSON in `other`
            return self._unknown(stored)
        fields = {k: v for k, v in vars(event).items() if k not in BASE_FIELDS}
        campaign = self.campaign_of(stored.originator_id, fields)
        values: dict[str, Any] = {
            "position": stored.id, "recorded_at": event.timestamp,
            "aggregate_id": str(stored.originator_id),
            "aggregate_type": KIND_OF.get(type(event), "unknown"),
            "version": stored.originator_version, "event_type": type(event).__name__,
            "actor_id": event.actor["id"], "actor_role": event.actor["role"],
            "command_id": event.command_id, "campaign_id": campaign}
        other = {}
        for name, value in fields.items():
            if name in PAYLOAD:
                values[name] = value if PAYLOAD[name] is not None else json_text(value)
            elif name not in ENVELOPE:
                other[name] = value
        values["other"] = json_text(other) if other else None
        return Row(values, event.timestamp.astimezone(UTC).year, campaign or UNKNOWN_CAMPAIGN)

    def campaign_of(self, aggregate_id: UUID, fields: dict[str, Any]) -> str | None:
        """The campaign's slug: from the event itself (`CampaignCreated`, `Registered`), or
        from the aggregate's first event."""
        known = self.campaigns.get(aggregate_id)
        if known is None:
            known = fields.get("campaign_id")
            if known is None:
                first = self.app.recorder.select_events(aggregate_id, lte=1, limit=1)
                if first:
                    known = getattr(self.app.mapper.to_domain_event(first[0]),
                                    "campaign_id", None)
            if known is not None:
                self.campaigns[aggregate_id] = known
        return known

    def _unknown(self, stored: Any) -> Row:
        state = self.app.mapper.transcoder.decode(stored.state)
        topic = stored.topic.rpartition(":")[2] or stored.topic
        timestamp = state.get("timestamp")
        actor = state.get("actor") or {}
        campaign = self.campaigns.get(stored.originator_id)
        values = {"position": stored.id, "recorded_at": timestamp,
                  "aggregate_id": str(stored.originator_id), "aggregate_type": "unknown",
                  "version": stored.originator_version, "event_type": topic,
                  "actor_id": actor.get("id"), "actor_role": actor.get("role"),
                  "command_id": state.get("command_id"), "campaign_id": campaign,
                  "other": json_text({k: v for k, v in state.items() if k not in BASE_FIELDS})}
        year = timestamp.astimezone(UTC).year if hasattr(timestamp, "astimezone") else 0
        return Row(values, year, campaign or UNKNOWN_CAMPAIGN)
