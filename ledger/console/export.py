"""`ledger export`: a read-model table as CSV or JSON Lines, of one store or every market.

A format is a writer in `WRITERS`: `(stream, rows, columns, zone)`. Rows come from
`table_rows` (one store) or `market_rows` (every market of --config, each row with a
`market` column first): the one place that column is added, whatever the format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import tzinfo
from typing import Any, TextIO

import click

from ledger.console.options import Settings, friendly_errors, json_option
from ledger.console.printing import write_csv
from ledger.console.queries import fresh_projector
from ledger.console.streams import output_file
from ledger.projections.registry import READ_MODELS
from ledger.values import dumps


def _export_tables() -> dict[str, Any]:
    return {t.name: t for model in READ_MODELS.values() for t in model.tables}


def _write_jsonl(stream: TextIO, rows: Iterable[dict[str, Any]], _columns: list[str],
                 zone: tzinfo | None) -> None:
    for row in rows:
        stream.write(dumps(row, zone=zone) + "\n")


Writer = Callable[[TextIO, Iterable[dict[str, Any]], list[str], tzinfo | None], None]
WRITERS: dict[str, Writer] = {"csv": write_csv, "jsonl": _write_jsonl}
MARKET = "market"  # the column `--all-markets` puts first


@click.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(list(WRITERS)), default=None,
              help="csv (the default) or jsonl: JSON Lines, one object per row.")
@json_option("The same as --format jsonl: one JSON object per row.")
@click.option("--out", default="-", metavar="FILE",
              help="File to write (default: standard output).")
@click.option("--fresh", is_flag=True, help="Catch the table's read model up first.")
@click.option("--all-markets", is_flag=True,
              help="Every market of --config in one dataset, with a `market` column first "
                   "(every market's store must answer, or nothing is written).")
@click.pass_obj
@friendly_errors
def export(settings: Settings, name: str, fmt: str | None, as_json: bool, out: str,
           fresh: bool, all_markets: bool) -> None:
    """Export a read-model table (e.g. manage_registrations) as CSV or JSON Lines.

    Money stays exact (decimal strings); times are instants as every command prints
    them (UTC with Z, or --tz); nested values are JSON. In CSV a cell that begins with =,
    +, -, @, a tab or a carriage return gets a ' in front, so a spreadsheet shows it as
    text instead of running it; JSON Lines are verbatim.

    \b
    Examples:
      ledger export ytd_months --format csv --out ytd.csv
      ledger export review_decisions --json | jq .decided_at
      ledger --config markets.toml export ytd_months --all-markets --out ytd.csv
    """
    if as_json and fmt == "csv":
        raise click.UsageError("--json is --format jsonl: give one of them, not --format csv")
    fmt = "jsonl" if as_json else fmt or "csv"
    tables = _export_tables()
    key = name.removeprefix("rm_")
    if key not in tables:
        raise click.BadParameter(f"unknown table {name!r}; one of: {', '.join(tables)}",
                                 param_hint="NAME")
    spec = tables[key]
    columns = list(spec.all_columns)
    if all_markets:
        rows = market_rows(settings, key, fresh)
        columns = [MARKET, *columns]
    else:
        rows = table_rows(settings, key, fresh)
    with output_file(out) as stream:
        WRITERS[fmt](stream, rows, columns, settings.printer.zone)


def table_rows(settings: Settings, key: str, fresh: bool) -> Iterator[dict[str, Any]]:
    """Table `key`'s rows in key order, as every command prints values."""
    spec = _export_tables()[key]
    owner = next(m.name for m in READ_MODELS.values() if spec in m.tables)
    view = fresh_projector(settings, owner, fresh).view
    return (settings.printer.json(view.decode_row(spec, row)) for row in view.query(
        f"SELECT * FROM {view.dialect.q('rm_' + key)} ORDER BY "
        + ", ".join(f'"{k}"' for k in spec.keys)))


def market_rows(settings: Settings, key: str, fresh: bool) -> Iterator[dict[str, Any]]:
    """Every market's rows, the market's code first in each; every market is opened (and
    its read model checked) before a row is written, so a store that is down fails the
    export before the file is begun rather than leaving a dataset without it."""
    markets = settings.all_markets()
    opened = [(m.market_code or "", table_rows(m, key, fresh)) for m in markets]

    def chained() -> Iterator[dict[str, Any]]:
        for code, rows in opened:
            for row in rows:
                yield {MARKET: code, **row}
    return chained()
