"""A read model's tables as Parquet files, one per table, from one consistent snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.exports.columns import KINDS, json_text
from ledger.exports.files import settle, temporary
from ledger.projections.tables import Table
from ledger.projections.view import ViewMixin

PAGE = 5_000  # rows fetched and written (one row group) at a time


@dataclass(frozen=True)
class Written:
    """One exported table: where, how many rows, and the read model's position."""

    table: str
    path: Path
    rows: int
    position: int


def schema(table: Table, read_model: str, position: int) -> pa.Schema:
    """The table's columns as Arrow fields, with where they came from as file metadata."""
    fields = [pa.field(c, KINDS[table.kind(c)], nullable=c not in table.keys)
              for c in table.all_columns]
    return pa.schema(fields, metadata={"ledger.read_model": read_model,
                                       "ledger.table": table.name,
                                       "ledger.position": str(position)})


def export_read_model(view: ViewMixin, read_model: str, tables: Sequence[Table],
                      target: Callable[[Table], Path]) -> list[Written]:
    """Each of `tables` (of `read_model`) into `target(table)`, all read in one snapshot,
    so that they agree with each other and with the position recorded in each file."""
    physical = ["rm_" + t.name for t in tables]
    done: list[tuple[Table, Path, Path, int]] = []
    try:
        with view.snapshot(physical) as c:
            position = view.position_in(c, read_model)
            for table in tables:
                path = target(table)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = temporary(path)
                rows = _write_table(view, c, table, tmp, schema(table, read_model, position))
                done.append((table, path, tmp, rows))
    except BaseException:  # none of them, rather than some tables of another moment
        for _, _, tmp, _ in done:
            tmp.unlink(missing_ok=True)
        raise
    for _, path, tmp, _ in done:
        settle(tmp, path)
    return [Written(t.name, path, rows, position) for t, path, _, rows in done]


def _pages(c: Any, sql: str) -> Iterator[list[Any]]:
    """The rows `sql` selects, a page at a time, in the snapshot's transaction: through
    the library's SQLite cursor's own, or a PostgreSQL server-side cursor (psycopg's
    client-side one would fetch the whole table at once)."""
    if hasattr(c, "sqlite_cursor"):
        cursor = c.sqlite_cursor
    else:
        cursor = c.connection.cursor("ledger_export", row_factory=c.row_factory)
    try:
        cursor.execute(sql)
        while True:
            fetched = cursor.fetchmany(PAGE)
            yield fetched
            if len(fetched) < PAGE:
                return
    finally:
        if cursor is not getattr(c, "sqlite_cursor", None):
            cursor.close()


def _write_table(view: ViewMixin, c: Any, table: Table, tmp: Path, shape: pa.Schema) -> int:
    keys = ", ".join(f'"{k}"' for k in table.keys)
    sql = f"SELECT * FROM {view.dialect.q('rm_' + table.name)} ORDER BY {keys}"
    jsons = [col for col in table.all_columns if table.kind(col) == "json"]
    count = 0
    try:
        with pq.ParquetWriter(tmp, shape) as writer:
            for fetched in _pages(c, sql):
                rows = [view.decode_row(table, row) for row in fetched]
                for row in rows:
                    for col in jsons:
                        row[col] = json_text(row[col])
                if rows or count == 0:  # an empty table still gets its columns
                    writer.write_table(pa.Table.from_pylist(rows, schema=shape))
                count += len(rows)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
