"""DOMAIN.md's Values: the instants and money the ledger accepts; every value's output spelling."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID

# Matched whole (fullmatch), with ASCII `[0-9]`: in Python `\d` also matches other scripts'
# digits (Arabic-Indic, fullwidth, ...) and `$` matches before a final newline ("100\n").
MONEY_PATTERN = r"[0-9]{1,18}(\.[0-9]{1,6})?"
# The same, as published in OpenAPI: JSON Schema patterns are ECMA-262 regexes, unanchored,
# where `^` and `$` (without the m flag) are the ends of the string.
MONEY_SCHEMA_PATTERN = f"^{MONEY_PATTERN}$"
_MONEY = re.compile(MONEY_PATTERN)

# Half-open: every backend stores, compares and prints these alike (PostgreSQL's
# timestamptz holds far more than Python's datetime, which stops at year 9999).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2200, 1, 1, tzinfo=UTC)
RANGE = "between 2000-01-01T00:00:00Z (inclusive) and 2200-01-01T00:00:00Z (exclusive)"
EXAMPLE = "2026-11-11T20:00:00+07:00"


def instant_text(moment: datetime, zone: tzinfo | None = None) -> str:
    """The one spelling of an instant in output (DOMAIN.md, Values: Output): ISO-8601 in
    UTC with `Z`, or in `zone` with its offset (still `Z` where that offset is zero);
    microseconds only when they are not zero. The same instant gives the same text on
    every backend, whatever offset it was given or stored with."""
    text = moment.astimezone(zone or UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_money(value: Any) -> Decimal:
    """A money JSON value as a Decimal; ValueError saying why when it is not one."""
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "1250.50" (never a JSON number)')
    if _MONEY.fullmatch(value) is None:
        raise ValueError(f"{value[:40]!r} is not an amount: ASCII digits, an optional "
                         'fraction of up to 6 digits, no sign, e.g. "1250.50"')
    return Decimal(value)


def instant_problem(value: datetime) -> str | None:
    """Why a parsed time is not an instant the ledger accepts (None: it is one)."""
    offset = value.utcoffset()
    if offset is None:
        return "needs a timezone (add Z or an offset such as +07:00)"
    if offset.seconds % 60 or offset.microseconds:
        return "the zone's offset must be whole minutes, e.g. +07:00"
    if not EARLIEST <= value < END:
        return f"must be {RANGE}"
    return None


def parse_instant(value: Any) -> datetime:
    """An ISO-8601 time with a zone, inside the ledger's range; ValueError saying why not."""
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO-8601 time string with a zone, e.g. {EXAMPLE}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:60]!r} is not an ISO-8601 time, e.g. {EXAMPLE}") from None
    problem = instant_problem(parsed)
    if problem is not None:
        raise ValueError(problem if parsed.utcoffset() is None else f"{value[:60]!r}: {problem}")
    return parsed


# Keys whose string values are instants (besides every key ending in `_at`): the ledger's
# own names, never a user's text, so a note that happens to read like a time is left alone.
INSTANT_KEYS = frozenset({"at", "now", "clock", "period_start", "period_end",
                          "hour"})  # campaign performance's per-hour series
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
