"""How every command prints: JSON documents or Lines, tables, CSV, a progress bar on stderr.

The rule (README, "Output for programs"): `--json` on every command that prints data; a
single object is one JSON document, a listing is JSON Lines (one object per line, in
order); every instant is UTC with `Z` unless `--tz ZONE` / `LEDGER_TZ` names a zone.
All of it goes through `views.jsonable`, the one place values become output.

CSV is for spreadsheets: nested values as JSON, and no cell a spreadsheet would run. A
cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is read by
spreadsheet tools as a formula (`=HYPERLINK(...)` in a seller's `main_category`); it is
written with a single quote in front (the OWASP advice), so it shows as the text it is.
Every cell is treated alike, numbers included: the ledger's numbers (money, counts,
seconds) are never negative, so none of them ever begins with one of these.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, TextIO

import click

from ledger.shapes import table
from ledger.values import dumps, instant_text, jsonable


@dataclass(frozen=True)
class Printer:
    """Prints data on standard output with the instants in `zone` (None: UTC, `Z`)."""

    zone: tzinfo | None = None

    def instant(self, moment: datetime) -> str:
        return instant_text(moment, self.zone)

    def json(self, value: Any) -> Any:
        """`value` with its instants spelled as this printer prints them."""
        return jsonable(value, self.zone)

    def document(self, value: Any) -> None:
        """A single object: one JSON document."""
        click.echo(dumps(value, indent=2, zone=self.zone))

    def lines(self, rows: Iterable[Any], *, together: bool = False) -> None:
        """A listing: JSON Lines, one object per line, each printed as soon as it is known
        (`together`: rows known at once, written and flushed as one)."""
        if together:
            texts = [dumps(row, zone=self.zone) for row in rows]
            if texts:  # one write and one flush (a reader wakes once, not once a line)
                click.echo("\n".join(texts))
            return
        for row in rows:
            click.echo(dumps(row, zone=self.zone))

    def table(self, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
        """For people: a plain text table, its instants as in JSON."""
        click.echo(table(list(rows), columns, self.zone))


# CSV ----------------------------------------------------------------------------------------

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


# Progress ---------------------------------------------------------------------------------

class Progress:
    """Events done, then events/s and ETA once a rate is known: click's progress bar on a
    terminal (stderr), silent otherwise. Called as `progress(position, target)`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.first: tuple[int, float] | None = None  # the first report: position, time
        self.bar: Any = None  # click's bar, made at the first report (when target is known)

    def __call__(self, position: int, target: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        first = self.first = self.first or (position, now)
        label = f"{position:,}/{target:,} events{speed(first, position, target, now)}"
        if self.bar is None:
            self.bar = click.progressbar(length=max(target, 1), file=self.stream, width=30,
                                         show_eta=False, show_percent=False,
                                         update_min_steps=0, item_show_func=lambda text: text)
        self.bar.length = max(target, 1)  # the head may move while we work
        self.bar.update(max(0, position - self.bar.pos), label)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        # Also when the work failed: click hid the cursor, and shows it again here.
        if self.enabled and self.bar is not None:
            self.bar.render_finish()


def speed(first: tuple[int, float], position: int, target: int, now: float) -> str:
    """The rate since the first report, and the time left at it; nothing until then (a
    rate over no time, or over no events, is no rate)."""
    done, elapsed = position - first[0], now - first[1]
    if done <= 0 or elapsed <= 0:
        return ""
    rate = done / elapsed
    return f"  {rate:,.0f}/s  ETA {(target - position) / rate:,.0f}s"
