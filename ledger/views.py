"""JSON shapes of the current state: `ledger show` and `ledger events` print these."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID

from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.values import instant_text

_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "actor", "command_id",
                "originator_topic"}


# Keys whose string values are instants (besides every key ending in `_at`): the ledger's
# own names, never a user's text, so a note that happens to read like a time is left alone.
INSTANT_KEYS = frozenset({"at", "now", "clock", "period_start", "period_end"})
# Keys whose values map ids to instants (a session id → when it was submitted).
INSTANT_MAPS = frozenset({"submitted"})


def jsonable(value: Any, zone: tzinfo | None = None) -> Any:
    """Decimal → decimal string, UUID → str, and every instant → `instant_text` (UTC `Z`,
    or `zone`), recursively: the one place values become output, CLI and service alike.

    Instants arrive as datetimes (events; PostgreSQL's read models, in the session's
    zone) or as ISO-8601 text (SQLite's read models, JSON columns, stored results), in
    whatever offset they were given with; both come out spelled alike."""
    return _jsonable(value, zone, None)


def _jsonable(value: Any, zone: tzinfo | None, key: str | None) -> Any:
    if isinstance(value, datetime):
        return instant_text(value, zone)
    if isinstance(value, str):
        return _instant_string(value, zone) if _names_instant(key) else value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, zone, "at" if key in INSTANT_MAPS else str(k))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, zone, key) for v in value]
    return value


def _names_instant(key: str | None) -> bool:
    return key is not None and (key.endswith("_at") or key in INSTANT_KEYS)


def _instant_string(text: str, zone: tzinfo | None) -> str:
    """An instant's text respelled; any other text (not a time, no zone) as it is."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return text if moment.tzinfo is None else instant_text(moment, zone)


def _object(value: dict[str, Any]) -> dict[str, Any]:
    return {str(k): jsonable(v) for k, v in value.items()}


def dumps(value: Any, *, indent: int | None = None, zone: tzinfo | None = None) -> str:
    """JSON text, instants spelled by `jsonable`, non-ASCII kept readable; a lone surrogate
    (which UTF-8 cannot carry, so printing it would fail) is written as its `\\ud800`
    escape instead."""
    data = jsonable(value, zone)
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, indent=indent, ensure_ascii=True)
    return text


def campaign_state(campaign: Campaign, now: datetime, registrations: int) -> dict[str, Any]:
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
        "performance_reports": len(reg.report_ids),
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
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    return "-" if value is None else str(value)
