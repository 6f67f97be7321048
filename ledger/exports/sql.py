"""`ledger sql`: DuckDB over the Parquet exports, each export a view named after it.

Views: `events` (the event log, every market: its files that a state file covers, with
the partition columns `market`, `year`, `campaign`), and per exported read model a schema
named after it holding a view per table (`campaign_performance.cp_sellers`), each table
also as a view of its own name in the main schema (`cp_sellers`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from ledger.exports.eventlog import committed_files

EVENTS = "events"
HIVE = "hive_partitioning = true, hive_types = {'market': VARCHAR, 'year': INTEGER, " \
       "'campaign': VARCHAR}, union_by_name = true"


class NoExports(RuntimeError):
    """The export folder holds nothing to query."""


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _name(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def connect(export_dir: Path) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with a view per export found in `export_dir`, and their names."""
    if not export_dir.is_dir():
        raise NoExports(f"{export_dir} does not exist: run `ledger export all --format "
                        "parquet` first (or give --export-dir)")
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")  # timestamps with zone come back in UTC
    views: list[str] = []
    files = committed_files(export_dir / EVENTS)
    if files:
        listed = ", ".join(_text(str(f)) for f in files)
        con.execute(f"CREATE VIEW {EVENTS} AS SELECT * FROM read_parquet([{listed}], {HIVE})")
        views.append(EVENTS)
    for folder in sorted(p for p in export_dir.iterdir() if p.is_dir() and p.name != EVENTS):
        tables = sorted(folder.glob("*.parquet"))
        if tables:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_name(folder.name)}")
        for table in tables:
            source = f"SELECT * FROM read_parquet({_text(str(table))})"
            con.execute(f"CREATE VIEW {_name(folder.name)}.{_name(table.stem)} AS {source}")
            con.execute(f"CREATE OR REPLACE VIEW {_name(table.stem)} AS {source}")
            views += [f"{folder.name}.{table.stem}", table.stem]
    if not views:
        raise NoExports(f"{export_dir} holds no exports: run `ledger export all --format "
                        "parquet` first")
    return con, views


def run(con: duckdb.DuckDBPyConnection, sql: str, page: int = 1_000
          ) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The columns `sql` returns, and its rows as dicts, fetched a page at a time."""
    result = con.execute(sql)
    columns = [d[0] for d in result.description or ()]

    def rows() -> Iterator[dict[str, Any]]:
        while True:
            fetched: Sequence[tuple[Any, ...]] = result.fetchmany(page)
            for values in fetched:
                yield dict(zip(columns, values, strict=True))
            if len(fetched) < page:
                return

    return columns, rows()
