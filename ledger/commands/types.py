"""Field types for command payloads: ids, times with a zone, decimal-string money, counts."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$"),
]
Slug = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Note = Annotated[str, StringConstraints(max_length=2000)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Count = Annotated[StrictInt, Field(ge=0, le=10**12)]
Level = Annotated[StrictInt, Field(ge=0, le=1000)]
Flag = StrictBool
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]

_MONEY = re.compile(r"^-?\d{1,18}(\.\d{1,6})?$")


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(
            "must be an ISO-8601 time string with a zone, e.g. 2026-11-11T20:00:00+07:00"
        )
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value[:60]!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError("needs a timezone (add Z or an offset such as +07:00)")
    return parsed


def _money(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "1250.50" (never a JSON number)')
    if not _MONEY.match(value):
        raise ValueError(f"{value[:40]!r} is not a finite decimal amount")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value[:40]!r} is not a decimal amount") from None
    if amount < 0:
        raise ValueError("must not be negative")
    return amount


def _uuid_text(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise ValueError("is not a registration id (a UUID)") from None


Instant = Annotated[datetime, BeforeValidator(_instant)]
# Declared, or the schema would say "number or string": a JSON number is refused.
Money = Annotated[Decimal, BeforeValidator(_money), WithJsonSchema(
    {"type": "string", "pattern": r"^\d{1,18}(\.\d{1,6})?$", "examples": ["1250.50"]})]
RegistrationId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_uuid_text)]
