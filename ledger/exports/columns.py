"""How ledger values become Arrow (Parquet) types: money as decimal128 with the contract's
scale, instants as UTC timestamps, ids as strings, JSON documents as JSON text."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from ledger.values import dumps

# DOMAIN.md "Values": at most 18 digits before the point and 6 after. Sums of many
# amounts need more before it: 38 (decimal128's most) leaves 32, and the scale stays 6.
MONEY_SCALE = 6
MONEY = pa.decimal128(38, MONEY_SCALE)
TIME = pa.timestamp("us", tz="UTC")
JSON = pa.string()  # a JSON document as text (DuckDB: `json(col)`, `col->>'$.key'`)

# A read-model column kind (projections/tables.py) → its Arrow type.
KINDS: dict[str, pa.DataType] = {"text": pa.string(), "int": pa.int64(), "money": MONEY,
                                 "time": TIME, "json": JSON}


def json_text(value: Any) -> str | None:
    """A nested value as JSON text, spelled as every command prints it (instants UTC, Z)."""
    return None if value is None else dumps(value)


def arrow_type(hint: Any) -> pa.DataType | None:
    """The Arrow type of an event field's annotation: scalars typed, a list of strings as
    a Parquet list; None for any other nested value (objects, lists of objects), which is
    written as JSON text."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return arrow_type(args[0])  # X | None: nullable X (every column is nullable)
    if typing.get_origin(hint) is list and args == [str]:
        return pa.list_(pa.string())
    scalars: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), bool: pa.bool_(),
                                       Decimal: MONEY, datetime: TIME}
    return scalars.get(hint)
