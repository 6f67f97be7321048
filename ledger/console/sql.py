"""`ledger sql`: DuckDB over the Parquet exports (the `analytics` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from ledger.console.options import (
    Failure,
    Settings,
    export_dir_option,
    friendly_errors,
    json_option,
)
from ledger.errors import first_line
from ledger.exports.extras import ExtraMissing, need


@click.command("sql")
@click.argument("query")
@export_dir_option()
@json_option("One JSON object per row (JSON Lines); money and times exact.")
@click.pass_obj
@friendly_errors
def sql(settings: Settings, query: str, export_dir: str, as_json: bool) -> None:
    """Run a DuckDB query over the Parquet exports (`ledger export ... --format parquet`).

    Views: `events` (the event log: one row per event, its payload's fields as columns,
    and the partitions `market`, `year`, `campaign`), each exported table by its name
    (`cp_sellers`, `ytd_months`, `review_decisions`, ...) and the same per read model
    (`campaign_performance.cp_sellers`). Money is DECIMAL(38,6), times TIMESTAMPTZ in
    UTC. Reads files only: the store is not touched. Needs the `analytics` extra.

    \b
    Examples:
      ledger export all --format parquet
      ledger sql "SELECT campaign, sum(gmv) AS gmv, sum(orders) AS orders
                  FROM events WHERE event_type = 'PerformanceRecorded' GROUP BY 1"
      ledger sql "SELECT seller_id, gmv FROM cp_sellers ORDER BY gmv DESC LIMIT 10" --json
      ledger sql "SHOW ALL TABLES"
    """
    try:
        need("duckdb", "ledger sql")
        need("pyarrow", "ledger sql")
    except ExtraMissing as e:
        raise Failure(str(e)) from None
    import duckdb

    from ledger.exports.sql import NoExports, connect, run

    try:
        con, views = connect(Path(export_dir))
    except NoExports as e:
        raise Failure(str(e)) from None
    with con:
        try:
            columns, rows = run(con, query)
            if as_json:
                settings.printer.lines(rows)
            else:
                settings.printer.table(rows, columns)
        except duckdb.Error as e:
            names = ", ".join(v for v in views if "." not in v)
            raise Failure(f"{first_line(e)} (views: {names})") from None
