"""List reads row by row: a stored row that cannot be read is reported in its place, so one
bad row (a time outside the ledger's range from an older ledger, an edited cell) never fails
a whole list, on either backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ledger.errors import first_line
from ledger.projections.tables import Row, Table
from ledger.projections.view import ViewMixin
from ledger.values import RANGE, instant_problem

Json = dict[str, Any]
Build = Callable[[Row], Json | None]  # None: the row is filtered out
# What a bad stored value makes decoding or the row's computed fields raise.
DATA_ERRORS = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError)
UNREADABLE = "unreadable"


def listed(view: ViewMixin, table: Table, sql: str, params: Sequence[Any], build: Build,
           identity: Sequence[str]) -> list[Json]:
    """`build` applied to each row `sql` selects from `table`; a row that cannot be read
    (or built) becomes its `identity` columns and `"unreadable": why`."""
    rows: list[Json] = []
    for raw in view.query(sql, params, tolerant=True):
        try:
            built = build(_decoded(view, table, raw))
        except DATA_ERRORS as e:
            rows.append({**{k: raw.get(k) for k in identity}, UNREADABLE: first_line(e)})
            continue
        if built is not None:
            rows.append(built)
    return rows


def _decoded(view: ViewMixin, table: Table, raw: Row) -> Row:
    """The row as Python values, each time checked against the ledger's range: the same
    stored content then reads alike on both backends (PostgreSQL holds years Python's
    datetime cannot, SQLite any text)."""
    row: Row = {}
    for column, decode in zip(table.all_columns, view.dialect.decoders(table), strict=True):
        value = raw[column]
        try:
            row[column] = value if decode is None or value is None else decode(value)
        except DATA_ERRORS as e:
            if table.kind(column) != "time":
                raise ValueError(f"{column}: {first_line(e)}") from None
        if table.kind(column) == "time" and value is not None and not (
                isinstance(row.get(column), datetime) and instant_problem(row[column]) is None):
            shown = value.isoformat() if isinstance(value, datetime) else str(value)[:60]
            raise ValueError(f"{column}: {shown!r} is not a time {RANGE}")
    return row
