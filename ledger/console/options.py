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

from ledger import markets as market_file
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
    """Global options, resolved lazily so `--help` never touches the store.

    The store is `--db` (a single store, as before markets), or the `--market` of the
    `--config` file (a market's events at its `url`, its read models at its `read_url`)."""

    def __init__(self, db: str, now: datetime | None, db_given: bool = True,
                 zone: tzinfo | None = None, config: str | None = None,
                 market: str | None = None) -> None:
        self.db = db
        self.db_given = db_given  # --db or LEDGER_DATABASE_URL, not the default
        self.now = now
        self.printer = Printer(zone)  # --tz: how every command prints an instant
        self.config = config or None  # --config / LEDGER_CONFIG
        self.market_code = market or None  # --market / LEDGER_MARKET
        self._markets: market_file.Markets | None = None
        self._ledger: Ledger | None = None
        self._tokens: Ledger | None = None
        self._children: list[Settings] = []  # --all-markets: closed with these

    def clock(self) -> Clock:
        return FixedClock(self.now) if self.now is not None else SystemClock()

    def markets(self) -> market_file.Markets:
        """The markets file (`--config`); a ConfigError when there is none, or it is bad."""
        if self._markets is None:
            if self.config is None:
                raise market_file.ConfigError(
                    "no markets file: give --config FILE (or set LEDGER_CONFIG)")
            self._markets = market_file.load(self.config)
        return self._markets

    def market(self) -> market_file.Market | None:
        """The market this command works on; None: the single store of `--db`.

        `--db` alone is a single store even when LEDGER_CONFIG is set; `--market` with
        `--db` is refused, since both would name the store. A file of one market needs no
        `--market`."""
        if self.market_code is not None:
            if self.db_given:
                raise market_file.ConfigError(
                    f"--db and --market {self.market_code} both name a store: give --db "
                    "for a single store, or --market with --config for a market (unset "
                    "LEDGER_DATABASE_URL or LEDGER_MARKET if one comes from the environment)")
            if self.config is None:
                raise market_file.ConfigError(f"--market {self.market_code} needs the markets "
                                          "file: give --config FILE (or set LEDGER_CONFIG)")
            return self.markets().market(self.market_code)
        if self.config is None or self.db_given:
            return None
        known = self.markets()
        if len(known.codes) == 1:
            return known.market(known.codes[0])
        raise market_file.ConfigError(f"{known.path} names {len(known.codes)} markets: choose one "
                                  f"with --market CODE (or LEDGER_MARKET); known: "
                                  f"{', '.join(known.codes)}")

    def serves_markets(self) -> bool:
        """`serve` serves every market of the file: --config without --market or --db."""
        return self.config is not None and self.market_code is None and not self.db_given

    def for_market(self, code: str) -> Settings:
        """These settings, on market `code` of the same file (for `--all-markets`)."""
        other = Settings(self.db, self.now, db_given=False, zone=self.printer.zone,
                         config=self.config, market=code)
        other._markets = self._markets
        return other

    def all_markets(self) -> list[Settings]:
        """Settings for every market of the file, in its order (`--all-markets`)."""
        if self.market_code is not None or self.db_given:
            raise click.UsageError("--all-markets takes every market of --config: give "
                                   "neither --market nor --db with it")
        self._children = [self.for_market(code) for code in self.markets().codes]
        return self._children

    def ledger(self) -> Ledger:
        if self._ledger is None:
            market = self.market()
            if market is None:
                self._ledger = Ledger.open(self.db, clock=self.clock(), pool_size=2)
            else:
                self._ledger = Ledger.open(market.url, read_url=market.read_url,
                                           clock=self.clock(), pool_size=2)
            for notice in self._ledger.notices:
                click.echo(notice, err=True)
        return self._ledger

    def token_ledger(self) -> Ledger:
        """Where the service's tokens are kept: the markets file's `tokens_url` (every
        server of every market reads them there), or the `--db` store."""
        if self.config is None or self.db_given:
            return self.ledger()
        if self._tokens is None:
            self._tokens = Ledger.open(self.markets().token_store(), clock=self.clock(),
                                       pool_size=1)
        return self._tokens

    def projector(self) -> Projector:
        return self.ledger().projector()

    def close(self) -> None:
        for opened in (self._ledger, self._tokens):
            if opened is not None:
                opened.close()
        for child in self._children:
            child.close()


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
        except (StoreUnavailable, market_file.ConfigError) as e:
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
