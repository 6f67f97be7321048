"""`ledger export`: a read-model table as CSV or JSON Lines."""

from __future__ import annotations

from typing import Any

import click

from ledger.console.options import Settings, friendly_errors, json_option
from ledger.console.printing import write_csv
from ledger.console.queries import fresh_projector
from ledger.console.streams import output_file
from ledger.projections.registry import READ_MODELS
from ledger.values import dumps


def _export_tables() -> dict[str, Any]:
    return {t.name: t for model in READ_MODELS.values() for t in model.tables}


@click.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="csv (the default) or jsonl: JSON Lines, one object per row.")
@json_option("The same as --format jsonl: one JSON object per row.")
@click.option("--out", default="-", metavar="FILE",
              help="File to write (default: standard output).")
@click.option("--fresh", is_flag=True, help="Catch the table's read model up first.")
@click.pass_obj
@friendly_errors
def export(settings: Settings, name: str, fmt: str | None, as_json: bool, out: str,
           fresh: bool) -> None:
    """Export a read-model table (e.g. manage_registrations) as CSV or JSON Lines.

    Money stays exact (decimal strings); times are instants as every command prints
    them (UTC with Z, or --tz); nested values are JSON. In CSV a cell that begins with =,
    +, -, @, a tab or a carriage return gets a ' in front, so a spreadsheet shows it as
    text instead of running it; JSON Lines are verbatim.

    \b
    Examples:
      ledger export ytd_months --format csv --out ytd.csv
      ledger export review_decisions --json | jq .decided_at
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
    owner = next(m.name for m in READ_MODELS.values() if spec in m.tables)
    view = fresh_projector(settings, owner, fresh).view
    printer = settings.printer
    rows = (printer.json(view.decode_row(spec, row)) for row in view.query(
        f"SELECT * FROM {view.dialect.q('rm_' + key)} ORDER BY "
        + ", ".join(f'"{k}"' for k in spec.keys)))
    with output_file(out) as stream:
        if fmt == "jsonl":
            for row in rows:
                stream.write(dumps(row, zone=printer.zone) + "\n")
        else:
            write_csv(stream, rows, spec.all_columns, zone=printer.zone)
