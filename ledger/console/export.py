"""`ledger export`: a read-model table as CSV or JSON Lines, of one store or every market;
read models and the event log as Parquet files (the `parquet` extra).

A text format is a writer in `WRITERS`: `(stream, rows, columns, zone)`. Rows come from
`table_rows` (one store) or `market_rows` (every market of --config, each row with a
`market` column first): the one place that column is added, whatever the format. Parquet
goes through `ledger.exports` (`_parquet`); the event log is partitioned by market there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import tzinfo
from pathlib import Path
from typing import Any, TextIO

import click

from ledger.console.options import (
    Failure,
    Settings,
    export_dir_option,
    friendly_errors,
    json_option,
)
from ledger.console.printing import Progress, write_csv
from ledger.console.queries import fresh_projector
from ledger.console.streams import output_file
from ledger.exports.extras import ExtraMissing, need
from ledger.projections.registry import READ_MODELS
from ledger.values import dumps

EVENTS, ALL = "events", "all"
COMMIT_EVERY = 100_000  # ledger.exports.eventlog.COMMIT_EVERY (not imported: pyarrow is an extra)
LINE_EVERY = 100_000  # events between progress lines when stderr is not a terminal
DEFAULT_MARKET = "default"  # the event log's market partition for a single store


def _export_tables() -> dict[str, Any]:
    return {t.name: t for model in READ_MODELS.values() for t in model.tables}


def _owner(table: Any) -> str:
    return next(m.name for m in READ_MODELS.values() if table in m.tables)


def _write_jsonl(stream: TextIO, rows: Iterable[dict[str, Any]], _columns: list[str],
                 zone: tzinfo | None) -> None:
    for row in rows:
        stream.write(dumps(row, zone=zone) + "\n")


Writer = Callable[[TextIO, Iterable[dict[str, Any]], list[str], tzinfo | None], None]
WRITERS: dict[str, Writer] = {"csv": write_csv, "jsonl": _write_jsonl}
MARKET = "market"  # the column `--all-markets` puts first


@click.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice([*WRITERS, "parquet"]), default=None,
              help="csv (the default), jsonl (JSON Lines, one object per row), or parquet "
                   "(needs the `parquet` extra).")
@json_option("The same as --format jsonl: one JSON object per row.")
@click.option("--out", "--output", "out", default=None, metavar="FILE|DIR",
              help="csv/jsonl: the file to write (default: standard output). parquet: the "
                   "export folder (default: --export-dir), or a FILE.parquet for one table.")
@export_dir_option()
@click.option("--commit-every", type=click.IntRange(1, None), default=COMMIT_EVERY,
              show_default=True, metavar="N",
              help="events: make what is exported durable every N events (files renamed "
                   "into place, then the state file): a run that dies resumes from there.")
@click.option("--fresh", is_flag=True, help="Catch the read model(s) up first.")
@click.option("--all-markets", is_flag=True,
              help="Every market of --config in one dataset, with a `market` column first "
                   "(every market's store must answer, or nothing is written); parquet: "
                   "each market's events in its own market=CODE partition.")
@click.pass_obj
@friendly_errors
def export(settings: Settings, name: str, fmt: str | None, as_json: bool, out: str | None,
           export_dir: str, commit_every: int, fresh: bool, all_markets: bool) -> None:
    """Export a read-model table as CSV or JSON Lines, or read models and the event log
    as Parquet files for analysts (query them with `ledger sql`).

    NAME: a table (e.g. manage_registrations); with --format parquet also a read model
    (e.g. campaign_performance: one file per table), `events` (the event log) or `all`.

    CSV and JSON Lines: money stays exact (decimal strings); times are instants as every
    command prints them (UTC with Z, or --tz); nested values are JSON. In CSV a cell that
    begins with =, +, -, @, a tab or a carriage return gets a ' in front, so a spreadsheet
    shows it as text instead of running it; JSON Lines are verbatim.

    Parquet: money is decimal(38, 6), times are timestamps in UTC, ids are strings, nested
    values JSON text (lists of ids are lists). Files go to DIR/READ_MODEL/TABLE.parquet and
    DIR/events/market=M/year=Y/campaign=C/part-*.parquet (M: --market, or `default` for a
    single store). The event log is incremental: each run adds what was recorded since the
    last one (the position is kept in _ledger_export.json in the market's folder); a run
    that dies is simply run again.

    \b
    Examples:
      ledger export ytd_months --format csv --out ytd.csv
      ledger export review_decisions --json | jq .decided_at
      ledger --config markets.toml export ytd_months --all-markets --out ytd.csv
      ledger export all --format parquet            # into ./ledger-export
      ledger export events --format parquet --output /data/ledger
      ledger sql "SELECT campaign, sum(gmv) FROM events GROUP BY 1"
    """
    if as_json and fmt not in (None, "jsonl"):
        raise click.UsageError(f"--json is --format jsonl: give one of them, not --format {fmt}")
    fmt = "jsonl" if as_json else fmt or "csv"
    if fmt == "parquet":
        try:
            need("pyarrow", "--format parquet")
            _parquet(settings, name, Path(out or export_dir), fresh, commit_every, all_markets)
        except ExtraMissing as e:
            raise Failure(str(e)) from None
        return
    tables = _export_tables()
    key = name.removeprefix("rm_")
    if key not in tables:
        also = " (events, read models and all: with --format parquet)" if (
            name in (EVENTS, ALL) or name in READ_MODELS) else ""
        raise click.BadParameter(f"unknown table {name!r}{also}; one of: {', '.join(tables)}",
                                 param_hint="NAME")
    spec = tables[key]
    columns = list(spec.all_columns)
    if all_markets:
        rows = market_rows(settings, key, fresh)
        columns = [MARKET, *columns]
    else:
        rows = table_rows(settings, key, fresh)
    with output_file(out or "-") as stream:
        WRITERS[fmt](stream, rows, columns, settings.printer.zone)


def table_rows(settings: Settings, key: str, fresh: bool) -> Iterator[dict[str, Any]]:
    """Table `key`'s rows in key order, as every command prints values."""
    spec = _export_tables()[key]
    view = fresh_projector(settings, _owner(spec), fresh).view
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


def _parquet(settings: Settings, name: str, out: Path, fresh: bool, commit_every: int,
             all_markets: bool) -> None:
    """NAME as Parquet under `out` (a folder; or a .parquet file for one table)."""
    from ledger.exports.eventlog import Diverged
    from ledger.exports.files import Busy

    tables = _export_tables()
    key = name.removeprefix("rm_")
    if name not in (EVENTS, ALL) and name not in READ_MODELS and key not in tables:
        raise click.BadParameter(
            f"unknown export {name!r}; one of: {EVENTS}, {ALL}, a read model "
            f"({', '.join(READ_MODELS)}) or a table ({', '.join(tables)})", param_hint="NAME")
    if out.suffix == ".parquet" and key not in tables:
        raise click.BadParameter(f"a .parquet file holds one table; {name!r} is several: "
                                 "give a folder", param_hint="--output")
    if all_markets and name != EVENTS:
        raise click.UsageError("--all-markets with --format parquet exports `events` (one "
                               "market=CODE partition each); read-model tables of every "
                               "market: --format csv or jsonl, or one --market at a time")
    try:
        if name in (EVENTS, ALL):
            for one in settings.all_markets() if all_markets else [settings]:
                _events(one, out / EVENTS, one.market_code or DEFAULT_MARKET, commit_every)
        models = list(READ_MODELS) if name == ALL else [name] if name in READ_MODELS else []
        for model in models:
            _read_model(settings, model, None, out, fresh)
        if key in tables and name not in READ_MODELS:
            _read_model(settings, _owner(tables[key]), tables[key], out, fresh)
    except (Busy, Diverged) as e:
        raise Failure(str(e)) from None
    except OSError as e:
        raise Failure(f"cannot write {e.filename or out}: {e.strerror or e}") from None


def _read_model(settings: Settings, model: str, table: Any, out: Path, fresh: bool) -> None:
    from ledger.exports.tables import export_read_model

    view = fresh_projector(settings, model, fresh).view
    chosen = [table] if table is not None else list(READ_MODELS[model].tables)

    def target(t: Any) -> Path:
        return out if out.suffix == ".parquet" else out / model / f"{t.name}.parquet"

    for written in export_read_model(view, model, chosen, target):
        click.echo(f"{written.table}: {written.rows:,} rows at position {written.position:,}"
                   f" -> {written.path}", err=True)


def _events(settings: Settings, folder: Path, market: str, commit_every: int) -> None:
    with Progress() as bar:
        next_line = [0]

        def progress(position: int, head: int) -> None:
            """The bar on a terminal; elsewhere (a log) a line every LINE_EVERY events."""
            bar(position, head)
            if not bar.enabled and position >= next_line[0]:
                if next_line[0]:
                    click.echo(f"events: at position {position:,} of {head:,}", err=True)
                next_line[0] = position + LINE_EVERY

        summary = settings.ledger().export_events(folder, market, commit_every=commit_every,
                                                  progress=progress)
    if summary.rows:
        click.echo(f"events: {summary.rows:,} exported (positions {summary.after + 1:,} to "
                   f"{summary.position:,}) into {len(summary.files)} files under "
                   f"{folder}{os.sep}market={market}", err=True)
    else:
        click.echo(f"events: nothing new since position {summary.after:,} "
                   f"({folder}{os.sep}market={market})", err=True)
