"""How every command prints data: one JSON document or JSON Lines, tables, instants in --tz.

The rule (README, "Output for programs"): `--json` on every command that prints data; a
single object is one JSON document, a listing is JSON Lines (one object per line, in
order); every instant is UTC with `Z` unless `--tz ZONE` / `LEDGER_TZ` names a zone.
All of it goes through `values.jsonable`, the one place values become output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from ledger.shapes import table
from ledger.values import dumps, instant_text, jsonable

F = TypeVar("F", bound=Callable[..., Any])

TZ_HELP = ("Print instants in this zone, an IANA name such as Asia/Bangkok (env LEDGER_TZ). "
           "Default: UTC, written with Z.")


def parse_zone(ctx: click.Context, _: click.Parameter, value: str | None) -> tzinfo | None:
    """`--tz`: an IANA zone name (`UTC` included). Anything else is a usage error in one
    line (exit 2), before any command runs."""
    if value is None or value.strip() == "":
        return None
    name = value.strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        click.echo(f"Error: Invalid value for '--tz' / LEDGER_TZ: {name[:60]!r} is not a time "
                   "zone; give an IANA name such as Asia/Bangkok, or UTC", err=True)
        ctx.exit(2)


def json_option(help_text: str) -> Callable[[F], F]:
    """The `--json` flag (as `as_json`), its help saying what the command prints with it."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


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

    def lines(self, rows: Iterable[Any]) -> None:
        """A listing: JSON Lines, one object per line, each printed as soon as it is known."""
        for row in rows:
            click.echo(dumps(row, zone=self.zone))

    def table(self, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
        """For people: a plain text table, its instants as in JSON."""
        click.echo(table(list(rows), columns, self.zone))
