"""What the faces show of the current state: a campaign, a registration and an event as JSON
shapes (`ledger show`, `ledger events`, the service, as-of), and rows as a text table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.values import jsonable

_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "actor", "command_id",
                "originator_topic"}


def _object(value: dict[str, Any]) -> dict[str, Any]:
    return {str(k): jsonable(v) for k, v in value.items()}


def campaign_state(campaign: Campaign, now: datetime, registrations: int) -> dict[str, Any]:
    """A campaign's current state as `ledger show campaign` prints it."""
    return _object({
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "kind": campaign.kind,
        "review_mode": campaign.review_mode,
        "status": campaign.status(now),
        "registration_opens_at": campaign.registration_opens_at,
        "registration_closes_at": campaign.registration_closes_at,
        "starts_at": campaign.starts_at,
        "ends_at": campaign.ends_at,
        "requirements": campaign.requirements,
        "levels": campaign.levels,
        "allow_duplicates": campaign.allow_duplicates,
        "max_sessions": campaign.max_sessions,
        "expired_at": campaign.expired_at,
        "registrations": registrations,
        "version": campaign.version,
    })


def registration_state(reg: Registration) -> dict[str, Any]:
    """A registration's current state as `ledger show registration` prints it."""
    return _object({
        "registration_id": reg.registration_id,
        "campaign_id": reg.campaign_id,
        "seller_id": reg.seller_id,
        "account_id": reg.account_id,
        "main_category": reg.main_category,
        "level": reg.level,
        "review_mode": reg.terms["review_mode"],
        "status": reg.status(),
        "profile": reg.profile,
        "eligibility": reg.eligibility,
        "sessions": [s.as_dict() for s in reg.sessions.values()],
        "decisions": reg.decisions,
        "performance_reports": reg.reports,
        "submitted_at": reg.created_on,
        "updated_at": reg.modified_on,
        "version": reg.version,
    })


def event_record(event: Any) -> dict[str, Any]:
    """One stored event: version, recorded time, type, actor, command_id, and its data."""
    data = {k: v for k, v in vars(event).items() if k not in _BASE_FIELDS}
    return _object({
        "version": event.originator_version,
        "recorded_at": event.timestamp,
        "type": type(event).__name__,
        "actor": event.actor,
        "command_id": event.command_id,
        "data": data,
    })


def table(rows: list[dict[str, Any]], columns: Sequence[str],
          zone: tzinfo | None = None) -> str:
    """A plain text table for people (programs use --json); instants as in JSON."""
    if not rows:
        return "(nothing)"
    cells = [[cell(row.get(c)) for c in columns] for row in jsonable(rows, zone)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def cell(value: Any) -> str:
    """One value as a table cell: lists joined with commas, None as `-`."""
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    return "-" if value is None else str(value)
