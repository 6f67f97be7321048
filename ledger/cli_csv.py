"""CSV for spreadsheets: nested values as JSON, and no cell a spreadsheet would run.

A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is read by
spreadsheet tools as a formula (`=HYPERLINK(...)` in a seller's `main_category`); it is
written with a single quote in front (the OWASP advice), so it shows as the text it is.
Every cell is treated alike, numbers included: the ledger's numbers (money, counts,
seconds) are never negative, so none of them ever begins with one of these.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from typing import Any, TextIO

from ledger.values import dumps, jsonable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(text: str) -> str:
    """`text` as a spreadsheet shows it as text: a `'` in front when it starts a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_cell(value: Any, zone: tzinfo | None = None) -> str:
    """One cell: empty for null, JSON for lists and objects, else the value's text (an
    instant in `zone`, as every command prints it)."""
    if value is None:
        return ""
    text = dumps(value, zone=zone) if isinstance(value, list | dict) else str(
        jsonable(value, zone))
    return neutralised(text)


def write_csv(out: TextIO, rows: Iterable[dict[str, Any]],
              columns: Sequence[str] | None = None, zone: tzinfo | None = None) -> None:
    """A header (`columns`, else the first row's keys, else none), then a line per row;
    the rows' instants printed in `zone` (None: UTC, `Z`)."""
    writer: csv.DictWriter[str] | None = None
    if columns is not None:
        writer = csv.DictWriter(out, fieldnames=list(columns))
        writer.writeheader()
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row))
            writer.writeheader()
        writer.writerow({str(k): csv_cell(v, zone) for k, v in jsonable(row, zone).items()})
