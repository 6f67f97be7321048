"""Field types for command payloads: ids, times with a zone, decimal-string money, counts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated
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

from ledger.values import EXAMPLE, MONEY_SCHEMA_PATTERN, RANGE, parse_instant, parse_money

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


def _uuid_text(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise ValueError("is not a registration id (a UUID)") from None


Instant = Annotated[datetime, BeforeValidator(parse_instant), WithJsonSchema({
    "type": "string", "format": "date-time", "examples": [EXAMPLE],
    "description": f"ISO-8601 with a zone, {RANGE}."})]
# Declared, or the schema would say "number or string": a JSON number is refused. The
# pattern is the one the parser matches whole (test_values_schema.py holds them equal).
Money = Annotated[Decimal, BeforeValidator(parse_money), WithJsonSchema(
    {"type": "string", "pattern": MONEY_SCHEMA_PATTERN, "examples": ["1250.50"]})]
RegistrationId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_uuid_text)]
