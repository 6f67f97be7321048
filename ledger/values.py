"""DOMAIN.md's Values: the instants and money spellings the ledger accepts, in one place."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any

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
