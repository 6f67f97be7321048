"""What every command shares: the global Settings, the error decorator, common options."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from ledger.clock import Clock, FixedClock, SystemClock, parse_instant
from ledger.console.printing import Printer
from ledger.console.streams import OutputFailed, checked_stdout, discard_stdout
from ledger.errors import LedgerError, StoreUnavailable, first_line
from ledger.ledger import Ledger, store_fault
from ledger.projections.registry import READ_MODELS
from ledger.projections.runner import Projector

F = TypeVar("F", bound=Callable[..., Any])

TZ_HELP = ("Print instants in this zone, an IANA name such as Asia/Bangkok (env LEDGER_TZ). "
           "Default: UTC, written with Z.")


class Settings:
    """Global options, resolved lazily so `--help` never touches the store."""

    def __init__(self, db: str, now: datetime | None, db_given: bool = True,
                 zone: tzinfo | None = None) -> None:
        self.db = db
        self.db_given = db_given  # --db or LEDGER_DATABASE_URL, not the default
        self.now = now
        self.printer = Printer(zone)  # --tz: how every command prints an instant
        self._ledger: Ledger | None = None

    def clock(self) -> Clock:
        return FixedClock(self.now) if self.now is not None else SystemClock()

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.open(self.db, clock=self.clock(), pool_size=2)
            for notice in self._ledger.notices:
                click.echo(notice, err=True)
        return self._ledger

    def projector(self) -> Projector:
        return self.ledger().projector()

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


def friendly_errors(func: F) -> F:
    """Turn our errors into one `Error: ...` line and an exit code, never a traceback.

    Standard output is checked while the command runs (`checked_stdout`): a failed write
    is `cannot write ...`, never mistaken for the store's fault, and exits 2.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with checked_stdout():
                return func(*args, **kwargs)
        except OutputFailed as e:
            discard_stdout()
            _say(f"Error: {e.message()}")
            sys.exit(2)
        except LedgerError as e:
            raise click.ClickException(f"{e.code}: {e.message}") from None
        except StoreUnavailable as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as e:
            fault = store_fault(e)
            if fault is not None:  # a read that met a store fault: say which, exit 2
                click.echo(f"Error: {fault}", err=True)
                sys.exit(2)
            if os.environ.get("LEDGER_DEBUG"):
                raise
            click.echo(f"Error: {type(e).__name__}: {first_line(e)} "
                       "(set LEDGER_DEBUG=1 for the traceback)", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


def _say(message: str) -> None:
    """One line on stderr, if stderr can still take it (it may be gone too)."""
    with contextlib.suppress(OSError):
        click.echo(message, err=True)


def parse_time_option(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    """The click callback for an instant option: DOMAIN.md's rule, or a usage error."""
    if not value:
        return None
    try:
        return parse_instant(value)
    except ValueError as e:
        raise click.BadParameter(f"validation_error: {e}") from None


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


def read_model_names(names: Sequence[str]) -> list[str] | None:
    """The read models a command's NAME arguments choose (None: all of them)."""
    unknown = [n for n in names if n not in READ_MODELS]
    if unknown:
        raise click.BadParameter(f"unknown read model {unknown[0]!r}; one of: "
                                 f"{', '.join(READ_MODELS)}", param_hint="NAME")
    return list(names) or None


class Failure(click.ClickException):
    """A command that cannot do what was asked, said in one line (`Error: ...`), exit 2."""

    exit_code = 2


EXPORT_DIR = "ledger-export"  # where Parquet exports go, and where `ledger sql` reads them


def export_dir_option() -> Callable[[F], F]:
    """`--export-dir`: the folder Parquet exports go to and `ledger sql` reads."""
    return click.option("--export-dir", envvar="LEDGER_EXPORT_DIR", default=EXPORT_DIR,
                        show_default=True, metavar="DIR",
                        help="Folder of the Parquet exports (env LEDGER_EXPORT_DIR).")
